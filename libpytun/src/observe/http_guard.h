// SPDX-License-Identifier: MIT
// GuardedServer: the inspection API's HTTP server. Connections are accepted
// and their request heads read on an Asio loop of the server's own, against
// a deadline counted from accept, size and header-count limits and the path
// checks; only a complete, checked request reaches a worker thread, where
// cpp-httplib parses it and runs the route. A client that is slow or silent
// therefore holds a socket and a few kB, never a worker, and the number of
// such clients is bounded: past the limit the one that has waited longest
// for its head is answered 503 and closed, so fresh clients (health probes)
// are still served under a flood of slow ones.
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <system_error>
#include <string>
#include <string_view>

#include <httplib.h>

namespace pytun::detail {

struct GuardLimits {
    std::chrono::milliseconds request_timeout{5000};
    std::chrono::milliseconds write_timeout{5000};
    std::size_t max_header_bytes = 16 * 1024;
    std::size_t max_headers = 64;
    std::size_t max_target_length = 2048;
    std::size_t max_pending = 256;   ///< connections whose request is not complete yet
    std::size_t max_queued = 256;    ///< complete requests waiting for a worker
    unsigned threads = 4;
    /// Connections answered with an error and drained briefly before the
    /// close (so the reply is not lost to a reset); past this they are
    /// closed at once.
    static constexpr std::size_t k_max_closing = 32;
};

/// "Bad Request" for 400 and so on.
const char *reason_phrase(int status);

/// Outcome of reading and checking one request head.
struct HeadCheck {
    int status = 0;            ///< 0: fine; -1: the client went away before sending anything
    std::string reason;        ///< for the error reply
};

/// Checks a complete request head (request line and header lines, up to and
/// including the empty line): request line syntax, HTTP version, target
/// length, path tricks (dot segments, encoded slashes or NULs, backslashes),
/// header count and syntax.
HeadCheck check_head(std::string_view head, const GuardLimits &limits);

/// Checks a request target alone (the part of check_head about paths).
HeadCheck check_target(std::string_view target, const GuardLimits &limits);

class GuardedServer : public httplib::Server {
public:
    /// `error_reply(status, reason)` makes the body (JSON) of the guard's own
    /// replies; it runs on the server's threads.
    GuardedServer(GuardLimits limits, std::function<std::string(int, const std::string &)> error_reply);
    ~GuardedServer() override;

    /// Bind `address`:`port` (0: the kernel chooses) with SO_REUSEADDR but
    /// not SO_REUSEPORT, so a second pytun cannot silently share the port,
    /// and listen. Returns the bound port, 0 on failure (`ec` says why).
    std::uint16_t bind(const std::string &address, std::uint16_t port, std::error_code &ec);
    /// Serve on the loop thread and `limits.threads` workers until stop().
    void start();
    /// Close the listener and every connection, including those a worker
    /// serves; returns when the threads are gone. Safe to call twice.
    void stop();

    /// Requests answered by the guard itself (4xx, 503), connections cut
    /// for room, and accept() failures for lack of descriptors.
    std::size_t rejected() const { return rejected_.load(); }
    std::size_t evicted() const { return evicted_.load(); }
    std::size_t accept_failures() const { return accept_failures_.load(); }

private:
    struct FrontEnd;
    /// The JSON body of a 503 the guard sends itself.
    std::string error_reply(const std::string &reason) const;
    /// On a worker: the complete head (and what followed it) is in `buffered`.
    void serve(int fd, std::string buffered, std::chrono::steady_clock::time_point deadline);

    GuardLimits limits_;
    std::function<std::string(int, const std::string &)> error_reply_;
    std::atomic<std::size_t> rejected_{0};
    std::atomic<std::size_t> evicted_{0};
    std::atomic<std::size_t> accept_failures_{0};
    std::unique_ptr<FrontEnd> front_;

    friend struct FrontEnd;
};

/// The reply the guard sends itself: status line, Server header, JSON body,
/// Connection: close.
std::string guard_reply(int status, const std::string &reason, const std::string &body);

} // namespace pytun::detail
