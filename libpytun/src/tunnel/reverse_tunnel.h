// SPDX-License-Identifier: MIT
// ReverseTunnel: the life of one reverse tunnel on an event loop: connect,
// verify the host key, authenticate, ask the bastion to listen, relay every
// forwarded connection, stop. Used by pytun::Tunnel (own thread) and by the
// manager (shared loop threads). All calls on the loop thread.
#pragma once

#include "internal.h"

#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/tunnel.h>

#include "forward/relay.h"
#include "ssh/key_file.h"
#include "ssh/known_hosts.h"

namespace pytun::detail {

class SshSession;
class UserAuth;

class ReverseTunnel : public std::enable_shared_from_this<ReverseTunnel> {
public:
    struct Handlers {
        std::function<void(std::uint16_t listen_port)> up;                 ///< serving
        std::function<void(std::error_code, const std::string &)> ended;   ///< once, after up or not
        std::function<void(std::chrono::microseconds rtt)> probed;          ///< a health probe answered
    };

    ReverseTunnel(asio::io_context &io, TunnelOptions options, std::shared_ptr<spdlog::logger> log,
                  std::shared_ptr<RelayCounters> counters, Handlers handlers);
    ~ReverseTunnel();

    /// Checks the options, then connects; the handlers report the outcome.
    void start();
    /// Graceful stop: cancel the forward (no new connections), let open
    /// connections finish for up to `grace`, then close them, disconnect and
    /// free the session (forced 500 ms later at most). `done` runs on the loop
    /// thread; `ended` reports Errc::stopped first.
    void stop(std::chrono::milliseconds grace, std::function<void()> done);

    /// The checks that need no network (options, key file, known_hosts).
    static std::error_code check_options(const TunnelOptions &options, std::string &message);

private:
    void on_tcp_connected();
    void on_handshake(int rc);
    void on_authenticated(int rc);
    void on_listening(int rc);
    void on_channel(LIBSSH2_CHANNEL *channel);
    void finish(std::error_code ec, const std::string &message);
    void poll_stop(std::function<void()> done);
    void schedule_health_check();
    void run_health_check();

    asio::io_context &io_;
    TunnelOptions options_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<RelayCounters> counters_;
    Handlers handlers_;
    std::shared_ptr<SshSession> session_;
    std::unique_ptr<UserAuth> auth_;
    asio::steady_timer setup_timer_;
    asio::steady_timer stop_timer_;
    asio::steady_timer health_timer_;
    asio::steady_timer probe_deadline_;
    std::chrono::steady_clock::time_point grace_deadline_;
    std::chrono::steady_clock::time_point hard_deadline_;
    bool closing_relays_ = false;
    bool disconnecting_ = false;
    bool cancel_confirmed_ = false;
    KeyFileInfo key_;
    KnownHosts known_hosts_;
    LIBSSH2_LISTENER *listener_ = nullptr;
    int bound_port_ = 0;
    std::uint64_t next_connection_id_ = 0;
    bool up_ = false;
    bool ended_ = false;
    bool stopping_ = false;
};

} // namespace pytun::detail
