// SPDX-License-Identifier: MIT
// A minimal blocking SOCKS client for tests: SOCKS5 CONNECT (with optional
// RFC 1929 user/password) and SOCKS4a CONNECT to a proxy on 127.0.0.1.
#pragma once

#include <cstdint>
#include <string>

namespace pytun::test {

struct SocksResult {
    int fd = -1;      ///< connected and relaying when reply == 0 (SOCKS5) / 0x5A (SOCKS4); else closed (-1)
    int reply = -1;   ///< the proxy's reply code; -1 if the proxy closed before answering
};

/// SOCKS5 CONNECT to host:port (an IPv4/IPv6 literal is sent as an address,
/// anything else as a domain name) through 127.0.0.1:proxy_port.
SocksResult socks5_connect(std::uint16_t proxy_port, const std::string &host, std::uint16_t port,
                           const std::string &user = {}, const std::string &password = {});
/// SOCKS4a CONNECT to a host name through 127.0.0.1:proxy_port.
SocksResult socks4a_connect(std::uint16_t proxy_port, const std::string &host, std::uint16_t port);

} // namespace pytun::test
