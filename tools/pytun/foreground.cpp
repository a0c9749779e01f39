// SPDX-License-Identifier: MIT
// What the foreground commands (pytun forward, pytun vpn) share: the -r
// argument, and running one tunnel until a signal or an error no retry can
// mend, with systemd notifications.
#include "commands.h"

#include <pwd.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>
#include <iostream>
#include <mutex>

#include <pytun/error.h>
#include <pytun/log.h>
#include <pytun/manager.h>
#include <pytun/resources.h>

#include "service_notify.h"

namespace pytun::cli {
namespace {

// Errors a retry cannot mend: the command says why and exits 1.
bool is_permanent(const std::error_code &ec)
{
    if (ec.category() != error_category())
        return false;
    switch (static_cast<Errc>(ec.value())) {
    case Errc::invalid_options:
    case Errc::host_key_unknown:
    case Errc::host_key_changed:
    case Errc::host_key_revoked:
    case Errc::known_hosts_unreadable:
    case Errc::key_file_unreadable:
    case Errc::key_encrypted:
    case Errc::key_unsupported:
    case Errc::rsa_key_refused:
    case Errc::key_not_authorized:
    case Errc::local_port_unavailable: // every forward: one that fails beside others is retried
    case Errc::proxy_auth_failed:
    case Errc::capture_failed: // no privileges, no nft/iptables, rules the kernel refuses
        return true;
    default:
        return false;
    }
}

std::string current_user()
{
    if (const passwd *pw = getpwuid(geteuid()))
        return pw->pw_name;
    return "root";
}

bool serving(ManagedState s)
{
    return s == ManagedState::up || s == ManagedState::degraded;
}

} // namespace

std::string host_port(const std::string &host, std::uint16_t port)
{
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// [USER@]HOST[:PORT]; HOST a name, an IPv4 address, an [IPv6] address, or a
// bare IPv6 address (then without a port, as for ssh).
bool parse_remote(const std::string &text, TunnelOptions &o, std::string &error)
{
    const std::string form = "-r '" + text + "': expected [USER@]HOST[:PORT]";
    std::string rest = text;
    o.username = current_user();
    if (auto at = rest.rfind('@'); at != std::string::npos) {
        o.username = rest.substr(0, at);
        rest = rest.substr(at + 1);
    }
    std::string port;
    bool has_port = false;
    if (!rest.empty() && rest[0] == '[') {
        const auto close = rest.find(']');
        if (close == std::string::npos) {
            error = form + " ('[' without ']')";
            return false;
        }
        o.server_host = rest.substr(1, close - 1);
        if (close + 1 < rest.size()) {
            if (rest[close + 1] != ':') {
                error = form + " (':PORT' after ']')";
                return false;
            }
            port = rest.substr(close + 2);
            has_port = true;
        }
    } else if (std::count(rest.begin(), rest.end(), ':') == 1) {
        const auto colon = rest.find(':');
        o.server_host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        has_port = true;
    } else {
        o.server_host = rest;
    }
    if (o.server_host.empty() || o.username.empty()) {
        error = form;
        return false;
    }
    if (has_port) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
            error = "-r '" + text + "': '" + port + "' is not a port (1-65535)";
            return false;
        }
        o.server_port = static_cast<std::uint16_t>(value);
    }
    return true;
}

int run_foreground(const TunnelOptions &o, const Foreground &how)
{
    set_log_level(how.verbose ? LogLevel::debug : LogLevel::warning);
    std::string message;
    raise_descriptor_limit(message);

    ManagerOptions mo;
    mo.threads = 1;
    mo.grace_period = std::chrono::seconds(how.grace);
    TunnelManager manager(mo);
    // State changes reach the main thread through this queue: it prints them,
    // and ends the command on an error no retry can mend.
    std::mutex mutex;
    std::deque<TunnelEvent> events;
    Subscription subscription = manager.subscribe([&](const TunnelEvent &e) {
        std::lock_guard lock(mutex);
        events.push_back(e);
    });
    if (ApplyResult applied = manager.apply({o}); applied.error) {
        std::cerr << how.command << ": " << applied.message << " (" << how.command << " --help)\n";
        return k_exit_usage;
    }

    ServiceNotifier notifier;
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    // Often enough that "connected" is printed as soon as it is true.
    const auto tick = std::min(notifier.tick(), std::chrono::milliseconds(200));
    bool up = false;
    std::chrono::steady_clock::time_point connected_since{}; // {}: not connected
    std::vector<std::string> shown;
    for (;;) {
        timespec timeout{static_cast<time_t>(tick.count() / 1000), static_cast<long>(tick.count() % 1000) * 1000000L};
        const int sig = sigtimedwait(&signals, nullptr, &timeout);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            std::cerr << how.command << ": " << strsignal(sig) << ": stopping; open connections get up to " << how.grace
                      << " s to finish\n";
            break;
        }
        std::deque<TunnelEvent> changes;
        {
            std::lock_guard lock(mutex);
            changes.swap(events);
        }
        for (const TunnelEvent &e : changes) {
            if (e.to != ManagedState::backing_off)
                continue;
            const std::string why = e.message.empty() ? e.error.message() : e.message;
            if (is_permanent(e.error)) {
                std::cerr << how.command << ": " << why << "\n";
                notifier.stopping();
                manager.stop();
                return k_exit_failed;
            }
            std::cerr << how.command << ": " << (serving(e.from) ? "connection lost: " : "cannot connect: ") << why
                      << "; retrying\n";
        }
        const auto status = manager.status();
        const bool connected = !status.empty() && serving(status[0].state);
        const auto now = std::chrono::steady_clock::now();
        if (!connected)
            connected_since = {};
        else if (connected_since == std::chrono::steady_clock::time_point{})
            connected_since = now;
        const bool now_up = connected && (up || status[0].sessions >= how.warm_sessions ||
                                          now - connected_since >= how.warm_wait);
        if (now_up) {
            how.serving(status[0], !up);
            if (!up)
                notifier.ready("connected to " + o.name);
        }
        up = now_up;
        if (notifier.enabled() && manager.responsive(std::chrono::seconds(1)))
            notifier.watchdog();
    }
    notifier.stopping();
    manager.stop();
    return k_exit_ok;
}

} // namespace pytun::cli
