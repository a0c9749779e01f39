// SPDX-License-Identifier: MIT
// systemd notifications through libsystemd's sd_notify (optional feature).
#include "service_notify.h"

#include <algorithm>
#include <cstdlib>

#ifdef PYTUN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace pytun::cli {

ServiceNotifier::ServiceNotifier()
{
#ifdef PYTUN_HAVE_SYSTEMD
    enabled_ = std::getenv("NOTIFY_SOCKET") != nullptr;
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        watchdog_interval_ = std::chrono::microseconds(usec);
#endif
}

void ServiceNotifier::send([[maybe_unused]] const std::string &state)
{
#ifdef PYTUN_HAVE_SYSTEMD
    if (enabled_)
        sd_notify(0, state.c_str());
#endif
}

void ServiceNotifier::ready(const std::string &status) { send("READY=1\nSTATUS=" + status); }
void ServiceNotifier::status(const std::string &status) { send("STATUS=" + status); }
void ServiceNotifier::reloading() { send("RELOADING=1"); }
void ServiceNotifier::stopping() { send("STOPPING=1"); }

void ServiceNotifier::watchdog()
{
    if (watchdog_interval_.count() <= 0)
        return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_watchdog_ >= watchdog_interval_ / 2) {
        last_watchdog_ = now;
        send("WATCHDOG=1");
    }
}


std::chrono::milliseconds ServiceNotifier::tick() const
{
    using namespace std::chrono;
    milliseconds t(1000);
    if (watchdog_interval_.count() > 0)
        t = std::min(t, std::max(milliseconds(10), duration_cast<milliseconds>(watchdog_interval_ / 4)));
    return t;
}

} // namespace pytun::cli
