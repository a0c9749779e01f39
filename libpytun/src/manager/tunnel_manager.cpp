// SPDX-License-Identifier: MIT
// TunnelManager: tunnels placed on a pool of event loops, each kept alive by a
// Supervisor; reload by difference; a HealthMonitor for the local services.
#include <pytun/manager.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <pytun/error.h>
#include <pytun/health.h>

#include "log.h"
#include "loop/event_loop.h"
#include "manager/reachability.h"
#include "manager/supervisor.h"
#include "util/fd_budget.h"

namespace pytun {

const char *to_string(ManagedState state)
{
    switch (state) {
    case ManagedState::connecting: return "connecting";
    case ManagedState::up: return "up";
    case ManagedState::degraded: return "degraded";
    case ManagedState::backing_off: return "backing off";
    case ManagedState::stopped: return "stopped";
    case ManagedState::standby: return "standby";
    }
    return "unknown";
}

namespace {

// Local services are probed at the tunnel's health interval (30 s default).
std::chrono::milliseconds service_interval(const TunnelOptions &options)
{
    return options.keep_alive.count() > 0 ? std::chrono::milliseconds(options.keep_alive)
                                          : std::chrono::milliseconds(30000);
}

} // namespace

struct TunnelManager::Impl {
    ManagerOptions options;
    std::vector<std::unique_ptr<detail::EventLoop>> loops;
    std::vector<std::size_t> load; ///< tunnels per loop
    detail::StatusBoard board;
    detail::EventList events;
    std::shared_ptr<spdlog::logger> log = detail::make_logger("pytun");

    struct Entry {
        TunnelOptions options;
        std::shared_ptr<detail::Supervisor> supervisor;
        std::size_t loop = 0;
        std::uint64_t generation = 0;
    };
    /// The bastions' reachability probes, on the first loop; freed after the
    /// loops stop and before they are destroyed (its sockets belong to one).
    std::unique_ptr<detail::ReachabilityProbes> probes;
    std::mutex mutex; ///< guards `entries` and `generation`
    std::map<std::string, Entry> entries;
    std::uint64_t generation = 0;

    // Declared last: destroyed first, so its thread stops before the
    // supervisors it posts to go away.
    HealthMonitor health;
    Subscription health_subscription;

    asio::io_context &io(const Entry &entry) { return loops[entry.loop]->io(); }

    Entry make_entry(TunnelOptions tunnel)
    {
        Entry entry;
        entry.loop = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
        ++load[entry.loop];
        entry.generation = ++generation;
        entry.options = std::move(tunnel);
        entry.supervisor = std::make_shared<detail::Supervisor>(loops[entry.loop]->io(), entry.options, options,
                                                                board, events, entry.generation, probes.get());
        return entry;
    }

    /// Stop `entry` on its loop; `then` runs on that loop afterwards.
    void stop_entry(const Entry &entry, bool remove_row, std::function<void()> then)
    {
        auto supervisor = entry.supervisor;
        const std::string name = entry.options.name;
        const std::uint64_t gen = entry.generation;
        asio::post(io(entry), [this, supervisor, name, gen, remove_row, then] {
            supervisor->stop([this, name, gen, remove_row, then] {
                if (remove_row)
                    board.remove(name, gen);
                if (then)
                    then();
            });
        });
    }
};

TunnelManager::TunnelManager(ManagerOptions options) : impl_(std::make_unique<Impl>())
{
    Impl &d = *impl_;
    d.options = options;
    unsigned threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < threads; ++i)
        d.loops.push_back(std::make_unique<detail::EventLoop>());
    d.load.assign(threads, 0);
    // Failback probes the first bastion even when the backoff's probe is off.
    const auto interval = options.reachability_probe.count() > 0 ? options.reachability_probe
                                                                 : ManagerOptions{}.reachability_probe;
    d.probes = std::make_unique<detail::ReachabilityProbes>(d.loops.front()->io(), interval);
    d.health_subscription = d.health.on_change([&d](const std::string &name, const ServiceHealth &health) {
        std::lock_guard lock(d.mutex);
        auto it = d.entries.find(name);
        if (it == d.entries.end())
            return;
        auto supervisor = it->second.supervisor;
        asio::post(d.io(it->second), [supervisor, health] { supervisor->service_health(health.reachable, health.error); });
    });
}

TunnelManager::TunnelManager() : TunnelManager(ManagerOptions{}) {}

TunnelManager::~TunnelManager()
{
    stop();
}

ApplyResult TunnelManager::apply(std::vector<TunnelOptions> tunnels)
{
    Impl &d = *impl_;
    ApplyResult result;
    std::set<std::string> names;
    for (const auto &tunnel : tunnels) {
        if (tunnel.name.empty()) {
            result.error = Errc::invalid_options;
            result.message = "every tunnel needs a name";
            return result;
        }
        if (!names.insert(tunnel.name).second) {
            result.error = Errc::invalid_options;
            result.message = "two tunnels are named '" + tunnel.name + "'";
            return result;
        }
    }

    std::lock_guard lock(d.mutex);
    if (d.loops.empty()) {
        result.error = Errc::stopped;
        result.message = "the manager has been stopped";
        return result;
    }
    detail::FdBudget::instance().set_tunnels(tunnels.size());
    for (auto it = d.entries.begin(); it != d.entries.end();) {
        if (names.count(it->first)) {
            ++it;
            continue;
        }
        result.stopped.push_back(it->first);
        d.health.unwatch(it->first);
        --d.load[it->second.loop];
        d.stop_entry(it->second, true, nullptr);
        it = d.entries.erase(it);
    }
    for (auto &tunnel : tunnels) {
        auto it = d.entries.find(tunnel.name);
        if (it != d.entries.end() && it->second.options == tunnel) {
            result.kept.push_back(tunnel.name);
            continue;
        }
        const std::string name = tunnel.name;
        // The local service of the original connector's reverse tunnel; a
        // tunnel of other forwards only has clients here.
        if (tunnel.remote_host.empty())
            d.health.unwatch(name);
        else
            d.health.watch(name, tunnel.remote_host, tunnel.remote_port, service_interval(tunnel));
        if (it != d.entries.end()) {
            // Changed: the old session must give the bastion port back before
            // the new one asks for it.
            result.restarted.push_back(name);
            Impl::Entry old = it->second;
            --d.load[old.loop];
            Impl::Entry fresh = d.make_entry(std::move(tunnel));
            auto supervisor = fresh.supervisor;
            asio::io_context &fresh_io = d.io(fresh);
            // The successor starts from what is known about the same local
            // service (it may be down right now); the new watch's first probe
            // confirms or corrects it. Posted before start(), so it comes first.
            const auto known = d.health.service(name);
            if (known && old.options.remote_host == fresh.options.remote_host &&
                old.options.remote_port == fresh.options.remote_port)
                asio::post(fresh_io, [supervisor, health = *known] {
                    supervisor->service_health(health.reachable, health.error);
                });
            d.stop_entry(old, false, [supervisor, &fresh_io] {
                asio::post(fresh_io, [supervisor] { supervisor->start(); });
            });
            it->second = std::move(fresh);
        } else {
            result.started.push_back(name);
            Impl::Entry fresh = d.make_entry(std::move(tunnel));
            auto supervisor = fresh.supervisor;
            asio::post(d.io(fresh), [supervisor] { supervisor->start(); });
            d.entries.emplace(name, std::move(fresh));
        }
    }
    return result;
}

void TunnelManager::stop()
{
    Impl &d = *impl_;
    std::unique_lock lock(d.mutex);
    if (d.loops.empty())
        return;
    auto state = std::make_shared<std::pair<std::mutex, std::condition_variable>>();
    auto remaining = std::make_shared<std::size_t>(d.entries.size());
    for (auto &[name, entry] : d.entries) {
        d.health.unwatch(name);
        d.stop_entry(entry, false, [state, remaining] {
            std::lock_guard guard(state->first);
            --*remaining;
            state->second.notify_all();
        });
    }
    {
        // Each tunnel stops within its grace period plus the close deadline.
        std::unique_lock wait(state->first);
        state->second.wait_for(wait, d.options.grace_period + std::chrono::seconds(2),
                               [&] { return *remaining == 0; });
    }
    for (auto &loop : d.loops)
        loop->stop();
    d.entries.clear(); // supervisors and their tunnels are freed on this thread, loops idle
    d.probes.reset();
    d.loops.clear();
}

std::vector<TunnelStatus> TunnelManager::status() const
{
    return impl_->board.snapshot();
}

Subscription TunnelManager::subscribe(std::function<void(const TunnelEvent &)> handler)
{
    return impl_->events.add(std::move(handler));
}

std::size_t TunnelManager::thread_count() const
{
    return impl_->loops.size();
}

bool TunnelManager::responsive(std::chrono::milliseconds timeout) const
{
    Impl &d = *impl_;
    struct Answers {
        std::mutex mutex;
        std::condition_variable arrived;
        std::size_t count = 0;
    };
    auto answers = std::make_shared<Answers>();
    std::size_t loops = 0;
    {
        std::lock_guard lock(d.mutex);
        for (auto &loop : d.loops) {
            asio::post(loop->io(), [answers] {
                std::lock_guard guard(answers->mutex);
                ++answers->count;
                answers->arrived.notify_all();
            });
            ++loops;
        }
    }
    if (loops == 0)
        return false; // stopped
    std::unique_lock wait(answers->mutex);
    return answers->arrived.wait_for(wait, timeout, [&] { return answers->count == loops; });
}

} // namespace pytun
