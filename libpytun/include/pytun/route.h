// SPDX-License-Identifier: MIT
// How a tunnel reaches its bastion when it cannot connect to it directly:
// through an HTTP CONNECT or SOCKS5 proxy, through a jump host (ssh -J), or
// both (the proxy then carries the connection to the jump host). Also the
// readers for the ways people write them, and the no_proxy rules of the
// environment.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <pytun/export.h>

namespace pytun {

/// A proxy between pytun and the first SSH hop (the jump host if there is
/// one, else the bastion). The hop's name is sent to the proxy, which
/// resolves it (as curl's socks5h:// and every HTTP CONNECT proxy do).
struct ProxyOptions {
    enum class Kind { none, http, socks5 };
    Kind kind = Kind::none;  ///< none: connect directly
    std::string host;
    std::uint16_t port = 0;
    /// Both set: HTTP Basic authentication, or SOCKS5 user name and password
    /// (RFC 1929). The password is a secret: describe() never shows it.
    std::string username;
    std::string password;
    friend bool operator==(const ProxyOptions &, const ProxyOptions &) = default;
};

/// ssh -J: the bastion is reached through a direct-tcpip channel of an SSH
/// connection to this host. Its host key is verified like the bastion's.
struct JumpHost {
    std::string host;              ///< empty: no jump host
    std::uint16_t port = 22;
    std::string username;          ///< empty: the tunnel's
    std::string key_file;          ///< empty: the tunnel's key (and passphrase)
    std::string key_passphrase;    ///< for key_file
    std::string known_hosts_file;  ///< empty: the tunnel's
    friend bool operator==(const JumpHost &, const JumpHost &) = default;
};

/// "http://proxy.example:3128", "socks5://user@10.0.0.1:1080", "none": the
/// password is never shown.
PYTUN_EXPORT std::string describe(const ProxyOptions &proxy);
/// "user@jump.example:22" (without "user@" when the tunnel's is used).
PYTUN_EXPORT std::string describe(const JumpHost &jump);

/// Reads a proxy URL: `http://[USER[:PASSWORD]@]HOST[:PORT][/]` (HTTP
/// CONNECT) or `socks5://...` (`socks5h://` is the same), USER and PASSWORD
/// percent-encoded where they hold `%`, `@`, `:` or `/` (everything up to
/// the last `@` is theirs), HOST a name, an IPv4 address or an IPv6 address
/// in brackets, PORT 80 (http) or 1080 (socks5) when left out. `none` reads
/// as Kind::none. Nothing and `error` set when it does not parse; `error`
/// never quotes the user name or password.
PYTUN_EXPORT std::optional<ProxyOptions> parse_proxy(std::string_view url, std::string &error);

/// Reads a jump host as ssh -J takes it: `[USER@]HOST[:PORT]`, an IPv6
/// address in brackets when a port follows. Nothing and `error` set when it
/// does not parse.
PYTUN_EXPORT std::optional<JumpHost> parse_jump(std::string_view text, std::string &error);

/// Whether the environment's `no_proxy` list exempts `host`:`port` from the
/// proxy. The list is separated by commas (blanks ignored); an entry is `*`
/// (every host), a host name (it and every name below it; a leading `.` or
/// `*.` changes nothing), an IP address or CIDR block (`10.0.0.0/8`,
/// `fd00::/64`), each optionally with `:PORT` (IPv6 then in brackets).
/// Names are compared without resolving them.
PYTUN_EXPORT bool no_proxy_matches(std::string_view no_proxy, std::string_view host, std::uint16_t port);

} // namespace pytun
