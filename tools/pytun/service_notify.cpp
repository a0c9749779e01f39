// SPDX-License-Identifier: MIT
// systemd service notifications, spoken directly: the notify protocol is one
// datagram of "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET,
// which systemd documents as stable for reimplementation (sd_notify(3),
// "Notes"). Doing it here instead of linking libsystemd keeps libgcrypt,
// liblz4, liblzma, libzstd and libcap out of a process that needs none of
// them (about 0.9 MiB of idle RSS, docs/benchmarks.md).
#include "service_notify.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace pytun::cli {

namespace {

/// $WATCHDOG_USEC when the watchdog is meant for this process (systemd sets
/// $WATCHDOG_PID to the main PID; a child that inherited it must not answer).
std::chrono::microseconds watchdog_from_environment()
{
    const char *usec = std::getenv("WATCHDOG_USEC");
    if (usec == nullptr)
        return std::chrono::microseconds(0);
    if (const char *pid = std::getenv("WATCHDOG_PID"); pid != nullptr && std::atol(pid) != ::getpid())
        return std::chrono::microseconds(0);
    char *end = nullptr;
    unsigned long long value = std::strtoull(usec, &end, 10);
    if (end == usec || *end != '\0')
        return std::chrono::microseconds(0);
    return std::chrono::microseconds(value);
}

} // namespace

ServiceNotifier::ServiceNotifier()
{
    const char *path = std::getenv("NOTIFY_SOCKET");
    // A path ("/run/...") or an abstract name ("@..."); anything else (e.g.
    // "vsock:" for VMs) is not a socket a service on this host can reach.
    if (path != nullptr && (path[0] == '/' || path[0] == '@') && std::strlen(path) < sizeof(sockaddr_un::sun_path)) {
        socket_path_ = path;
        enabled_ = true;
    }
    watchdog_interval_ = watchdog_from_environment();
}

void ServiceNotifier::send(const std::string &state)
{
    if (!enabled_)
        return;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0';  // abstract namespace: the name is not NUL-terminated
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    // Best effort, as sd_notify: a notification that cannot be delivered must
    // never stop the tunnels; systemd notices a missing READY or WATCHDOG itself.
    (void)::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr *>(&addr), len);
    ::close(fd);
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
