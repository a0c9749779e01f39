// SPDX-License-Identifier: MIT
// TunnelRun: one run of a tunnel on an event loop, from start to end: an SSH
// connection, the forwards it carries and the extra sessions they open
// channels on. It starts the forwards once the connection is ready and
// reports "up" when every forward has either started serving or failed, at
// least one serving (one that failed is retried on its own while the others
// serve; the run fails only if none can). It stops gracefully: forwards stop
// accepting, open connections get a grace period, then the connection says
// goodbye. Used by pytun::Tunnel (own thread) and by the manager's
// supervisors (shared loop threads); a restart is a new run. All calls on the
// loop thread.
#pragma once

#include "internal.h"

#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/tunnel.h>

namespace pytun::detail {

class Admission;
class Forward;
struct ForwardKeeps;
class RunStatus;
class SessionPool;
class SshConnection;

class TunnelRun : public std::enable_shared_from_this<TunnelRun> {
public:
    struct Handlers {
        std::function<void(std::uint16_t listen_port)> up;               ///< forwards serve
        std::function<void(std::error_code, const std::string &)> ended; ///< once, after up or not
        std::function<void(std::chrono::microseconds rtt)> probed;        ///< a health probe answered
        /// TunnelOptions::standby, and the bastion refused a reverse listen:
        /// the run keeps its session, holds no port and asks again every
        /// 1-2 s; `up` follows once the bastion grants every refused port.
        /// Unset: a refused listen fails the run, standby or not.
        std::function<void(const std::string &why)> standby;
    };

    /// `status` must have one row per forward of all_forwards(options), and
    /// so must `keeps` (what forwards keep across runs: the caller holds it
    /// from run to run and closes it when the tunnel stops for good).
    TunnelRun(asio::io_context &io, TunnelOptions options, std::shared_ptr<spdlog::logger> log,
              std::shared_ptr<RunStatus> status, std::shared_ptr<ForwardKeeps> keeps, Handlers handlers);
    ~TunnelRun();
    TunnelRun(const TunnelRun &) = delete;
    TunnelRun &operator=(const TunnelRun &) = delete;

    /// Checks the options, then connects; the handlers report the outcome.
    void start();
    /// Graceful stop: the forwards stop accepting, open connections finish
    /// for up to `grace`, then they are closed, the connection disconnects and
    /// everything is freed (forced 500 ms later at most). `done` runs on the
    /// loop thread; `ended` reports Errc::stopped first.
    void stop(std::chrono::milliseconds grace, std::function<void()> done);

    /// The checks that need no network (required settings, ports, forwards).
    static std::error_code check_options(const TunnelOptions &options, std::string &message);

private:
    enum class ForwardState { starting, serving, failed };

    void on_ready();
    void start_forward(std::size_t index);
    void show_keep(std::size_t index);
    void on_forward_ready(std::size_t index, std::uint16_t bound_port);
    void on_forward_failed(std::size_t index, std::error_code ec, const std::string &message);
    void check_started();
    void enter_standby();
    void schedule_retry(std::size_t index);
    void on_connection_failed(std::error_code ec, const std::string &message);
    void on_grace_over();
    void maybe_disconnect();
    void arm_close_deadline();
    void finish(std::error_code ec, const std::string &message);

    asio::io_context &io_;
    TunnelOptions options_;
    std::vector<ForwardSpec> specs_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<RunStatus> status_;
    std::shared_ptr<ForwardKeeps> keeps_;
    Handlers handlers_;
    std::shared_ptr<SshConnection> connection_;
    std::shared_ptr<SessionPool> pool_;
    std::unique_ptr<Admission> admission_;
    std::vector<std::shared_ptr<Forward>> forwards_;  ///< by spec index; null while failed
    std::vector<ForwardState> states_;
    std::vector<std::unique_ptr<asio::steady_timer>> retry_timers_;
    std::vector<std::chrono::milliseconds> retry_delays_;
    std::error_code first_error_;
    std::string first_error_message_;
    bool port_refused_ = false;   ///< this round: the bastion refused a reverse listen
    std::uint64_t round_ = 0;     ///< standby: each retry is a new round; older forwards' calls are stale
    asio::steady_timer standby_timer_;
    std::minstd_rand random_;     ///< jitters the standby's retries
    asio::steady_timer setup_timer_;
    asio::steady_timer grace_timer_;
    asio::steady_timer close_deadline_;
    std::function<void()> stop_done_;
    std::size_t forwards_accepting_ = 0; ///< while stopping: not yet confirmed stopped
    bool up_ = false;
    bool standby_ = false;
    bool ended_ = false;
    bool stopping_ = false;
    bool disconnecting_ = false;
    bool closing_streams_ = false; ///< the close deadline runs
};

} // namespace pytun::detail
