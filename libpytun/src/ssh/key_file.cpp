// SPDX-License-Identifier: MIT
// Private key inspection: format, encryption and key type from the file itself.
#include "ssh/key_file.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <pytun/error.h>

#include "util/base64.h"

namespace pytun::detail {
namespace {

// Reads one SSH wire-format string (uint32 length + bytes).
bool read_ssh_string(const std::vector<unsigned char> &buf, std::size_t &pos, std::string &out)
{
    if (pos + 4 > buf.size())
        return false;
    std::uint32_t len = (std::uint32_t(buf[pos]) << 24) | (std::uint32_t(buf[pos + 1]) << 16) |
                        (std::uint32_t(buf[pos + 2]) << 8) | std::uint32_t(buf[pos + 3]);
    pos += 4;
    if (len > buf.size() - pos)
        return false;
    out.assign(reinterpret_cast<const char *>(buf.data() + pos), len);
    pos += len;
    return true;
}

std::string between(const std::string &text, const std::string &begin, const std::string &end)
{
    auto b = text.find(begin);
    if (b == std::string::npos)
        return {};
    b = text.find('\n', b);
    auto e = text.find(end, b);
    if (b == std::string::npos || e == std::string::npos)
        return {};
    return text.substr(b + 1, e - b - 1);
}

bool inspect_openssh(const std::string &text, KeyFileInfo &info)
{
    auto blob = base64_decode(between(text, "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"));
    static const char magic[] = "openssh-key-v1";
    if (blob.size() < sizeof(magic) || std::memcmp(blob.data(), magic, sizeof(magic)) != 0)
        return false;
    std::size_t pos = sizeof(magic); // includes the terminating NUL
    std::string cipher, kdf, kdf_options, public_key;
    if (!read_ssh_string(blob, pos, cipher) || !read_ssh_string(blob, pos, kdf) ||
        !read_ssh_string(blob, pos, kdf_options) || pos + 4 > blob.size())
        return false;
    pos += 4; // number of keys
    if (!read_ssh_string(blob, pos, public_key))
        return false;
    std::vector<unsigned char> pub(public_key.begin(), public_key.end());
    std::size_t ppos = 0;
    std::string type;
    if (!read_ssh_string(pub, ppos, type))
        return false;
    info.format = KeyFileInfo::Format::openssh;
    info.encrypted = cipher != "none";
    info.key_type = type;
    return true;
}

std::string pkcs8_key_type(const std::string &text)
{
    BIO *bio = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
    if (!bio)
        return {};
    // An empty passphrase callback result makes encrypted keys fail instead of prompting.
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, nullptr, [](char *, int, int, void *) { return 0; }, nullptr);
    BIO_free(bio);
    if (!key)
        return {};
    std::string type;
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA: type = "ssh-rsa"; break;
    case EVP_PKEY_ED25519: type = "ssh-ed25519"; break;
    case EVP_PKEY_EC: type = "ecdsa"; break;
    default: break;
    }
    EVP_PKEY_free(key);
    return type;
}

} // namespace

std::error_code inspect_key_file(const std::string &path, KeyFileInfo &info, std::string &message)
{
    info = {};
    if (path.empty()) {
        message = "no private key configured (keyfile)";
        return Errc::key_file_unreadable;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        message = "cannot read private key file " + path + ": " + std::strerror(errno) +
                  " (check keyfile and the file's permissions)";
        return Errc::key_file_unreadable;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();

    if (text.find("-----BEGIN OPENSSH PRIVATE KEY-----") != std::string::npos) {
        if (inspect_openssh(text, info))
            return {};
        message = "private key file " + path + " looks like an OpenSSH key but cannot be parsed";
        return Errc::key_unsupported;
    }
    if (text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos) {
        info.format = KeyFileInfo::Format::pkcs8;
        info.encrypted = true;
        return {};
    }
    if (text.find("-----BEGIN PRIVATE KEY-----") != std::string::npos) {
        info.format = KeyFileInfo::Format::pkcs8;
        info.key_type = pkcs8_key_type(text);
        return {};
    }
    struct PemType { const char *marker; const char *type; };
    static const PemType pem_types[] = {
        {"-----BEGIN RSA PRIVATE KEY-----", "ssh-rsa"},
        {"-----BEGIN EC PRIVATE KEY-----", "ecdsa"},
        {"-----BEGIN DSA PRIVATE KEY-----", "ssh-dss"},
    };
    for (const auto &pem : pem_types) {
        if (text.find(pem.marker) != std::string::npos) {
            info.format = KeyFileInfo::Format::pem;
            info.key_type = pem.type;
            info.encrypted = text.find("Proc-Type: 4,ENCRYPTED") != std::string::npos;
            return {};
        }
    }
    if (text.rfind("ssh-", 0) == 0 || text.rfind("ecdsa-", 0) == 0) {
        message = "file " + path + " holds a public key; keyfile must name the private key (the file without .pub)";
        return Errc::key_unsupported;
    }
    message = "file " + path + " is not a private key libssh2 can read (expected OpenSSH or PEM format)";
    return Errc::key_unsupported;
}

} // namespace pytun::detail
