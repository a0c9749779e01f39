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

#include "ssh/wire.h"
#include "util/base64.h"

namespace pytun::detail {
namespace {

bool inspect_openssh(const std::string &text, KeyFileInfo &info)
{
    OpensshKeyFile file;
    if (!parse_openssh_key(text, file))
        return false;
    WireReader pub(file.public_key);
    std::string type;
    if (!pub.string(type))
        return false;
    info.format = KeyFileInfo::Format::openssh;
    info.encrypted = file.cipher != "none";
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

std::string pem_body(const std::string &text, std::string_view begin, std::string_view end)
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

// openssh-key-v1 (PROTOCOL.key in OpenSSH): magic, cipher, kdf, kdf options,
// key count, then the public key and the (maybe encrypted) private section.
bool parse_openssh_key(const std::string &text, OpensshKeyFile &out)
{
    const auto blob =
        base64_decode(pem_body(text, "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"));
    static const char magic[] = "openssh-key-v1"; // with its NUL, as in the file
    if (blob.size() < sizeof(magic) || std::memcmp(blob.data(), magic, sizeof(magic)) != 0)
        return false;
    WireReader in(std::span<const unsigned char>(blob).subspan(sizeof(magic)));
    std::uint32_t keys = 0;
    std::span<const unsigned char> public_key, private_section;
    if (!in.string(out.cipher) || !in.skip_string() || !in.skip_string() || !in.u32(keys) || keys != 1 ||
        !in.string(public_key) || !in.string(private_section))
        return false;
    out.public_key.assign(public_key.begin(), public_key.end());
    out.private_section.assign(private_section.begin(), private_section.end());
    return true;
}

std::error_code read_key_text(const std::string &path, std::string &text, std::string &message)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        message = "cannot read private key file " + path + ": " + std::strerror(errno) +
                  " (check keyfile and the file's permissions)";
        return Errc::key_file_unreadable;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    return {};
}

std::error_code inspect_key_file(const std::string &path, KeyFileInfo &info, std::string &message)
{
    info = {};
    if (path.empty()) {
        message = "no private key configured (keyfile)";
        return Errc::key_file_unreadable;
    }
    std::string text;
    if (auto ec = read_key_text(path, text, message))
        return ec;

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
