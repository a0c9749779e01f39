// SPDX-License-Identifier: MIT
// AES-CTR for libssh2 1.10, keystream made in batches (see batched_ctr.h).
#include "ssh/batched_ctr.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <new>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

namespace pytun::detail {

namespace {

constexpr const char *kProviderName = "pytun-batched-ctr";
// The property our implementations carry, and the preference that makes a
// plain fetch (libssh2's EVP_CipherInit with EVP_aes_128_ctr()) choose them.
constexpr const char *kProperty = "pytun.batched=yes";
constexpr const char *kPreference = "?pytun.batched=yes";

// 64 AES blocks: large enough that making keystream costs a fraction of a
// nanosecond per block (4 KiB measured no faster), small enough to stay in
// L1 (two per session).
constexpr std::size_t kKeystreamBytes = 1024;
// CTR keystream = the encryption of zeros.
constexpr unsigned char kZeros[kKeystreamBytes] = {};
constexpr std::size_t kIvBytes = 16;

/// One AES-CTR context: the default provider's AES-CTR run over a zero buffer
/// gives the keystream, which cipher() then XORs with the data.
struct BatchedCtr {
    EVP_CIPHER *aes = nullptr;      // the default provider's AES-n-CTR (owned reference)
    EVP_CIPHER_CTX *keystream_ctx = nullptr;
    std::size_t key_bytes = 0;
    std::size_t used = kKeystreamBytes;  // bytes of `keystream` consumed; all = empty
    bool cipher_set = false;             // keystream_ctx has its cipher
    bool keyed = false;                  // ... and a key
    unsigned char keystream[kKeystreamBytes];

    ~BatchedCtr()
    {
        OPENSSL_cleanse(keystream, sizeof keystream);
        EVP_CIPHER_CTX_free(keystream_ctx);
        EVP_CIPHER_free(aes);
    }

    bool refill()
    {
        int out = 0;
        if (EVP_EncryptUpdate(keystream_ctx, keystream, &out, kZeros, static_cast<int>(sizeof keystream)) != 1 ||
            out != static_cast<int>(sizeof keystream))
            return false;
        used = 0;
        return true;
    }
};

template <std::size_t KeyBits>
const char *default_name()
{
    if constexpr (KeyBits == 128)
        return "AES-128-CTR";
    else if constexpr (KeyBits == 192)
        return "AES-192-CTR";
    else
        return "AES-256-CTR";
}

template <std::size_t KeyBits>
void *new_ctx(void *)
{
    auto *ctx = new (std::nothrow) BatchedCtr;
    if (ctx == nullptr)
        return nullptr;
    ctx->key_bytes = KeyBits / 8;
    // "provider=default": the implementation underneath must never be this one.
    ctx->aes = EVP_CIPHER_fetch(nullptr, default_name<KeyBits>(), "provider=default");
    ctx->keystream_ctx = EVP_CIPHER_CTX_new();
    if (ctx->aes == nullptr || ctx->keystream_ctx == nullptr) {
        delete ctx;
        return nullptr;
    }
    return ctx;
}

void free_ctx(void *vctx) { delete static_cast<BatchedCtr *>(vctx); }

void *dup_ctx(void *vctx)
{
    auto *from = static_cast<BatchedCtr *>(vctx);
    auto *to = new (std::nothrow) BatchedCtr;
    if (to == nullptr)
        return nullptr;
    to->key_bytes = from->key_bytes;
    to->used = from->used;
    to->cipher_set = from->cipher_set;
    to->keyed = from->keyed;
    std::memcpy(to->keystream, from->keystream, sizeof to->keystream);
    to->keystream_ctx = EVP_CIPHER_CTX_new();
    if (to->keystream_ctx == nullptr || EVP_CIPHER_up_ref(from->aes) != 1) {
        delete to;
        return nullptr;
    }
    to->aes = from->aes; // from here the destructor releases the reference
    if (EVP_CIPHER_CTX_copy(to->keystream_ctx, from->keystream_ctx) != 1) {
        delete to;
        return nullptr;
    }
    return to;
}

// CTR is the same operation both ways.
int init(void *vctx, const unsigned char *key, size_t keylen, const unsigned char *iv, size_t ivlen,
         const OSSL_PARAM[])
{
    auto *ctx = static_cast<BatchedCtr *>(vctx);
    if ((key != nullptr && keylen != ctx->key_bytes) || (iv != nullptr && ivlen != kIvBytes))
        return 0;
    if (key == nullptr && iv == nullptr)
        return 1;
    // Keystream made for the old key or counter is void.
    ctx->used = kKeystreamBytes;
    if (EVP_EncryptInit_ex2(ctx->keystream_ctx, ctx->cipher_set ? nullptr : ctx->aes, key, iv, nullptr) != 1)
        return 0;
    ctx->cipher_set = true;
    ctx->keyed = ctx->keyed || key != nullptr;
    return 1;
}

/// out = in ^ keystream, 8 bytes at a time: libssh2 passes 16-byte blocks
/// and may pass out == in, which keeps a byte loop from being vectorised.
void xor_bytes(unsigned char *out, const unsigned char *in, const unsigned char *keystream, std::size_t n)
{
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t a, b;
        std::memcpy(&a, in + i, 8);
        std::memcpy(&b, keystream + i, 8);
        a ^= b;
        std::memcpy(out + i, &a, 8);
    }
    for (; i < n; ++i)
        out[i] = static_cast<unsigned char>(in[i] ^ keystream[i]);
}

int cipher(void *vctx, unsigned char *out, size_t *outl, size_t outsize, const unsigned char *in, size_t inl)
{
    auto *ctx = static_cast<BatchedCtr *>(vctx);
    if (!ctx->keyed || outsize < inl)
        return 0;
    for (std::size_t done = 0; done < inl;) {
        if (ctx->used == kKeystreamBytes && !ctx->refill())
            return 0;
        std::size_t n = std::min(inl - done, kKeystreamBytes - ctx->used);
        xor_bytes(out + done, in + done, ctx->keystream + ctx->used, n);
        ctx->used += n;
        done += n;
    }
    if (outl != nullptr)
        *outl = inl;
    return 1;
}

int final(void *, unsigned char *, size_t *outl, size_t)
{
    *outl = 0;
    return 1;
}

template <std::size_t KeyBits>
int get_params(OSSL_PARAM params[])
{
    OSSL_PARAM *p;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_MODE)) && !OSSL_PARAM_set_uint(p, EVP_CIPH_CTR_MODE))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) && !OSSL_PARAM_set_size_t(p, KeyBits / 8))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) && !OSSL_PARAM_set_size_t(p, kIvBytes))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_BLOCK_SIZE)) && !OSSL_PARAM_set_size_t(p, 1))
        return 0;
    for (const char *flag : {OSSL_CIPHER_PARAM_AEAD, OSSL_CIPHER_PARAM_CUSTOM_IV, OSSL_CIPHER_PARAM_CTS,
                             OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, OSSL_CIPHER_PARAM_HAS_RAND_KEY})
        if ((p = OSSL_PARAM_locate(params, flag)) && !OSSL_PARAM_set_int(p, 0))
            return 0;
    return 1;
}

int get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    auto *ctx = static_cast<BatchedCtr *>(vctx);
    OSSL_PARAM *p;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) && !OSSL_PARAM_set_size_t(p, ctx->key_bytes))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) && !OSSL_PARAM_set_size_t(p, kIvBytes))
        return 0;
    // The running counter is ahead of what was consumed, by the unused
    // keystream: asking for it is refused rather than answered wrongly.
    if (OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_UPDATED_IV) || OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IV) ||
        OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_NUM))
        return 0;
    return 1;
}

int set_ctx_params(void *, const OSSL_PARAM params[])
{
    // Nothing is settable; an attempt to set something is an error.
    return params == nullptr || params[0].key == nullptr ? 1 : 0;
}

const OSSL_PARAM *gettable_params(void *)
{
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, nullptr),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_AEAD, nullptr),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_CUSTOM_IV, nullptr),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_CTS, nullptr),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, nullptr),
        OSSL_PARAM_int(OSSL_CIPHER_PARAM_HAS_RAND_KEY, nullptr),
        OSSL_PARAM_END,
    };
    return table;
}

const OSSL_PARAM *gettable_ctx_params(void *, void *)
{
    static const OSSL_PARAM table[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, nullptr),
        OSSL_PARAM_END,
    };
    return table;
}

const OSSL_PARAM *settable_ctx_params(void *, void *)
{
    static const OSSL_PARAM table[] = {OSSL_PARAM_END};
    return table;
}

using Fn = void (*)();
template <typename F>
Fn fn(F f)
{
    return reinterpret_cast<Fn>(f);
}

template <std::size_t KeyBits>
const OSSL_DISPATCH *cipher_functions()
{
    static const OSSL_DISPATCH table[] = {
        {OSSL_FUNC_CIPHER_NEWCTX, fn(&new_ctx<KeyBits>)},
        {OSSL_FUNC_CIPHER_FREECTX, fn(&free_ctx)},
        {OSSL_FUNC_CIPHER_DUPCTX, fn(&dup_ctx)},
        {OSSL_FUNC_CIPHER_ENCRYPT_INIT, fn(&init)},
        {OSSL_FUNC_CIPHER_DECRYPT_INIT, fn(&init)},
        {OSSL_FUNC_CIPHER_UPDATE, fn(&cipher)},
        {OSSL_FUNC_CIPHER_FINAL, fn(&final)},
        {OSSL_FUNC_CIPHER_CIPHER, fn(&cipher)},
        {OSSL_FUNC_CIPHER_GET_PARAMS, fn(&get_params<KeyBits>)},
        {OSSL_FUNC_CIPHER_GET_CTX_PARAMS, fn(&get_ctx_params)},
        {OSSL_FUNC_CIPHER_SET_CTX_PARAMS, fn(&set_ctx_params)},
        {OSSL_FUNC_CIPHER_GETTABLE_PARAMS, fn(&gettable_params)},
        {OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS, fn(&gettable_ctx_params)},
        {OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS, fn(&settable_ctx_params)},
        {0, nullptr},
    };
    return table;
}

const OSSL_ALGORITHM *query_operation(void *, int operation_id, int *no_cache)
{
    *no_cache = 0;
    static const OSSL_ALGORITHM ciphers[] = {
        {"AES-128-CTR", kProperty, cipher_functions<128>(), "AES-128-CTR, batched keystream"},
        {"AES-192-CTR", kProperty, cipher_functions<192>(), "AES-192-CTR, batched keystream"},
        {"AES-256-CTR", kProperty, cipher_functions<256>(), "AES-256-CTR, batched keystream"},
        {nullptr, nullptr, nullptr, nullptr},
    };
    return operation_id == OSSL_OP_CIPHER ? ciphers : nullptr;
}

int provider_init(const OSSL_CORE_HANDLE *, const OSSL_DISPATCH *, const OSSL_DISPATCH **out, void **provctx)
{
    static const OSSL_DISPATCH provider_functions[] = {
        {OSSL_FUNC_PROVIDER_QUERY_OPERATION, fn(&query_operation)},
        {0, nullptr},
    };
    *out = provider_functions;
    *provctx = nullptr;
    return 1;
}

/// A plain fetch (what libssh2 does) gets the batched implementation, and it
/// agrees with the default provider's AES-CTR when fed 16 bytes at a time,
/// as libssh2 feeds it, across several keystream batches.
bool plain_fetch_uses_batched_ctr()
{
    EVP_CIPHER *plain = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", "");
    EVP_CIPHER *reference = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", "provider=default");
    EVP_CIPHER_CTX *a = EVP_CIPHER_CTX_new();
    EVP_CIPHER_CTX *b = EVP_CIPHER_CTX_new();
    bool ok = plain != nullptr && reference != nullptr && a != nullptr && b != nullptr &&
              std::strcmp(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(plain)), kProviderName) == 0;
    if (ok) {
        unsigned char key[16], iv[16], data[3 * kKeystreamBytes + 48], expected[sizeof data];
        for (std::size_t i = 0; i < sizeof data; ++i)
            data[i] = static_cast<unsigned char>(i * 7 + 1);
        std::memcpy(key, data, sizeof key);
        std::memset(iv, 0xff, sizeof iv);  // the counter wraps at once
        int n = 0;
        ok = EVP_EncryptInit_ex2(a, plain, key, iv, nullptr) == 1 && EVP_EncryptInit_ex2(b, reference, key, iv, nullptr) == 1 &&
             EVP_EncryptUpdate(b, expected, &n, data, static_cast<int>(sizeof data)) == 1;
        for (std::size_t off = 0; ok && off < sizeof data; off += 16)
            ok = EVP_Cipher(a, data + off, data + off, 16) != -1;
        ok = ok && std::memcmp(data, expected, sizeof data) == 0;
    }
    EVP_CIPHER_CTX_free(a);
    EVP_CIPHER_CTX_free(b);
    EVP_CIPHER_free(plain);
    EVP_CIPHER_free(reference);
    return ok;
}

} // namespace

BatchedCtrStatus install_batched_aes_ctr()
{
    if (EVP_default_properties_is_fips_enabled(nullptr))
        return BatchedCtrStatus::fips_mode;
    // The keystream comes from the default provider; without it, stay out.
    EVP_CIPHER *base = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", "provider=default");
    if (base == nullptr)
        return BatchedCtrStatus::no_default_provider;
    EVP_CIPHER_free(base);
    // retain_fallbacks=1: loading a provider must not stop OpenSSL from
    // loading the default provider implicitly, as it does when none is loaded.
    // Loaded for the life of the process, like libssh2_init (sessions may be
    // freed by threads that outlive static destruction); held here so that
    // leak checkers see it is still in use.
    static OSSL_PROVIDER *loaded = nullptr;
    if (OSSL_PROVIDER_add_builtin(nullptr, kProviderName, &provider_init) != 1 ||
        (loaded = OSSL_PROVIDER_try_load(nullptr, kProviderName, 1)) == nullptr)
        return BatchedCtrStatus::failed;
    if (EVP_set_default_properties(nullptr, kPreference) != 1)
        return BatchedCtrStatus::failed;
    if (!plain_fetch_uses_batched_ctr()) {
        EVP_set_default_properties(nullptr, "");  // back to what libssh2 had
        return BatchedCtrStatus::failed;
    }
    return BatchedCtrStatus::installed;
}

} // namespace pytun::detail
