// SPDX-License-Identifier: MIT
// Blocking SOCKS5 / SOCKS4a client for tests.
#include "socks_client.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include "fixture.h"

namespace pytun::test {
namespace {

bool read_exact(int fd, std::uint8_t *out, std::size_t n)
{
    std::size_t got = 0;
    while (got < n) {
        ssize_t r = ::recv(fd, out + got, n - got, 0);
        if (r <= 0)
            return false;
        got += static_cast<std::size_t>(r);
    }
    return true;
}

SocksResult fail(int fd, int reply)
{
    ::close(fd);
    return {-1, reply};
}

} // namespace

SocksResult socks5_connect(std::uint16_t proxy_port, const std::string &host, std::uint16_t port,
                           const std::string &user, const std::string &password)
{
    int fd = connect_tcp(proxy_port);
    if (fd < 0)
        return {};
    const bool auth = !user.empty();
    std::vector<std::uint8_t> out = {5, 1, static_cast<std::uint8_t>(auth ? 2 : 0)};
    std::uint8_t in[262];
    if (!send_all(fd, out.data(), out.size()) || !read_exact(fd, in, 2))
        return fail(fd, -1);
    if (in[1] == 0xFF)
        return fail(fd, 0xFF);
    if (auth) {
        out = {1, static_cast<std::uint8_t>(user.size())};
        out.insert(out.end(), user.begin(), user.end());
        out.push_back(static_cast<std::uint8_t>(password.size()));
        out.insert(out.end(), password.begin(), password.end());
        if (!send_all(fd, out.data(), out.size()) || !read_exact(fd, in, 2))
            return fail(fd, -1);
        if (in[1] != 0)
            return fail(fd, 0x100 | in[1]); // auth status, told apart from reply codes
    }
    out = {5, 1, 0};
    in6_addr v6{};
    in_addr v4{};
    if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
        out.push_back(1);
        auto *b = reinterpret_cast<std::uint8_t *>(&v4);
        out.insert(out.end(), b, b + 4);
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
        out.push_back(4);
        auto *b = reinterpret_cast<std::uint8_t *>(&v6);
        out.insert(out.end(), b, b + 16);
    } else {
        out.push_back(3);
        out.push_back(static_cast<std::uint8_t>(host.size()));
        out.insert(out.end(), host.begin(), host.end());
    }
    out.push_back(static_cast<std::uint8_t>(port >> 8));
    out.push_back(static_cast<std::uint8_t>(port & 0xFF));
    if (!send_all(fd, out.data(), out.size()) || !read_exact(fd, in, 4))
        return fail(fd, -1);
    const int reply = in[1];
    const std::size_t rest = in[3] == 1 ? 4 + 2 : in[3] == 4 ? 16 + 2 : 0;
    if (rest == 0 || !read_exact(fd, in, rest) || reply != 0)
        return fail(fd, reply);
    return {fd, 0};
}

SocksResult socks4a_connect(std::uint16_t proxy_port, const std::string &host, std::uint16_t port)
{
    int fd = connect_tcp(proxy_port);
    if (fd < 0)
        return {};
    std::vector<std::uint8_t> out = {4, 1, static_cast<std::uint8_t>(port >> 8), static_cast<std::uint8_t>(port & 0xFF),
                                     0, 0, 0, 1, 't', 0};
    out.insert(out.end(), host.begin(), host.end());
    out.push_back(0);
    std::uint8_t in[8];
    if (!send_all(fd, out.data(), out.size()) || !read_exact(fd, in, 8))
        return fail(fd, -1);
    if (in[1] != 0x5A)
        return fail(fd, in[1]);
    return {fd, 0x5A};
}

} // namespace pytun::test
