// SPDX-License-Identifier: MIT
// Through a proxy to the first SSH hop: the client's side of HTTP CONNECT as
// a pure, incremental handshake (bytes in, decisions out; fuzzed by
// tests/fuzz/fuzz_proxy.cpp), and the step of a connection's connect that
// runs it, or SOCKS5 (forward/socks.h), on a socket connected to the proxy.
// The SSH server's first bytes, should they come with the proxy's answer,
// stay unread in the socket for the SSH session.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <asio.hpp>

#include <pytun/route.h>

namespace pytun::detail {

/// HTTP CONNECT host:port (RFC 9110 §9.3.6), with Basic authentication when
/// a user name is given. The proxy's answer is read strictly and within
/// bounds: a status line "HTTP/1.x NNN reason", at most k_max_header_lines
/// header lines of `name: value`, in at most k_max_header_bytes in all
/// (interim 1xx answers included), each line ended by CRLF (or LF alone).
class HttpConnectHandshake {
public:
    static constexpr std::size_t k_max_header_bytes = 16 * 1024;
    static constexpr std::size_t k_max_header_lines = 100;

    struct Step {
        enum class Kind {
            need_more,   ///< read and feed more
            complete,    ///< a 2xx answer: the tunnel is there; take_early_data() is the SSH server's
            refused,     ///< another answer (or none a proxy would give): `reason`
            auth_failed, ///< 407 (or 401 to our credentials): the proxy wants other ones: `reason`
        };
        Kind kind = Kind::need_more;
        std::string reason; ///< the proxy's words escaped; never our credentials
    };

    HttpConnectHandshake(std::string host, std::uint16_t port, std::string username = {}, std::string password = {});

    /// What to send the proxy first. Empty when host cannot go into a
    /// request line (blanks or control characters): do not connect then.
    std::string request() const;
    /// Takes the proxy's next bytes (any split). After `complete`, more bytes
    /// are added to the early data; after a failure, the same is returned.
    Step feed(std::string_view bytes);
    /// Bytes after the answer's end (the SSH server's banner); empties them.
    std::string take_early_data() { return std::exchange(early_, {}); }
    /// The final answer's status code, once read.
    int status() const { return status_; }

private:
    Step finish(Step::Kind kind, std::string reason);
    Step line(std::string_view text);
    std::string failure_reason() const;

    std::string host_;
    std::uint16_t port_;
    std::string username_;
    std::string password_;
    std::string partial_;      ///< a line not yet complete
    std::string early_;
    std::size_t header_bytes_ = 0;
    std::size_t header_lines_ = 0;
    int status_ = 0;           ///< of the answer being read; 0 before its status line
    std::string reason_phrase_;
    std::vector<std::string> auth_schemes_; ///< Proxy-Authenticate's schemes ("Basic", "NTLM")
    std::optional<Step> end_;
};

/// Completion of the proxy step: {} (the socket now leads to the SSH host),
/// or Errc::proxy_failed / Errc::proxy_auth_failed and a message naming the
/// proxy.
using ProxyDone = std::function<void(std::error_code, const std::string &message)>;

/// `socket` is connected to `proxy`: ask it for a connection to host:port
/// and read its answer, by `deadline` (then the socket is closed and the
/// step fails). `done` runs once on the socket's executor, never inside this
/// call; the caller keeps `socket` alive until then.
void proxy_handshake(asio::ip::tcp::socket &socket, const ProxyOptions &proxy, const std::string &host,
                     std::uint16_t port, std::chrono::steady_clock::time_point deadline, ProxyDone done);

} // namespace pytun::detail
