// SPDX-License-Identifier: MIT
// RsaKey: an RSA user key held by OpenSSL, so that it can sign with SHA-2
// (rsa-sha2-512, rsa-sha2-256: RFC 8332), which libssh2 1.10 cannot.
#pragma once

#include "internal.h"

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

struct evp_pkey_st;

namespace pytun::detail {

class RsaKey {
public:
    RsaKey();
    ~RsaKey();
    RsaKey(RsaKey &&) noexcept;
    RsaKey &operator=(RsaKey &&) noexcept;

    /// Reads an unencrypted OpenSSH-format key, or a PEM / PKCS#8 key
    /// (encrypted ones with `passphrase`). Errors: key_file_unreadable,
    /// key_encrypted (no or a wrong passphrase), key_unsupported (not RSA, or
    /// an encrypted OpenSSH-format file, whose bcrypt KDF OpenSSL lacks);
    /// `message` names the file.
    std::error_code load(const std::string &path, const std::string &passphrase, std::string &message);
    bool loaded() const { return key_ != nullptr; }
    int bits() const;

    /// The public key as the server sees it: string(algorithm), mpint e,
    /// mpint n. OpenSSH >= 7.2 reads a blob named "rsa-sha2-512" as RSA.
    std::vector<unsigned char> public_blob(std::string_view algorithm) const;

    /// The PKCS#1 v1.5 signature of `data` with the hash `algorithm` names
    /// (rsa-sha2-512: SHA-512, rsa-sha2-256: SHA-256, ssh-rsa: SHA-1).
    /// False for another algorithm or when OpenSSL fails.
    bool sign(std::string_view algorithm, std::span<const unsigned char> data, std::vector<unsigned char> &out) const;

private:
    struct Free {
        void operator()(evp_pkey_st *key) const;
    };
    std::unique_ptr<evp_pkey_st, Free> key_;
};

} // namespace pytun::detail
