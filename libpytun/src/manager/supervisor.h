// SPDX-License-Identifier: MIT
// Supervisor: keeps one tunnel running on its event loop: start attempts,
// exponential backoff with jitter, the degraded state, graceful stop. It
// publishes every change to the status board and to subscribers.
#pragma once

#include "internal.h"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/manager.h>

#include "util/callback_list.h"

namespace pytun::detail {

class RunStatus;
class TunnelRun;

/// The manager's status snapshot: written by supervisors, read by anyone.
/// Rows carry the generation of the supervisor that owns them, so a
/// supervisor that is being replaced cannot overwrite its successor's row.
class StatusBoard {
public:
    void put(const std::string &name, std::uint64_t generation, TunnelStatus status);
    void update(const std::string &name, std::uint64_t generation, const std::function<void(TunnelStatus &)> &change);
    /// The current run's forwards and counters, read at snapshot time.
    void set_run(const std::string &name, std::uint64_t generation, std::shared_ptr<RunStatus> run);
    void remove(const std::string &name, std::uint64_t generation);
    std::vector<TunnelStatus> snapshot() const;

private:
    struct Row {
        std::uint64_t generation = 0;
        TunnelStatus status;
        std::shared_ptr<RunStatus> run;
    };
    mutable std::mutex mutex_;
    std::map<std::string, Row> rows_;
};

using EventList = CallbackList<const TunnelEvent &>;

class Supervisor : public std::enable_shared_from_this<Supervisor> {
public:
    Supervisor(asio::io_context &io, TunnelOptions options, const ManagerOptions &manager, StatusBoard &board,
               EventList &events, std::uint64_t generation);
    ~Supervisor();

    // All on the loop thread.
    void start();
    /// Stop the tunnel (open connections get the grace period); `done` after.
    void stop(std::function<void()> done);
    /// The local service's reachability changed (from the HealthMonitor).
    void service_health(bool reachable, const std::string &error);

private:
    void attempt();
    void on_up(std::uint16_t port);
    void on_standby(const std::string &why);
    void on_ended(std::error_code ec, const std::string &message);
    void set_state(ManagedState state, std::error_code ec = {}, const std::string &message = {},
                   std::chrono::milliseconds standby_for = {});

    asio::io_context &io_;
    TunnelOptions options_;
    ManagerOptions manager_;
    StatusBoard &board_;
    EventList &events_;
    std::uint64_t generation_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<TunnelRun> tunnel_;
    asio::steady_timer retry_timer_;
    std::chrono::milliseconds backoff_;
    std::chrono::steady_clock::time_point up_since_;  ///< or in standby since: both are a working session
    /// First entered standby and not served since (across runs): binding the
    /// port then is a takeover.
    std::optional<std::chrono::steady_clock::time_point> standby_since_;
    std::minstd_rand random_;
    ManagedState state_ = ManagedState::stopped;
    bool had_session_ = false;      ///< up at least once: a refused listen may be our old session's port
    unsigned refused_in_row_ = 0;   ///< consecutive refused listens
    bool service_reachable_ = true;
    std::string service_error_;
    bool stopping_ = false;
};

} // namespace pytun::detail
