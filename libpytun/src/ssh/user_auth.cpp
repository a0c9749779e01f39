// SPDX-License-Identifier: MIT
// Public-key authentication: libssh2 for ed25519/ECDSA keys, our own RSA
// signatures with SHA-2 and the fallback to ssh-rsa.
#include "ssh/user_auth.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include <pytun/error.h>

#include "ssh/session.h"
#include "ssh/wire.h"

namespace pytun::detail {
namespace {

constexpr const char *k_rsa_sha512 = "rsa-sha2-512";
constexpr const char *k_rsa_sha256 = "rsa-sha2-256";
constexpr const char *k_rsa_sha1 = "ssh-rsa";

// OpenSSH 7.2 added rsa-sha2-256/512 and parses a key blob named by either as
// an RSA key. RFC 8332 does not promise that (the blob should say "ssh-rsa");
// libssh2 1.10 takes the algorithm it sends from the blob, so this is the
// only way to offer SHA-2 through its public API. Dropbear refuses such a
// blob and Go's x/crypto/ssh servers drop the connection: other servers get
// ssh-rsa only.
constexpr int k_openssh_rsa_sha2_blobs = 702;

// Servers (user@host:port) that refused both SHA-2 names at the last login,
// or closed the connection while we offered them: reconnects offer ssh-rsa
// first, which saves the server's MaxAuthTries and its log two refusals per
// login. Forgotten when ssh-rsa is refused too (then it was not about SHA-2).
std::mutex g_sha1_mutex;
std::set<std::string> g_sha1_servers;

bool sha1_remembered(const std::string &who)
{
    std::lock_guard lock(g_sha1_mutex);
    return g_sha1_servers.count(who) > 0;
}

void remember_sha1(const std::string &who, bool sha1)
{
    std::lock_guard lock(g_sha1_mutex);
    if (sha1)
        g_sha1_servers.insert(who);
    else
        g_sha1_servers.erase(who);
}

// The banner is the server's text: keep it printable in our messages.
std::string printable(std::string_view text)
{
    std::string out;
    for (unsigned char c : text.substr(0, 200))
        out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
    return out;
}

} // namespace

int openssh_version(std::string_view banner)
{
    auto at = banner.find("OpenSSH_");
    if (at == std::string_view::npos)
        return 0;
    banner.remove_prefix(at + 8);
    if (banner.starts_with("for_Windows_"))
        banner.remove_prefix(12);
    int major = 0, minor = 0;
    std::size_t i = 0;
    for (; i < banner.size() && std::isdigit(static_cast<unsigned char>(banner[i])); ++i)
        major = major * 10 + (banner[i] - '0');
    if (i == 0 || i >= banner.size() || banner[i] != '.' || major > 999)
        return 0;
    for (++i; i < banner.size() && std::isdigit(static_cast<unsigned char>(banner[i])) && minor < 100; ++i)
        minor = minor * 10 + (banner[i] - '0');
    return major * 100 + std::min(minor, 99);
}

UserAuth::UserAuth(SshSession &session, const ConnectionOptions &options, const KeyFileInfo &key)
    : session_(session), username_(options.username), key_file_(options.key_file),
      passphrase_(options.key_passphrase), key_(key),
      who_(options.username + "@" + options.server_host + ":" + std::to_string(options.server_port))
{
    if (!key_.is_rsa())
        return;
    std::string problem;
    if (rsa_.load(key_file_, passphrase_, problem)) {
        // libssh2 reads the file itself and reports what is wrong with it, or
        // signs with SHA-1 (an encrypted OpenSSH-format RSA key).
        sha1_only_because_ = problem + ", and libssh2 1.10 signs such keys with SHA-1 only";
        session_.log().debug("{}; libssh2 reads the key instead", problem);
        return;
    }
    const char *banner = libssh2_session_banner_get(session_.raw());
    const std::string server = printable(banner ? banner : "");
    if (openssh_version(server) < k_openssh_rsa_sha2_blobs) {
        sha1_only_because_ = "the bastion is not OpenSSH 7.2 or later (it says '" + server +
                             "'), and only OpenSSH is known to take rsa-sha2 the way libssh2 1.10 can send it";
        plan_ = {k_rsa_sha1};
        session_.log().info("RSA key {}: offered as ssh-rsa (SHA-1) only: {}", key_file_, sha1_only_because_);
    } else if (sha1_remembered(who_)) {
        sha1_first_remembered_ = true;
        plan_ = {k_rsa_sha1};
        session_.log().debug("RSA key: offering ssh-rsa first: at the last login the bastion refused rsa-sha2 "
                             "or hung up while it was offered");
    } else {
        plan_ = {k_rsa_sha512, k_rsa_sha256, k_rsa_sha1};
    }
    blob_ = rsa_.public_blob(plan_.front());
}

int UserAuth::attempt()
{
    if (rsa_.loaded())
        return attempt_rsa();
    const char *passphrase = passphrase_.empty() ? nullptr : passphrase_.c_str();
    return libssh2_userauth_publickey_fromfile_ex(session_.raw(), username_.c_str(),
                                                  static_cast<unsigned>(username_.size()), nullptr,
                                                  key_file_.c_str(), passphrase);
}

// One libssh2_userauth_publickey per algorithm name, the next one only after
// the previous call completed (refused): libssh2 keeps the request's state in
// the session, and an EAGAIN is retried by the driver with this same blob.
int UserAuth::attempt_rsa()
{
    for (;;) {
        void *self = this;
        const int rc = libssh2_userauth_publickey(session_.raw(), username_.c_str(), blob_.data(), blob_.size(),
                                                  &UserAuth::sign_callback, &self);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return rc;
        const std::string &offered = plan_[next_];
        if (rc == 0) {
            if (offered != k_rsa_sha1) {
                remember_sha1(who_, false);
                session_.log().debug("authenticated with the RSA key as {}", offered);
            } else if (!refused_.empty()) {
                remember_sha1(who_, true);
                session_.log().warn("{} refused the RSA key {} as {} and accepted ssh-rsa (SHA-1), which OpenSSH "
                                    "has deprecated: allow rsa-sha2-512 on the bastion (PubkeyAcceptedAlgorithms) "
                                    "or use an ed25519 key (pytun --make-key); reconnects offer ssh-rsa first",
                                    who_, key_file_, tried_list());
            } else {
                session_.log().debug("authenticated with the RSA key as ssh-rsa (SHA-1)");
            }
            return 0;
        }
        if (!sign_error_.empty())
            return rc;
        // libssh2 reports a connection that ended while it waited for the
        // answer as PUBLICKEY_UNVERIFIED too: the session knows better.
        const bool refused =
            (rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED || rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED) &&
            !session_.peer_closed();
        if (!refused) {
            // MaxAuthTries, or a server that does not take a blob named
            // rsa-sha2-*: offer ssh-rsa first on the next connection.
            dropped_ = true;
            if (plan_.front() != k_rsa_sha1)
                remember_sha1(who_, true);
            return rc;
        }
        refused_.push_back(offered);
        if (++next_ == plan_.size()) {
            remember_sha1(who_, false);
            return rc;
        }
        session_.log().debug("{} refused the RSA key as {}; offering {}", who_, offered, plan_[next_]);
        blob_ = rsa_.public_blob(plan_[next_]);
    }
}

// libssh2 hands over what RFC 4252 section 7 says to sign: session id,
// SSH_MSG_USERAUTH_REQUEST, user, service, "publickey", TRUE, the algorithm
// name, the key blob. The hash follows the name found there, never a guess.
int UserAuth::sign_callback(LIBSSH2_SESSION *, unsigned char **sig, std::size_t *sig_len,
                            const unsigned char *data, std::size_t data_len, void **abstract)
{
    auto *self = static_cast<UserAuth *>(*abstract);
    const std::span<const unsigned char> to_sign(data, data_len);
    WireReader in(to_sign);
    unsigned char request = 0, with_signature = 0;
    std::string algorithm;
    if (!in.skip_string() || !in.byte(request) || !in.skip_string() || !in.skip_string() || !in.skip_string() ||
        !in.byte(with_signature) || !in.string(algorithm)) {
        self->sign_error_ = "libssh2 asked to sign data that is not a publickey request";
        return -1;
    }
    std::vector<unsigned char> signature;
    if (!self->rsa_.sign(algorithm, to_sign, signature)) {
        self->sign_error_ = "OpenSSL could not sign as " + printable(algorithm);
        return -1;
    }
    // libssh2 frees the signature with the session's allocator, and that
    // (Libssh2Heap) frees blocks it did not hand out with free(). On an
    // error return it frees nothing, so nothing is allocated before this
    // point.
    auto *copy = static_cast<unsigned char *>(std::malloc(signature.size()));
    if (!copy) {
        self->sign_error_ = "out of memory";
        return -1;
    }
    std::memcpy(copy, signature.data(), signature.size());
    *sig = copy;
    *sig_len = signature.size();
    return 0;
}

std::string UserAuth::tried_list() const
{
    std::string out;
    for (std::size_t i = 0; i < refused_.size(); ++i)
        out += (i == 0 ? "" : i + 1 == refused_.size() ? " and " : ", ") + refused_[i];
    return out;
}

std::error_code UserAuth::explain(int rc, std::string &message) const
{
    if (!sign_error_.empty()) {
        message = "cannot sign with the RSA key " + key_file_ + ": " + sign_error_;
        return Errc::key_unsupported;
    }
    if (dropped_) {
        message = who_ + " closed the connection during authentication" +
                  (refused_.empty() ? std::string() : " after refusing the RSA key as " + tried_list()) +
                  (plan_.front() != k_rsa_sha1 ? "; the next attempt offers ssh-rsa first" : std::string());
        return Errc::transport_lost;
    }
    switch (rc) {
    case LIBSSH2_ERROR_AUTHENTICATION_FAILED:
    case LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED:
        if (key_.is_rsa() && !sha1_only_because_.empty()) {
            message = who_ + " refused the RSA key " + key_file_ +
                      " signed with SHA-1 (ssh-rsa), the only signature pytun could offer: " + sha1_only_because_ +
                      ". OpenSSH 8.8 and later refuse SHA-1: make an ed25519 key (pytun --make-key TUNNEL.ini) and "
                      "authorize it, or allow ssh-rsa on the bastion (PubkeyAcceptedAlgorithms +ssh-rsa in "
                      "sshd_config)";
            return Errc::rsa_key_refused;
        }
        message = who_ + " did not accept the key " + key_file_ + " (" + key_.key_type +
                  (refused_.size() > 1 ? ", offered as " + tried_list() : std::string()) +
                  "): add its public key (" + key_file_ + ".pub) to ~" + username_ +
                  "/.ssh/authorized_keys on the bastion" +
                  (sha1_first_remembered_ ? " (ssh-rsa was offered alone because the bastion did not take rsa-sha2 "
                                            "at the last login; the next attempt offers rsa-sha2 again)"
                                          : "");
        return Errc::key_not_authorized;
    case LIBSSH2_ERROR_FILE:
    case LIBSSH2_ERROR_KEYFILE_AUTH_FAILED:
        if (key_.encrypted) {
            message = "cannot decrypt the private key " + key_file_ + ": the configured passphrase is wrong";
            return Errc::key_encrypted;
        }
        message = "libssh2 cannot use the private key " + key_file_ + ": " + session_.last_error_text();
        return Errc::key_unsupported;
    default:
        message = "authentication with " + who_ + " failed: " + session_.last_error_text();
        return Errc::transport_lost;
    }
}

} // namespace pytun::detail
