// SPDX-License-Identifier: MIT
// The batched AES-CTR provider (ssh/batched_ctr.h) against OpenSSL's default
// provider: same bytes for every key size, call size, counter wrap, IV or key
// change and context copy; and libssh2's way of asking (EVP_CipherInit with
// EVP_aes_128_ctr()) really lands on it once the program turns it on, as the
// pytun command does.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/provider.h>

#include <pytun/crypto.h>

#include "ssh/batched_ctr.h"
#include "ssh/libssh2_global.h"

namespace {

using Bytes = std::vector<unsigned char>;

Bytes random_bytes(std::mt19937 &rng, std::size_t n)
{
    Bytes b(n);
    for (auto &c : b)
        c = static_cast<unsigned char>(rng());
    return b;
}

const char *provider_of(const EVP_CIPHER_CTX *ctx)
{
    return OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(EVP_CIPHER_CTX_get0_cipher(ctx)));
}

/// The default provider's AES-CTR over `data` in one call.
Bytes reference(const char *name, const Bytes &key, const Bytes &iv, const Bytes &data)
{
    EVP_CIPHER *aes = EVP_CIPHER_fetch(nullptr, name, "provider=default");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    REQUIRE(EVP_EncryptInit_ex2(ctx, aes, key.data(), iv.data(), nullptr) == 1);
    Bytes out(data.size());
    int n = 0;
    REQUIRE(EVP_EncryptUpdate(ctx, out.data(), &n, data.data(), static_cast<int>(data.size())) == 1);
    CHECK(n == static_cast<int>(data.size()));
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(aes);
    return out;
}

/// `data` through `ctx` in pieces of the sizes `rng` picks (1..max), in place
/// with EVP_Cipher as libssh2 does, or through EVP_CipherUpdate.
void run_in_pieces(EVP_CIPHER_CTX *ctx, Bytes &data, std::mt19937 &rng, std::size_t max, bool like_libssh2)
{
    for (std::size_t off = 0; off < data.size();) {
        std::size_t n = std::min(data.size() - off, like_libssh2 ? 16 : 1 + rng() % max);
        if (like_libssh2) {
            REQUIRE(EVP_Cipher(ctx, data.data() + off, data.data() + off, static_cast<unsigned>(n)) != -1);
        } else {
            int out = 0;
            Bytes piece(data.begin() + static_cast<long>(off), data.begin() + static_cast<long>(off + n));
            REQUIRE(EVP_CipherUpdate(ctx, data.data() + off, &out, piece.data(), static_cast<int>(n)) == 1);
            REQUIRE(out == static_cast<int>(n));
        }
        off += n;
    }
}

} // namespace

TEST_CASE("libssh2's AES-CTR lands on the batched provider, which agrees with OpenSSL's")
{
    pytun::set_aes_ctr_batching(true);
    pytun::detail::ensure_libssh2_initialised();
    REQUIRE(pytun::aes_ctr_implementation() == "batched keystream");

    std::mt19937 rng(20261122);
    struct Size {
        const char *name;
        const EVP_CIPHER *(*legacy)();
        std::size_t key_bytes;
    };
    for (Size size : {Size{"AES-128-CTR", EVP_aes_128_ctr, 16}, Size{"AES-192-CTR", EVP_aes_192_ctr, 24},
                      Size{"AES-256-CTR", EVP_aes_256_ctr, 32}}) {
        CAPTURE(size.name);
        for (int round = 0; round < 8; ++round) {
            CAPTURE(round);
            Bytes key = random_bytes(rng, size.key_bytes);
            Bytes iv = random_bytes(rng, 16);
            if (round % 2 == 0)
                std::memset(iv.data() + 8, 0xff, 8);  // the 64-bit counter half wraps early on
            Bytes plain = random_bytes(rng, 10000 + rng() % 5000);
            Bytes expected = reference(size.name, key, iv, plain);

            // libssh2: EVP_CipherInit with the legacy object, then 16 bytes a call.
            EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new();
            REQUIRE(EVP_CipherInit(enc, size.legacy(), key.data(), iv.data(), 1) == 1);
            CHECK(std::string(provider_of(enc)) == "pytun-batched-ctr");
            Bytes data = plain;
            run_in_pieces(enc, data, rng, 16, round % 2 == 0);
            CHECK(data == expected);

            // Decrypting gives the plaintext back, in other piece sizes.
            EVP_CIPHER_CTX *dec = EVP_CIPHER_CTX_new();
            REQUIRE(EVP_CipherInit(dec, size.legacy(), key.data(), iv.data(), 0) == 1);
            run_in_pieces(dec, data, rng, 3000, false);
            CHECK(data == plain);

            // A new IV with the key kept, then a new key: each starts afresh.
            Bytes iv2 = random_bytes(rng, 16);
            REQUIRE(EVP_CipherInit_ex2(enc, nullptr, nullptr, iv2.data(), 1, nullptr) == 1);
            data = plain;
            run_in_pieces(enc, data, rng, 700, false);
            CHECK(data == reference(size.name, key, iv2, plain));
            Bytes key3 = random_bytes(rng, size.key_bytes);
            REQUIRE(EVP_CipherInit_ex2(enc, nullptr, key3.data(), iv2.data(), 1, nullptr) == 1);
            data = plain;
            run_in_pieces(enc, data, rng, 16, true);
            CHECK(data == reference(size.name, key3, iv2, plain));

            // A copy taken mid-stream continues exactly like the original.
            REQUIRE(EVP_CipherInit_ex2(enc, nullptr, key.data(), iv.data(), 1, nullptr) == 1);
            Bytes head(plain.begin(), plain.begin() + 1000), tail_a(plain.begin() + 1000, plain.end());
            run_in_pieces(enc, head, rng, 37, false);
            EVP_CIPHER_CTX *copy = EVP_CIPHER_CTX_new();
            REQUIRE(EVP_CIPHER_CTX_copy(copy, enc) == 1);
            Bytes tail_b = tail_a;
            run_in_pieces(enc, tail_a, rng, 500, false);
            run_in_pieces(copy, tail_b, rng, 16, true);
            CHECK(tail_a == tail_b);
            CHECK(std::equal(tail_a.begin(), tail_a.end(), expected.begin() + 1000));

            // The running counter is not reported (it is ahead of the data).
            unsigned char updated_iv[16];
            CHECK(EVP_CIPHER_CTX_get_updated_iv(enc, updated_iv, sizeof updated_iv) == 0);
            CHECK(EVP_CIPHER_CTX_get_key_length(enc) == static_cast<int>(size.key_bytes));
            CHECK(EVP_CIPHER_CTX_get_iv_length(enc) == 16);

            EVP_CIPHER_CTX_free(copy);
            EVP_CIPHER_CTX_free(dec);
            EVP_CIPHER_CTX_free(enc);
        }
    }
}

TEST_CASE("a wrong key length is refused")
{
    pytun::detail::ensure_libssh2_initialised();
    EVP_CIPHER *aes = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", "");
    REQUIRE(aes != nullptr);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char key[32] = {}, iv[16] = {};
    OSSL_PARAM params[] = {OSSL_PARAM_END};
    CHECK(EVP_EncryptInit_ex2(ctx, aes, key, iv, params) == 1);
    CHECK(EVP_CIPHER_CTX_set_key_length(ctx, 32) == 0);
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(aes);
}
