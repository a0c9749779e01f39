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

class ReachabilityProbes;
struct ForwardKeeps;
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
    /// `probes` (may be null: no probing) outlives the supervisor's work on the loop.
    Supervisor(asio::io_context &io, TunnelOptions options, const ManagerOptions &manager, StatusBoard &board,
               EventList &events, std::uint64_t generation, ReachabilityProbes *probes);
    ~Supervisor();

    // All on the loop thread.
    void start();
    /// Stop the tunnel (open connections get the grace period); `done` after.
    void stop(std::function<void()> done);
    /// The local service's reachability changed (from the HealthMonitor).
    void service_health(bool reachable, const std::string &error);

private:
    static constexpr std::size_t k_none = static_cast<std::size_t>(-1);

    std::shared_ptr<TunnelRun> make_run(std::size_t bastion, std::shared_ptr<RunStatus> status, std::uint64_t id);
    void attempt();
    void on_up(std::uint64_t run, std::uint16_t port);
    void on_standby(std::uint64_t run, const std::string &why);
    void on_ended(std::uint64_t run, std::error_code ec, const std::string &message);
    void set_state(ManagedState state, std::error_code ec = {}, const std::string &message = {},
                   std::chrono::milliseconds standby_for = {});
    /// The bastion at this index of the list serves: status, and an event when it changed.
    void serving_on(std::size_t bastion);
    /// Whether a failure means the bastion could not be reached (so that its
    /// answering again is worth an attempt before the backoff ends).
    bool unreachable(std::error_code ec, bool was_up) const;
    /// While backing off: attempt at once when a bastion that could not be reached answers.
    void wait_for_bastions();
    /// Neither proxy nor jump host: the reachability probe can see the bastion.
    bool direct_route() const;
    void stop_waiting_for_bastion();
    // Failback (a later bastion serves): probe the first, and once it has
    // answered for failback_after, bring a second run up there, then retire
    // the serving one.
    void watch_preferred();
    void stop_failback();
    void start_failback();
    void on_failback_up(std::uint16_t port);
    void on_failback_failed(std::error_code ec, const std::string &message);

    asio::io_context &io_;
    TunnelOptions options_;
    ManagerOptions manager_;
    StatusBoard &board_;
    EventList &events_;
    std::uint64_t generation_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<TunnelRun> tunnel_;
    std::uint64_t run_id_ = 0;      ///< of tunnel_: events of other runs are told apart by it
    std::uint64_t next_run_id_ = 0;
    /// What forwards keep from run to run (the VPN capture); closed when the
    /// tunnel stops for good.
    std::shared_ptr<ForwardKeeps> keeps_;
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
    ReachabilityProbes *probes_;
    std::vector<std::uint64_t> probe_watches_; ///< while backing off for unreachable bastions
    std::uint64_t probe_generation_ = 0; ///< tells a late probe result from the current wait's
    bool woken_ = false;           ///< the current attempt was started by the probe, not the timer

    std::vector<Bastion> bastions_;  ///< all_bastions(options_)
    std::vector<bool> reach_failed_; ///< per bastion, this round: failed for want of reaching it
    std::size_t current_ = 0;        ///< the bastion of the current or next attempt
    std::size_t serving_ = k_none;   ///< the bastion that serves or served last
    std::uint64_t failback_watch_ = 0;
    std::uint64_t failback_generation_ = 0;
    std::optional<std::chrono::steady_clock::time_point> answering_since_; ///< the first bastion, continuously
    std::shared_ptr<TunnelRun> candidate_; ///< the run on the first bastion while failing back
    std::shared_ptr<RunStatus> candidate_status_;
    std::uint64_t candidate_id_ = 0;
    std::vector<std::shared_ptr<TunnelRun>> retiring_; ///< replaced by a failback, in their grace period
};

} // namespace pytun::detail
