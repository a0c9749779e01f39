// SPDX-License-Identifier: MIT
// Error codes of libpytun: std::error_code values in the "pytun" category.
#pragma once

#include <string>
#include <system_error>

#include <pytun/export.h>

namespace pytun {

/// What went wrong, in terms an operator can act on. The category's message()
/// says what to do; Tunnel::last_error_message() adds the specifics
/// (fingerprints, file names, the line to add to known_hosts).
enum class Errc {
    ok = 0,
    invalid_options = 1,          ///< a required option is missing or out of range
    bastion_unresolved = 2,       ///< the bastion's name does not resolve
    bastion_unreachable = 3,      ///< connection refused or unreachable
    bastion_timeout = 4,          ///< no answer within the connect timeout
    handshake_failed = 5,         ///< SSH handshake failed (no common algorithm, not an SSH server)
    host_key_unknown = 6,         ///< the bastion's key is not in known_hosts
    host_key_changed = 7,         ///< known_hosts has a different key: possible attack
    host_key_revoked = 8,         ///< the key is marked @revoked in known_hosts
    known_hosts_unreadable = 9,   ///< the known_hosts file is missing or unreadable
    key_file_unreadable = 10,     ///< the private key file is missing or unreadable
    key_encrypted = 11,           ///< the key needs a passphrase (none or a wrong one given)
    key_unsupported = 12,         ///< the key file's format cannot be used
    rsa_key_refused = 13,         ///< RSA key refused when it could be offered as SHA-1 (ssh-rsa) only
    key_not_authorized = 14,      ///< the server does not accept this key for this user
    remote_port_refused = 15,     ///< the bastion refused to listen on the port
    transport_lost = 16,          ///< the SSH connection broke
    stopped = 17,                 ///< stopped on request
    local_service_unreachable = 18, ///< remote_host:remote_port refused or timed out
    local_port_unavailable = 19,  ///< pytun cannot listen on a forward's local address and port
    proxy_failed = 20,            ///< the proxy is unreachable, refused the bastion or is no proxy
    proxy_auth_failed = 21,       ///< the proxy did not accept its user name and password, or wants some
    capture_failed = 22,          ///< the VPN capture's firewall rules cannot be installed
};

/// The "pytun" error category.
PYTUN_EXPORT const std::error_category &error_category() noexcept;

inline std::error_code make_error_code(Errc e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

} // namespace pytun

template <>
struct std::is_error_code_enum<pytun::Errc> : std::true_type {};
