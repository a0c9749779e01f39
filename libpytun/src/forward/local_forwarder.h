// SPDX-License-Identifier: MIT
// LocalForwarder (ssh -L): pytun listens on a local address and sends each
// connection through the bastion (a direct-tcpip channel) to the target.
#pragma once

#include "internal.h"

#include <memory>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/tunnel.h>

#include "forward/forward.h"
#include "forward/traffic.h"

namespace pytun::detail {

/// A listening socket for forwards that serve local clients (-L, -D):
/// `on_client(socket)` runs for each accepted connection until close().
class LocalListener : public std::enable_shared_from_this<LocalListener> {
public:
    explicit LocalListener(asio::io_context &io) : acceptor_(io), pause_(io) {}
    /// Opens the listening socket; false and a message naming the address
    /// and port when it cannot. `v6_only`: an IPv6 wildcard takes no IPv4
    /// (so 0.0.0.0 can listen on the same port).
    bool open(const std::string &bind, std::uint16_t port, std::string &message, bool v6_only = false);
    /// Why the last open() failed.
    asio::error_code open_error() const { return open_error_; }
    std::uint16_t port() const;
    void accept(std::function<void(asio::ip::tcp::socket)> on_client);
    void close();

private:
    void accept_next();

    asio::ip::tcp::acceptor acceptor_;
    asio::steady_timer pause_;
    asio::error_code open_error_;
    std::function<void(asio::ip::tcp::socket)> on_client_;
};

class LocalForwarder final : public Forward, public std::enable_shared_from_this<LocalForwarder> {
public:
    LocalForwarder(asio::io_context &io, pytun::LocalForward spec, std::shared_ptr<spdlog::logger> log,
                 std::shared_ptr<TrafficCounters> counters);

    void start(ForwardContext context, Handlers handlers) override;
    void stop_accepting(std::function<void()> done) override;

private:
    asio::io_context &io_;
    pytun::LocalForward spec_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<TrafficCounters> counters_;
    std::shared_ptr<LocalListener> listener_;
};

} // namespace pytun::detail
