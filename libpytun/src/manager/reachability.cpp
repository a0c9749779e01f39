// SPDX-License-Identifier: MIT
// ReachabilityProbes: a shared TCP connect per bastion address while tunnels wait.
#include "manager/reachability.h"

#include <vector>

#include "loop/connect.h"

namespace pytun::detail {
namespace {

// A probe that gets no answer gives up after this (a bastion behind a black
// hole); the next one starts an interval later.
constexpr std::chrono::milliseconds k_probe_timeout{1000};

} // namespace

struct ReachabilityProbes::Probe {
    Key key;
    std::map<Id, Result> results;
    asio::steady_timer timer;
    std::unique_ptr<asio::ip::tcp::socket> socket;

    Probe(asio::io_context &io, Key k) : key(std::move(k)), timer(io) {}
};

ReachabilityProbes::ReachabilityProbes(asio::io_context &io, std::chrono::milliseconds interval)
    : io_(io), interval_(interval)
{
}

ReachabilityProbes::~ReachabilityProbes() = default;

ReachabilityProbes::Id ReachabilityProbes::watch(const std::string &host, std::uint16_t port, Result result)
{
    std::shared_ptr<Probe> fresh;
    Id id = 0;
    {
        std::lock_guard lock(mutex_);
        id = next_id_++;
        Key key{host, port};
        watchers_[id] = key;
        auto &probe = probes_[key];
        if (!probe) {
            probe = std::make_shared<Probe>(io_, key);
            fresh = probe;
        }
        probe->results[id] = std::move(result);
    }
    if (fresh)
        asio::post(io_, [this, fresh] { run(fresh); });
    return id;
}

void ReachabilityProbes::unwatch(Id id)
{
    std::lock_guard lock(mutex_);
    auto it = watchers_.find(id);
    if (it == watchers_.end())
        return;
    if (auto probe = probes_.find(it->second); probe != probes_.end())
        probe->second->results.erase(id);
    watchers_.erase(it);
}

std::uint64_t ReachabilityProbes::probes_sent(const std::string &host, std::uint16_t port) const
{
    std::lock_guard lock(mutex_);
    auto it = sent_.find(Key{host, port});
    return it == sent_.end() ? 0 : it->second;
}

void ReachabilityProbes::schedule(const std::shared_ptr<Probe> &probe, std::chrono::milliseconds delay)
{
    probe->timer.expires_after(delay);
    probe->timer.async_wait([this, probe](const asio::error_code &ec) {
        if (!ec)
            run(probe);
    });
}

void ReachabilityProbes::run(const std::shared_ptr<Probe> &probe)
{
    {
        std::lock_guard lock(mutex_);
        if (probe->results.empty()) {
            // Everyone left while the probe waited: stop it (unless a new
            // probe of the address has replaced it already).
            if (auto it = probes_.find(probe->key); it != probes_.end() && it->second == probe)
                probes_.erase(it);
            return;
        }
        ++sent_[probe->key];
    }
    probe->socket = std::make_unique<asio::ip::tcp::socket>(io_);
    connect_with_deadline(*probe->socket, probe->key.first, probe->key.second, k_probe_timeout,
                          [this, probe](const ConnectOutcome &outcome) {
                              asio::error_code ignored;
                              probe->socket->close(ignored); // at once: no banner read, no login
                              report(probe, static_cast<bool>(outcome));
                          });
}

void ReachabilityProbes::report(const std::shared_ptr<Probe> &probe, bool reachable)
{
    std::vector<Result> results;
    std::chrono::milliseconds delay{};
    {
        std::lock_guard lock(mutex_);
        for (const auto &[id, result] : probe->results)
            results.push_back(result);
        std::uniform_int_distribution<long long> jitter(interval_.count() * 3 / 4, interval_.count() * 5 / 4);
        delay = std::chrono::milliseconds(jitter(random_));
    }
    for (const auto &result : results)
        result(reachable);
    // run() stops the probe if nobody waits any more when the timer fires.
    schedule(probe, delay);
}

} // namespace pytun::detail
