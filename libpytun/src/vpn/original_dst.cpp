// SPDX-License-Identifier: MIT
// The original destination of a redirected connection.
#include "vpn/original_dst.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace pytun::detail {
namespace {

// linux/netfilter_ipv4.h SO_ORIGINAL_DST and linux/netfilter_ipv6/ip6_tables.h
// IP6T_SO_ORIGINAL_DST (both 80); those headers clash with netinet/in.h.
constexpr int k_so_original_dst = 80;

} // namespace

std::optional<asio::ip::tcp::endpoint> original_destination(asio::ip::tcp::socket &socket)
{
    asio::error_code ec;
    const auto local = socket.local_endpoint(ec);
    if (ec)
        return std::nullopt;
    const int fd = socket.native_handle();
    if (local.address().is_v4()) {
        sockaddr_in address{};
        socklen_t size = sizeof address;
        if (::getsockopt(fd, SOL_IP, k_so_original_dst, &address, &size) != 0 || address.sin_family != AF_INET)
            return std::nullopt;
        asio::ip::address_v4::bytes_type bytes;
        std::memcpy(bytes.data(), &address.sin_addr, bytes.size());
        return asio::ip::tcp::endpoint(asio::ip::address_v4(bytes), ntohs(address.sin_port));
    }
    sockaddr_in6 address{};
    socklen_t size = sizeof address;
    if (::getsockopt(fd, SOL_IPV6, k_so_original_dst, &address, &size) != 0 || address.sin6_family != AF_INET6)
        return std::nullopt;
    asio::ip::address_v6::bytes_type bytes;
    std::memcpy(bytes.data(), &address.sin6_addr, bytes.size());
    return asio::ip::tcp::endpoint(asio::ip::address_v6(bytes), ntohs(address.sin6_port));
}

} // namespace pytun::detail
