// SPDX-License-Identifier: MIT
// pytun forward: one SSH connection carrying -L, -D and -R forwards, in the
// foreground like `ssh -N`, until SIGTERM/SIGINT; it reconnects by itself.
#include "commands.h"

#include <pwd.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <mutex>

#include <pytun/error.h>
#include <pytun/log.h>
#include <pytun/manager.h>
#include <pytun/resources.h>

#include "service_notify.h"

namespace pytun::cli {
namespace {

// Errors a retry cannot mend: the command says why and exits.
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
    case Errc::local_port_unavailable:
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

// [USER@]HOST[:PORT], HOST possibly an [IPv6] address.
bool parse_remote(const std::string &text, TunnelOptions &o, std::string &error)
{
    std::string rest = text;
    if (auto at = rest.rfind('@'); at != std::string::npos) {
        o.username = rest.substr(0, at);
        rest = rest.substr(at + 1);
    } else {
        o.username = current_user();
    }
    std::string port;
    if (!rest.empty() && rest[0] == '[') {
        const auto close = rest.find(']');
        if (close == std::string::npos) {
            error = "-r '" + text + "': '[' without ']'";
            return false;
        }
        o.server_host = rest.substr(1, close - 1);
        if (close + 1 < rest.size()) {
            if (rest[close + 1] != ':') {
                error = "-r '" + text + "': expected ':PORT' after ']'";
                return false;
            }
            port = rest.substr(close + 2);
        }
    } else if (std::count(rest.begin(), rest.end(), ':') == 1) {
        const auto colon = rest.find(':');
        o.server_host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    } else {
        o.server_host = rest; // a name, an IPv4 address or a bare IPv6 address
    }
    if (o.server_host.empty() || o.username.empty()) {
        error = "-r '" + text + "': expected [USER@]HOST[:PORT]";
        return false;
    }
    if (!port.empty()) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
            error = "-r '" + text + "': '" + port + "' is not a port (1-65535)";
            return false;
        }
        o.server_port = static_cast<std::uint16_t>(value);
    }
    return true;
}

// The first line of a file, for the SOCKS password (never on the command
// line, where every local user could read it in ps).
bool read_secret(const std::string &path, std::string &secret, std::string &error)
{
    std::ifstream in(path);
    if (!in || !std::getline(in, secret)) {
        error = "--socks-password-file '" + path + "': cannot read it";
        return false;
    }
    if (!secret.empty() && secret.back() == '\r')
        secret.pop_back();
    return true;
}

std::string forwards_text(const std::vector<ForwardStatus> &forwards)
{
    std::string out;
    for (const auto &f : forwards) {
        out += "\n  " + f.description;
        if (f.serving)
            out += ": serving" + (f.bound_port ? " on port " + std::to_string(f.bound_port) : std::string());
        else if (!f.error.empty())
            out += ": NOT serving (retrying): " + f.error;
    }
    return out;
}

} // namespace

int run_forward(const ForwardArgs &args)
{
    TunnelOptions o;
    std::string error;
    if (!parse_remote(args.remote, o, error)) {
        std::cerr << "pytun forward: " << error << "\n";
        return k_exit_usage;
    }
    o.name = o.username + "@" + o.server_host + ":" + std::to_string(o.server_port);
    o.key_file = args.key_file;
    o.known_hosts_file = args.known_hosts;
    o.remote_host.clear(); // no classic reverse tunnel: every forward is in `forwards`
    o.keep_alive = std::chrono::seconds(args.keep_alive);
    o.max_sessions = args.max_sessions;
    std::string socks_password;
    if (!args.socks_password_file.empty() && !read_secret(args.socks_password_file, socks_password, error)) {
        std::cerr << "pytun forward: " << error << "\n";
        return k_exit_usage;
    }
    auto add = [&](char kind, const std::vector<std::string> &specs) {
        for (const auto &text : specs) {
            auto spec = parse_forward(kind, text, error);
            if (!spec) {
                std::cerr << "pytun forward: -" << kind << " " << error << "\n";
                return false;
            }
            if (auto *d = std::get_if<DynamicForward>(&*spec)) {
                d->allow = args.allow;
                d->username = args.socks_user;
                d->password = socks_password;
            } else if (auto *r = std::get_if<RemoteDynamicForward>(&*spec)) {
                r->allow = args.allow;
            }
            o.forwards.push_back(std::move(*spec));
        }
        return true;
    };
    if (!add('L', args.local) || !add('D', args.dynamic) || !add('R', args.reverse))
        return k_exit_usage;
    if (o.forwards.empty()) {
        std::cerr << "pytun forward: nothing to forward: give at least one -L, -D or -R\n";
        return k_exit_usage;
    }
    if (args.socks_user.empty() != socks_password.empty()) {
        std::cerr << "pytun forward: --socks-user and --socks-password-file go together\n";
        return k_exit_usage;
    }
    set_log_level(args.verbose ? LogLevel::debug : LogLevel::info);
    std::string message;
    raise_descriptor_limit(message);

    ManagerOptions mo;
    mo.threads = 1;
    mo.grace_period = std::chrono::seconds(args.grace);
    TunnelManager manager(mo);
    // The first attempt decides whether the command can serve at all: a
    // permanent error (key, host key, options) ends it with exit 1.
    std::mutex mutex;
    std::error_code first_failure;
    std::string first_message;
    bool settled = false;
    Subscription events = manager.subscribe([&](const TunnelEvent &e) {
        std::lock_guard lock(mutex);
        if (settled)
            return;
        if (e.to == ManagedState::up || e.to == ManagedState::degraded) {
            settled = true;
        } else if (e.to == ManagedState::backing_off && is_permanent(e.error)) {
            settled = true;
            first_failure = e.error;
            first_message = e.message;
        }
    });
    ApplyResult applied = manager.apply({o});
    if (applied.error) {
        std::cerr << "pytun forward: " << applied.message << "\n";
        return k_exit_usage;
    }

    ServiceNotifier notifier;
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    const auto tick = notifier.tick();
    bool announced = false;
    for (;;) {
        timespec timeout{static_cast<time_t>(tick.count() / 1000), static_cast<long>(tick.count() % 1000) * 1000000L};
        const int sig = sigtimedwait(&signals, nullptr, &timeout);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        {
            std::lock_guard lock(mutex);
            if (first_failure) {
                std::cerr << "pytun forward: " << first_message << "\n";
                manager.stop();
                return k_exit_failed;
            }
        }
        const auto status = manager.status();
        const bool up = !status.empty() &&
                        (status[0].state == ManagedState::up || status[0].state == ManagedState::degraded);
        if (up && !announced) {
            announced = true;
            std::cerr << "pytun forward: connected to " << o.name << forwards_text(status[0].forwards) << "\n";
            notifier.ready("connected to " + o.name);
        } else if (!up) {
            announced = false;
        }
        if (notifier.enabled() && manager.responsive(std::chrono::seconds(1)))
            notifier.watchdog();
    }
    notifier.stopping();
    manager.stop();
    return k_exit_ok;
}

} // namespace pytun::cli
