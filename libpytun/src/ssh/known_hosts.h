// SPDX-License-Identifier: MIT
// known_hosts handling for one bastion: which host-key types to ask for, and
// the verdict on the key the server presented.
#pragma once

#include "internal.h"

#include <cstdint>
#include <istream>
#include <string>
#include <system_error>
#include <vector>

#include <libssh2.h>
#include <spdlog/logger.h>

namespace pytun::detail {

/// The known_hosts entries that concern one host:port, read line by line so a
/// bad line costs only that line (libssh2_knownhost_readfile stops at the
/// first one it cannot parse).
class PYTUN_CONNECTOR_USES KnownHosts {
public:
    /// Parses `path` for `host`:`port`. Unparseable lines are logged with their
    /// line number and skipped. Returns known_hosts_unreadable if the file
    /// cannot be read (message says which and why).
    std::error_code load(const std::string &path, const std::string &host, std::uint16_t port,
                         spdlog::logger &log, std::string &message);
    /// The same from a stream (`path` is only used in messages).
    void parse(std::istream &in, const std::string &path, const std::string &host, std::uint16_t port,
               spdlog::logger &log);

    /// Of the last parse: lines that are known_hosts entries (for any host),
    /// lines that are a bare public key as in a .pub file ("ssh-ed25519 AAAA
    /// comment", no host), and the entries for this host.
    int valid_lines() const { return valid_lines_; }
    int bare_key_lines() const { return bare_key_lines_; }
    std::size_t entries_for_host() const { return entries_.size(); }

    /// Host-key algorithms known_hosts holds for this host, in file order, as a
    /// libssh2 method preference ("ssh-ed25519,ecdsa-sha2-nistp256"); empty
    /// when the file knows no key for the host.
    std::string hostkey_preference() const;

    /// Checks the key the server presented (after the handshake). Returns {}
    /// on a match, else host_key_unknown / host_key_changed / host_key_revoked
    /// with the fingerprints and the line to add in `message`.
    std::error_code verify(LIBSSH2_SESSION *session, std::string &message) const;

    /// "SHA256:..." as OpenSSH prints it, for a raw key blob.
    static std::string fingerprint(const void *key, std::size_t size);

private:
    struct Line {
        int number;
        std::string text;   ///< as in the file, for libssh2_knownhost_readline
        std::string type;   ///< key type name
        std::string key_base64;
    };
    std::string path_;
    std::string host_;
    std::uint16_t port_ = 22;
    std::vector<Line> entries_;      ///< lines whose host field matches host:port
    std::vector<Line> revoked_;      ///< @revoked lines (any host pattern)
    int valid_lines_ = 0;
    int bare_key_lines_ = 0;
};

} // namespace pytun::detail
