// SPDX-License-Identifier: MIT
// connect_with_deadline: resolve and connect a TCP socket, racing a timer
// (Asio's timeout_watchdog pattern). Used for the bastion, for local
// services behind a forward, and for health probes.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include <asio.hpp>

namespace pytun::detail {

struct ConnectOutcome {
    enum class Failure { none, resolve, connect, timeout };
    Failure failure = Failure::none;
    asio::error_code error; ///< of the failed step (timed_out for a timeout)
    asio::ip::tcp::endpoint endpoint; ///< the one connected to
    explicit operator bool() const { return failure == Failure::none; }
    /// The error in words: "cannot resolve: ...", "no answer within N ms", ...
    std::string describe(std::chrono::milliseconds timeout) const;
};

/// Resolve `host` (an address literal is used as it is) and connect `socket`
/// to it, all within `timeout`. `done` runs once on the socket's executor,
/// never inside this call; on a timeout the socket is closed. The caller
/// keeps `socket` alive until `done` runs (hold its owner in `done`).
/// `allowed`, when given, is asked about every address before it is tried;
/// when it allows none the outcome is a connect failure with
/// asio::error::access_denied. A non-zero `mark` is set as SO_MARK on the
/// socket before each attempt (needs CAP_NET_ADMIN): firewall rules can
/// then tell pytun's own connections apart (the VPN capture lets the
/// bastion connection through by it).
void connect_with_deadline(asio::ip::tcp::socket &socket, const std::string &host, std::uint16_t port,
                           std::chrono::milliseconds timeout, std::function<void(const ConnectOutcome &)> done,
                           std::function<bool(const asio::ip::address &)> allowed = nullptr,
                           std::uint32_t mark = 0);

} // namespace pytun::detail
