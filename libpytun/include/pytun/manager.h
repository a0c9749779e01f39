// SPDX-License-Identifier: MIT
// TunnelManager: many reverse tunnels in one process, on a small pool of
// event-loop threads; restarts failed tunnels with backoff, watches their
// health, reloads a new set without disturbing the unchanged ones, and keeps
// a status snapshot that never waits on the network.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <pytun/export.h>
#include <pytun/subscription.h>
#include <pytun/tunnel.h>

namespace pytun {

enum class ManagedState {
    connecting,   ///< a start attempt is under way
    up,           ///< serving, and the local service answers
    degraded,     ///< serving, but the local service does not answer
    backing_off,  ///< the last attempt failed; the next is at next_attempt
    stopped,      ///< stopped on request (or not started)
    standby,      ///< TunnelOptions::standby: the bastion refused the port (another connector holds it); retrying
};

/// Human name of a state ("up", "backing off", ...).
PYTUN_EXPORT const char *to_string(ManagedState state);

/// A tunnel as the manager sees it: a copy, safe to keep.
struct TunnelStatus {
    std::string name;
    std::string config_path;             ///< TunnelOptions::config_path
    std::string server_host;
    std::uint16_t server_port = 0;
    std::uint16_t listen_port = 0;       ///< of the first forward (the reverse tunnel's on the bastion), once up
    std::string remote_host;             ///< empty: the tunnel has no reverse tunnel (forwards only)
    std::uint16_t remote_port = 0;       ///< 0 without remote_host

    ManagedState state = ManagedState::stopped;
    std::chrono::system_clock::time_point state_since;
    std::error_code last_error;          ///< of the last failed attempt or lost session
    std::string last_error_message;
    std::chrono::system_clock::time_point last_error_time; ///< when last_error happened (epoch: never)
    bool port_held = false;              ///< the bastion still holds the port (e.g. for a previous session)
    std::chrono::system_clock::time_point next_attempt; ///< when backing_off
    std::uint64_t takeovers = 0;         ///< times this standby bound the port the other connector held

    std::uint64_t started_times = 0;     ///< start attempts so far (compat: started_times)
    std::chrono::system_clock::time_point last_start;   ///< of the last attempt

    bool service_checked = false;        ///< the local service has been probed at least once
    bool service_reachable = false;
    std::string service_error;
    std::chrono::microseconds probe_rtt{-1}; ///< last end-to-end SSH probe; -1 before the first

    TunnelStats traffic;                 ///< of the current run, every forward summed
    std::vector<ForwardStatus> forwards; ///< of the current run, in all_forwards() order
    unsigned sessions = 0;               ///< SSH connections to the bastion set up now (extra ones carry channel opens)

    /// The bastion ("host:port") that serves, or served last; empty before
    /// the first time up. With a failover list it may be a later entry than
    /// server_host:server_port (which stay the first, as configured).
    std::string bastion;
    std::chrono::system_clock::time_point bastion_since; ///< when `bastion` began serving
    std::vector<std::string> bastions;   ///< the failover list in order ("host:port"); empty: one bastion
};

/// A state change, as published to subscribers.
struct TunnelEvent {
    std::string name;
    ManagedState from = ManagedState::stopped;
    ManagedState to = ManagedState::stopped;
    std::error_code error;               ///< why, when the change is a failure
    std::string message;
    std::chrono::system_clock::time_point when;
    /// A standby bound the port (to is up or degraded): how long it waited,
    /// over every session it had meanwhile. 0 for any other change.
    std::chrono::milliseconds standby_for{0};
    /// Set when the serving bastion changed ("host:port" each; from and to
    /// are then both `up` or `degraded`): failed over from bastion_from to a
    /// later one, or returned to the first.
    std::string bastion_from, bastion_to;
    bool bastion_returned = false;       ///< bastion_to is the first of the list (a failback)
};

struct ManagerOptions {
    unsigned threads = 0;                                  ///< event-loop threads; 0: one per core
    std::chrono::milliseconds backoff_initial{1000};       ///< first retry (jittered down to half)
    std::chrono::milliseconds backoff_max{60000};          ///< the doubling stops here
    std::chrono::milliseconds stable_after{30000};         ///< up this long resets the backoff
    std::chrono::milliseconds port_held_retry_max{5000};   ///< retry cap while the bastion holds the port
    std::chrono::milliseconds grace_period{5000};          ///< for open connections when stopping
    /// While a tunnel backs off because its bastion could not be reached, a
    /// TCP connect to the bastion's SSH port this often (jittered; shared by
    /// every tunnel of that bastion) ends the wait as soon as it answers.
    /// 0: off (wait for the backoff only; failback, TunnelOptions::
    /// failback_after, still probes the first bastion, every 300 ms).
    std::chrono::milliseconds reachability_probe{300};
};

/// What apply() did, by tunnel name.
struct ApplyResult {
    std::error_code error;               ///< invalid set: nothing was changed
    std::string message;
    std::vector<std::string> started, restarted, stopped, kept;
};

class PYTUN_EXPORT TunnelManager {
public:
    explicit TunnelManager(ManagerOptions options);
    TunnelManager();
    ~TunnelManager();
    TunnelManager(const TunnelManager &) = delete;
    TunnelManager &operator=(const TunnelManager &) = delete;

    /// Make the running set equal to `tunnels` (names must be unique):
    /// unchanged tunnels keep running with their connections, changed ones
    /// restart, missing ones stop (gracefully), new ones start. Returns at
    /// once; progress shows in status() and events.
    ApplyResult apply(std::vector<TunnelOptions> tunnels);

    /// Stop every tunnel: cancel the forwards, let open connections finish
    /// within the grace period, then close. Returns when done.
    void stop();

    /// A snapshot; never waits on the network.
    std::vector<TunnelStatus> status() const;

    /// `handler` is called on the tunnel's event-loop thread for every state
    /// change, never from inside subscribe(). It must not block.
    Subscription subscribe(std::function<void(const TunnelEvent &)> handler);

    std::size_t thread_count() const;

    /// True when every event-loop thread runs a posted handler within
    /// `timeout`. A loop that does not is stuck, and so are its tunnels: a
    /// service manager's watchdog should then restart the process.
    bool responsive(std::chrono::milliseconds timeout) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
