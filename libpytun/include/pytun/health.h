// SPDX-License-Identifier: MIT
// HealthMonitor: is each tunnel's local service (remote_host:remote_port)
// reachable? Probes run on the monitor's own thread, so a slow or dead
// service never delays a tunnel or a status request.
//
// The other half of health, whether the SSH session to the bastion is alive,
// runs inside each tunnel on its own thread (it must: a libssh2 session has
// one owner) with the same interval: every keep_alive seconds an SSH
// keepalive (want_reply=0) and an end-to-end probe whose reply is consumed
// (a session channel opened and closed), plus TCP keepalive and
// TCP_USER_TIMEOUT on the SSH socket. A silent bastion is declared dead
// within keep_alive + 4 s.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <pytun/export.h>
#include <pytun/subscription.h>

namespace pytun {

/// The outcome of one TCP connect to a local service.
struct ServiceHealth {
    bool reachable = false;
    std::chrono::microseconds connect_time{0};   ///< how long the connect took
    std::string error;                           ///< why not, when unreachable
    /// The probe could not be made (pytun was out of file descriptors): it
    /// says nothing about the service, and the monitor keeps the last result.
    bool inconclusive = false;
    std::chrono::system_clock::time_point checked_at;
};

class PYTUN_EXPORT HealthMonitor {
public:
    struct Options {
        std::chrono::milliseconds timeout{2000};  ///< per probe
    };

    explicit HealthMonitor(Options options);
    HealthMonitor();
    ~HealthMonitor();
    HealthMonitor(const HealthMonitor &) = delete;
    HealthMonitor &operator=(const HealthMonitor &) = delete;

    /// Probe host:port now and then every `interval` under `name` (replaces
    /// an earlier watch of that name).
    void watch(const std::string &name, const std::string &host, std::uint16_t port,
               std::chrono::milliseconds interval);
    void unwatch(const std::string &name);
    /// The last result for `name`; empty before the first probe finished.
    std::optional<ServiceHealth> service(const std::string &name) const;

    /// Called on the monitor's thread after every probe whose result differs
    /// from the previous one (reachable or not), and after the first probe of
    /// every watch() (also when it replaced a watch of the same name and the
    /// result did not change). Must not block.
    Subscription on_change(std::function<void(const std::string &name, const ServiceHealth &)> handler);

    /// One blocking probe (used by `pytun --test_connections`).
    static ServiceHealth probe(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
