// SPDX-License-Identifier: MIT
// systemd service notifications (READY, STATUS, WATCHDOG, RELOADING, STOPPING);
// no-ops when pytun is not run by systemd ($NOTIFY_SOCKET unset).
#pragma once

#include <chrono>
#include <string>

namespace pytun::cli {

class ServiceNotifier {
public:
    ServiceNotifier();
    void ready(const std::string &status);
    void status(const std::string &status);
    void reloading();
    void stopping();
    /// WATCHDOG=1 when the watchdog is on and half its interval has passed.
    void watchdog();
    bool enabled() const { return enabled_; }
    /// How often the main loop should call watchdog(): at most 1 s.
    std::chrono::milliseconds tick() const;

private:
    void send(const std::string &state);
    bool enabled_ = false;
    std::string socket_path_;
    std::chrono::microseconds watchdog_interval_{0};
    std::chrono::steady_clock::time_point last_watchdog_{};
};

} // namespace pytun::cli
