// SPDX-License-Identifier: MIT
// ReachabilityProbes: one cheap TCP probe per bastion address (host:port),
// shared by every tunnel of a manager that waits for that bastion.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include <asio.hpp>

namespace pytun::detail {

/// While at least one watcher waits for a bastion, a plain TCP connect to its
/// SSH port (closed at once: no banner, no login, nothing in the bastion's
/// auth log) runs every `interval` (jittered ±25 %, so that the probes of many
/// bastions do not run in lockstep); every result goes to every watcher of
/// that address. The probe stops when its last watcher leaves. The probes run
/// on one loop (`io`); watch() and unwatch() may be called from any thread,
/// and results arrive on that loop's thread.
class ReachabilityProbes {
public:
    using Id = std::uint64_t;
    using Result = std::function<void(bool reachable)>;

    ReachabilityProbes(asio::io_context &io, std::chrono::milliseconds interval);
    ~ReachabilityProbes();
    ReachabilityProbes(const ReachabilityProbes &) = delete;
    ReachabilityProbes &operator=(const ReachabilityProbes &) = delete;

    /// Start receiving the probe results of host:port (the first probe runs
    /// at once when no probe of that address runs yet). Never 0.
    Id watch(const std::string &host, std::uint16_t port, Result result);
    /// Stop receiving (idempotent; 0 is ignored). A result may still be on
    /// its way: the watcher ignores what arrives after it left.
    void unwatch(Id id);
    /// Probes of this address started so far (for tests and logs).
    std::uint64_t probes_sent(const std::string &host, std::uint16_t port) const;

private:
    struct Probe;
    using Key = std::pair<std::string, std::uint16_t>;

    void schedule(const std::shared_ptr<Probe> &probe, std::chrono::milliseconds delay);
    void run(const std::shared_ptr<Probe> &probe);
    void report(const std::shared_ptr<Probe> &probe, bool reachable);

    asio::io_context &io_;
    const std::chrono::milliseconds interval_;
    mutable std::mutex mutex_; ///< guards everything below
    std::map<Key, std::shared_ptr<Probe>> probes_;
    std::map<Id, Key> watchers_;
    std::map<Key, std::uint64_t> sent_;
    Id next_id_ = 1;
    std::minstd_rand random_{7717};
};

} // namespace pytun::detail
