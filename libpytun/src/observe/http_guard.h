// SPDX-License-Identifier: MIT
// HttpGuard: cpp-httplib's server with the limits its packaged build does not
// have. Before httplib parses a request, the guard reads the request head
// against a deadline counted from accept, a size and a header-count limit,
// and checks the request target for path tricks; what fails is answered with
// 408/414/431/400 without reaching a handler. A bounded queue answers 503
// when more clients wait than the workers can serve.
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <set>
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
    std::size_t max_pending = 256;
    unsigned threads = 4;
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
    /// replies; it runs on a worker thread.
    GuardedServer(GuardLimits limits, std::function<std::string(int, const std::string &)> error_reply);
    ~GuardedServer() override;

    /// The packaged library listens with a backlog of 5: raise it once bound,
    /// or a burst of clients sees SYN retries of a second.
    void raise_backlog(int backlog);

    std::size_t rejected() const { return rejected_.load(); }

    /// Shut down the connections being served, so that stop() does not
    /// wait for slow clients to reach their deadline.
    void shutdown_clients();

private:
    bool process_and_close_socket(socket_t sock) override;
    /// Answer with the guard's own error reply (the caller closes).
    void reply_and_close(socket_t sock, int status, const std::string &reason);

    GuardLimits limits_;
    std::function<std::string(int, const std::string &)> error_reply_;
    std::atomic<std::size_t> pending_{0};
    std::atomic<std::size_t> rejected_{0};
    std::mutex clients_mutex_;
    std::set<int> clients_;
};

} // namespace pytun::detail
