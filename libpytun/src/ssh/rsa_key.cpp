// SPDX-License-Identifier: MIT
// RSA user keys: OpenSSH-format and PEM files read into OpenSSL 3, public
// blobs named by the signature algorithm, PKCS#1 v1.5 signatures.
#include "ssh/rsa_key.h"

#include <cstring>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <pytun/error.h>

#include "ssh/key_file.h"
#include "ssh/wire.h"

namespace pytun::detail {
namespace {

struct BnFree {
    void operator()(BIGNUM *bn) const { BN_clear_free(bn); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;

// The key file's text and the decoded private section hold the private key:
// wipe them before their memory goes back to the allocator.
struct Wiped {
    std::string text;
    ~Wiped() { OPENSSL_cleanse(text.data(), text.size()); }
};

Bn bn_from(std::span<const unsigned char> bytes)
{
    return Bn(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
}

const EVP_MD *digest_for(std::string_view algorithm)
{
    if (algorithm == "rsa-sha2-512")
        return EVP_sha512();
    if (algorithm == "rsa-sha2-256")
        return EVP_sha256();
    if (algorithm == "ssh-rsa")
        return EVP_sha1();
    return nullptr;
}

// The private section of an unencrypted openssh-key-v1 file: two equal check
// words, then "ssh-rsa" n e d iqmp p q, a comment and padding. The file lacks
// the CRT exponents d mod (p-1) and d mod (q-1) that OpenSSL wants: computed.
EVP_PKEY *rsa_from_openssh(std::span<const unsigned char> section)
{
    WireReader in(section);
    std::uint32_t check1 = 0, check2 = 0;
    std::string type;
    std::span<const unsigned char> n, e, d, iqmp, p, q;
    if (!in.u32(check1) || !in.u32(check2) || check1 != check2 || !in.string(type) || type != "ssh-rsa" ||
        !in.string(n) || !in.string(e) || !in.string(d) || !in.string(iqmp) || !in.string(p) || !in.string(q))
        return nullptr;
    Bn bn_n = bn_from(n), bn_e = bn_from(e), bn_d = bn_from(d), bn_iqmp = bn_from(iqmp), bn_p = bn_from(p),
       bn_q = bn_from(q), dmp1(BN_secure_new()), dmq1(BN_secure_new()), p1(BN_secure_new()), q1(BN_secure_new());
    std::unique_ptr<BN_CTX, decltype(&BN_CTX_free)> bn_ctx(BN_CTX_secure_new(), &BN_CTX_free);
    if (!bn_n || !bn_e || !bn_d || !bn_iqmp || !bn_p || !bn_q || !dmp1 || !dmq1 || !p1 || !q1 || !bn_ctx ||
        !BN_sub(p1.get(), bn_p.get(), BN_value_one()) || !BN_sub(q1.get(), bn_q.get(), BN_value_one()) ||
        !BN_mod(dmp1.get(), bn_d.get(), p1.get(), bn_ctx.get()) ||
        !BN_mod(dmq1.get(), bn_d.get(), q1.get(), bn_ctx.get()))
        return nullptr;

    std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> build(OSSL_PARAM_BLD_new(), &OSSL_PARAM_BLD_free);
    if (!build || !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_D, bn_d.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_FACTOR1, bn_p.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_FACTOR2, bn_q.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1, dmp1.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2, dmq1.get()) ||
        !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1, bn_iqmp.get()))
        return nullptr;
    std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(build.get()),
                                                                   &OSSL_PARAM_free);
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
        EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr), &EVP_PKEY_CTX_free);
    EVP_PKEY *key = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
        EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_KEYPAIR, params.get()) <= 0)
        return nullptr;
    return key;
}

int pem_passphrase(char *buffer, int size, int, void *user)
{
    const auto *passphrase = static_cast<const std::string *>(user);
    if (passphrase->empty() || passphrase->size() > static_cast<std::size_t>(size))
        return -1; // never prompt on a terminal
    std::memcpy(buffer, passphrase->data(), passphrase->size());
    return static_cast<int>(passphrase->size());
}

} // namespace

void RsaKey::Free::operator()(evp_pkey_st *key) const
{
    EVP_PKEY_free(key);
}

RsaKey::RsaKey() = default;
RsaKey::~RsaKey() = default;
RsaKey::RsaKey(RsaKey &&) noexcept = default;
RsaKey &RsaKey::operator=(RsaKey &&) noexcept = default;

std::error_code RsaKey::load(const std::string &path, const std::string &passphrase, std::string &message)
{
    key_.reset();
    Wiped file;
    if (auto ec = read_key_text(path, file.text, message))
        return ec;
    if (file.text.find("-----BEGIN OPENSSH PRIVATE KEY-----") != std::string::npos) {
        OpensshKeyFile openssh;
        if (!parse_openssh_key(file.text, openssh)) {
            message = "private key file " + path + " looks like an OpenSSH key but cannot be parsed";
            return Errc::key_unsupported;
        }
        if (openssh.cipher != "none") {
            OPENSSL_cleanse(openssh.private_section.data(), openssh.private_section.size());
            message = "the RSA key " + path + " is encrypted in OpenSSH format, which pytun cannot decrypt "
                      "(OpenSSL lacks its bcrypt KDF)";
            return Errc::key_unsupported;
        }
        key_.reset(rsa_from_openssh(openssh.private_section));
        OPENSSL_cleanse(openssh.private_section.data(), openssh.private_section.size());
        if (!key_) {
            message = "private key file " + path + " is not an RSA key pytun can read";
            return Errc::key_unsupported;
        }
        return {};
    }
    const bool encrypted = file.text.find("Proc-Type: 4,ENCRYPTED") != std::string::npos ||
                           file.text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos;
    if (encrypted && passphrase.empty()) {
        message = "the private key " + path + " is encrypted and no passphrase was given";
        return Errc::key_encrypted;
    }
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(file.text.data(), static_cast<int>(file.text.size())),
                                                  &BIO_free);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, &pem_passphrase,
                                                  const_cast<std::string *>(&passphrase))
                        : nullptr;
    if (!key) {
        message = encrypted ? "cannot decrypt the private key " + path + ": the passphrase is wrong"
                            : "private key file " + path + " is not a PEM key OpenSSL can read";
        return encrypted ? Errc::key_encrypted : Errc::key_unsupported;
    }
    key_.reset(key);
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        key_.reset();
        message = "private key file " + path + " is not an RSA key";
        return Errc::key_unsupported;
    }
    return {};
}

int RsaKey::bits() const
{
    return key_ ? EVP_PKEY_get_bits(key_.get()) : 0;
}

std::vector<unsigned char> RsaKey::public_blob(std::string_view algorithm) const
{
    std::vector<unsigned char> blob;
    BIGNUM *n = nullptr, *e = nullptr;
    if (key_ && EVP_PKEY_get_bn_param(key_.get(), OSSL_PKEY_PARAM_RSA_N, &n) &&
        EVP_PKEY_get_bn_param(key_.get(), OSSL_PKEY_PARAM_RSA_E, &e)) {
        auto bytes = [](const BIGNUM *bn) {
            std::vector<unsigned char> out(static_cast<std::size_t>(BN_num_bytes(bn)));
            BN_bn2bin(bn, out.data());
            return out;
        };
        wire_put_string(blob, algorithm);
        wire_put_mpint(blob, bytes(e));
        wire_put_mpint(blob, bytes(n));
    }
    BN_free(n);
    BN_free(e);
    return blob;
}

bool RsaKey::sign(std::string_view algorithm, std::span<const unsigned char> data,
                  std::vector<unsigned char> &out) const
{
    const EVP_MD *md = digest_for(algorithm);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    std::size_t length = 0;
    // PKCS#1 v1.5 is OpenSSL's default padding for RSA signatures.
    if (!key_ || !md || !ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key_.get()) <= 0 ||
        EVP_DigestSign(ctx.get(), nullptr, &length, data.data(), data.size()) <= 0)
        return false;
    out.resize(length);
    if (EVP_DigestSign(ctx.get(), out.data(), &length, data.data(), data.size()) <= 0)
        return false;
    out.resize(length);
    return true;
}

} // namespace pytun::detail
