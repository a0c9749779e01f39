// SPDX-License-Identifier: MIT
// known_hosts parsing and host key verification (see docs/architecture.md).
#include "ssh/known_hosts.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <pytun/error.h>

#include "util/base64.h"
#include "util/text.h"

namespace pytun::detail {
namespace {

std::vector<std::string> split_ws(const std::string &line)
{
    std::istringstream in(line);
    std::vector<std::string> fields;
    std::string field;
    while (in >> field)
        fields.push_back(field);
    return fields;
}

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

// "|1|salt|hash": HMAC-SHA1 of the name keyed with the salt.
bool hashed_matches(const std::string &pattern, const std::string &name)
{
    auto second = pattern.find('|', 3);
    if (second == std::string::npos)
        return false;
    auto salt = base64_decode(pattern.substr(3, second - 3));
    auto hash = base64_decode(pattern.substr(second + 1));
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    HMAC(EVP_sha1(), salt.data(), static_cast<int>(salt.size()), reinterpret_cast<const unsigned char *>(name.data()),
         name.size(), mac, &mac_len);
    return mac_len == hash.size() && std::memcmp(mac, hash.data(), mac_len) == 0;
}

// The names libssh2_knownhost_checkp accepts for host:port, in its order.
std::vector<std::string> lookup_names(const std::string &host, std::uint16_t port)
{
    std::vector<std::string> names;
    if (port != 22)
        names.push_back("[" + host + "]:" + std::to_string(port));
    names.push_back(host);
    return names;
}

bool host_field_matches(const std::string &field, const std::vector<std::string> &names)
{
    std::istringstream in(field);
    std::string pattern;
    while (std::getline(in, pattern, ',')) {
        for (const auto &name : names) {
            if (pattern.rfind("|1|", 0) == 0 ? hashed_matches(pattern, name) : lower(pattern) == lower(name))
                return true;
        }
    }
    return false;
}

bool is_key_type(const std::string &s)
{
    return s == "ssh-ed25519" || s == "ssh-rsa" || s == "ssh-dss" || s.rfind("ecdsa-sha2-nistp", 0) == 0;
}

struct HostKeyType {
    int libssh2_type;
    int knownhost_bit;
    const char *name;
};

const HostKeyType *host_key_type(int libssh2_type)
{
    static const HostKeyType types[] = {
        {LIBSSH2_HOSTKEY_TYPE_RSA, LIBSSH2_KNOWNHOST_KEY_SSHRSA, "ssh-rsa"},
        {LIBSSH2_HOSTKEY_TYPE_DSS, LIBSSH2_KNOWNHOST_KEY_SSHDSS, "ssh-dss"},
        {LIBSSH2_HOSTKEY_TYPE_ECDSA_256, LIBSSH2_KNOWNHOST_KEY_ECDSA_256, "ecdsa-sha2-nistp256"},
        {LIBSSH2_HOSTKEY_TYPE_ECDSA_384, LIBSSH2_KNOWNHOST_KEY_ECDSA_384, "ecdsa-sha2-nistp384"},
        {LIBSSH2_HOSTKEY_TYPE_ECDSA_521, LIBSSH2_KNOWNHOST_KEY_ECDSA_521, "ecdsa-sha2-nistp521"},
        {LIBSSH2_HOSTKEY_TYPE_ED25519, LIBSSH2_KNOWNHOST_KEY_ED25519, "ssh-ed25519"},
    };
    for (const auto &t : types)
        if (t.libssh2_type == libssh2_type)
            return &t;
    return nullptr;
}

struct KnownHostsDeleter {
    void operator()(LIBSSH2_KNOWNHOSTS *kh) const { libssh2_knownhost_free(kh); }
};

} // namespace

std::string KnownHosts::fingerprint(const void *key, std::size_t size)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(static_cast<const unsigned char *>(key), size, digest);
    return "SHA256:" + base64_encode(digest, sizeof(digest), false);
}

std::error_code KnownHosts::load(const std::string &path, const std::string &host, std::uint16_t port,
                                 spdlog::logger &log, std::string &message)
{
    path_ = path;
    host_ = host;
    port_ = port;
    entries_.clear();
    revoked_.clear();
    if (path.empty()) {
        message = "no known_hosts file configured (server_key), so the bastion's host key cannot be verified";
        return {};
    }
    std::ifstream in(path);
    if (!in) {
        message = "cannot read known_hosts file " + path + ": " + std::strerror(errno) +
                  " (check server_key and the file's permissions)";
        return Errc::known_hosts_unreadable;
    }
    parse(in, path, host, port, log);
    return {};
}

void KnownHosts::parse(std::istream &in, const std::string &path, const std::string &host, std::uint16_t port,
                       spdlog::logger &log)
{
    path_ = path;
    host_ = host;
    port_ = port;
    entries_.clear();
    revoked_.clear();
    valid_lines_ = bare_key_lines_ = 0;
    const auto names = lookup_names(host, port);
    std::string text;
    for (int number = 1; std::getline(in, text); ++number) {
        if (!text.empty() && text.back() == '\r')
            text.pop_back();
        auto fields = split_ws(text);
        if (fields.empty() || fields[0][0] == '#')
            continue;
        if (fields[0][0] == '@') {
            // libssh2 1.10 stores markers as bogus hosts that never match, so
            // revocations would be ignored silently: handle @revoked here.
            if (fields[0] == "@revoked" && fields.size() >= 4) {
                revoked_.push_back({number, text, fields[2], fields[3]});
            } else if (fields[0] == "@cert-authority") {
                log.warn("{}:{}: @cert-authority lines are not supported by libssh2 and are ignored", path, number);
            } else {
                log.warn("{}:{}: unknown marker {} ignored", path, number, printable(fields[0], 40));
            }
            continue;
        }
        if (fields.size() < 3 || !is_key_type(fields[1])) {
            bare_key_lines_ += is_key_type(fields[0]);
            log.warn("{}:{}: not a known_hosts entry libssh2 can use, line skipped", path, number);
            continue;
        }
        ++valid_lines_;
        if (host_field_matches(fields[0], names))
            entries_.push_back({number, text, fields[1], fields[2]});
    }
}

std::string KnownHosts::hostkey_preference() const
{
    std::string pref;
    for (const auto &entry : entries_) {
        if (entry.type == "ssh-dss" || pref.find(entry.type) != std::string::npos)
            continue;
        if (!pref.empty())
            pref += ',';
        pref += entry.type;
    }
    return pref;
}

std::error_code KnownHosts::verify(LIBSSH2_SESSION *session, std::string &message) const
{
    std::size_t key_len = 0;
    int key_type = 0;
    const char *key = libssh2_session_hostkey(session, &key_len, &key_type);
    const HostKeyType *type = host_key_type(key_type);
    if (!key || !type) {
        message = "the bastion presented no host key libssh2 can check";
        return Errc::handshake_failed;
    }
    const std::string presented = fingerprint(key, key_len);
    const std::string where = port_ == 22 ? host_ : "[" + host_ + "]:" + std::to_string(port_);
    const std::string line_to_add =
        where + " " + type->name + " " + base64_encode(reinterpret_cast<const unsigned char *>(key), key_len, true);

    for (const auto &revoked : revoked_) {
        auto blob = base64_decode(revoked.key_base64);
        if (blob.size() == key_len && std::memcmp(blob.data(), key, key_len) == 0) {
            message = "the host key of " + where + " (" + type->name + " " + presented + ") is marked @revoked in " +
                      path_ + " line " + std::to_string(revoked.number) + "; refusing to connect";
            return Errc::host_key_revoked;
        }
    }

    std::unique_ptr<LIBSSH2_KNOWNHOSTS, KnownHostsDeleter> kh(libssh2_knownhost_init(session));
    if (!kh) {
        message = "libssh2 could not allocate a known-hosts collection";
        return Errc::handshake_failed;
    }
    for (const auto &entry : entries_) {
        // Only the lines for this host are given to libssh2, one by one.
        if (libssh2_knownhost_readline(kh.get(), entry.text.c_str(), entry.text.size(),
                                       LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0)
            continue;
    }
    struct libssh2_knownhost *found = nullptr;
    int check = libssh2_knownhost_checkp(kh.get(), host_.c_str(), port_, key, key_len,
                                         LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                                             type->knownhost_bit,
                                         &found);
    switch (check) {
    case LIBSSH2_KNOWNHOST_CHECK_MATCH:
        return {};
    case LIBSSH2_KNOWNHOST_CHECK_MISMATCH: {
        std::string known = "(unknown)";
        int known_line = 0;
        for (const auto &entry : entries_) {
            if (entry.type == type->name) {
                auto blob = base64_decode(entry.key_base64);
                known = fingerprint(blob.data(), blob.size());
                known_line = entry.number;
                break;
            }
        }
        message = "WARNING: the host key of " + where + " has CHANGED. Someone may be intercepting the connection "
                  "(an attack), or the bastion's key was replaced. Expected " + type->name + " " + known + " (" +
                  path_ + " line " + std::to_string(known_line) + "), the server presented " + presented +
                  ". If the change is expected, replace that line with: " + line_to_add;
        return Errc::host_key_changed;
    }
    case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
    default:
        message = "the host key of " + where + " is not known (" + type->name + " " + presented + "). " +
                  (path_.empty() ? std::string("Configure a known_hosts file (server_key) and add")
                                 : "Check the fingerprint with the bastion's administrator (ssh-keygen -lf "
                                   "/etc/ssh/ssh_host_*_key.pub on the bastion), then add to " + path_ + ":") +
                  " " + line_to_add;
        return Errc::host_key_unknown;
    }
}

} // namespace pytun::detail
