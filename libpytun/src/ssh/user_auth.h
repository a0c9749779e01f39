// SPDX-License-Identifier: MIT
// UserAuth: public-key authentication of one session with the configured key.
// ed25519 and ECDSA keys go through libssh2's own code. RSA keys are signed
// here, because libssh2 1.10 signs them only with SHA-1 (ssh-rsa), which
// OpenSSH >= 8.8 refuses: rsa-sha2-512, then rsa-sha2-256, then ssh-rsa only
// when the server refused both (docs/architecture.md, "User keys").
#pragma once

#include "internal.h"

#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <libssh2.h>

#include "ssh/connection.h"
#include "ssh/key_file.h"
#include "ssh/rsa_key.h"

namespace pytun::detail {

class SshSession;

class UserAuth {
public:
    /// Call after the handshake (the server's banner is known). Reads an RSA
    /// key at once; other keys are read by libssh2.
    UserAuth(SshSession &session, const ConnectionOptions &options, const KeyFileInfo &key);

    /// The authentication operation for the session's queue: call until it
    /// returns something other than LIBSSH2_ERROR_EAGAIN (with no other call
    /// on the session in between); 0 when authenticated.
    int attempt();

    /// Why attempt() returned `rc` (not 0), as the operator should read it.
    std::error_code explain(int rc, std::string &message) const;

private:
    static int sign_callback(LIBSSH2_SESSION *session, unsigned char **sig, std::size_t *sig_len,
                             const unsigned char *data, std::size_t data_len, void **abstract);
    int attempt_rsa();
    std::string tried_list() const;

    SshSession &session_;
    std::string username_;
    std::string key_file_;
    std::string passphrase_;
    KeyFileInfo key_;
    std::string who_;                 ///< user@host:port, also the key of the per-server memory
    RsaKey rsa_;                      ///< loaded: we sign; empty: libssh2 reads the key file
    std::vector<std::string> plan_;   ///< algorithm names to offer, in order
    std::size_t next_ = 0;            ///< index into plan_ of the one being offered
    std::vector<unsigned char> blob_; ///< public key blob named plan_[next_]
    std::vector<std::string> refused_;
    std::string sha1_only_because_;   ///< why an RSA key can be offered as ssh-rsa only
    bool sha1_first_remembered_ = false; ///< plan_ starts at ssh-rsa: this server refused SHA-2 last time
    std::string sign_error_;
    bool dropped_ = false;            ///< the server closed the connection during authentication
};

/// The OpenSSH version a server banner ("SSH-2.0-OpenSSH_9.2p1 Debian-2")
/// announces, as major * 100 + minor; 0 for other servers.
int openssh_version(std::string_view banner);

} // namespace pytun::detail
