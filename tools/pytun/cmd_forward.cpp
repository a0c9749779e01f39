// SPDX-License-Identifier: MIT
// pytun forward: one SSH connection carrying -L, -D and -R forwards, in the
// foreground like `ssh -N`, until SIGTERM/SIGINT/SIGHUP; it reconnects by itself.
#include "commands.h"

#include <pwd.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <variant>

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

// The first line of a file, for the SOCKS password (never on the command
// line, where every local user could read it in ps).
bool read_secret(const std::string &path, std::string &secret, std::string &error)
{
    std::ifstream in(path);
    const bool readable = in.is_open();
    if (readable)
        std::getline(in, secret);
    if (!secret.empty() && secret.back() == '\r')
        secret.pop_back();
    if (secret.empty())
        error = "--socks-password-file " + path + ": " +
                (readable ? "its first line is empty: write the password there" : "cannot be read");
    return !secret.empty();
}

// Where pytun listens for a local kind, or "" for a remote one.
std::string local_listener(const ForwardSpec &spec)
{
    if (const auto *l = std::get_if<LocalForward>(&spec))
        return host_port(l->bind_address, l->listen_port);
    if (const auto *d = std::get_if<DynamicForward>(&spec))
        return host_port(d->bind_address, d->listen_port);
    return {};
}

// Reads -L, -D, -R and the options that apply to them into `o.forwards`;
// false and `error` for a command line that cannot work (exit 2).
bool add_forwards(const ForwardArgs &args, const std::string &socks_password, TunnelOptions &o, std::string &error)
{
    for (const auto &rule : args.allow) {
        if (!check_destination(rule, error)) {
            error = "--allow " + error;
            return false;
        }
    }
    bool dynamic = false, socks = false;
    const std::pair<char, const std::vector<std::string> *> kinds[] = {
        {'L', &args.local}, {'D', &args.dynamic}, {'R', &args.reverse}};
    for (const auto &[kind, specs] : kinds) {
        for (const auto &text : *specs) {
            auto spec = parse_forward(kind, text, error);
            if (!spec) {
                error = std::string("-") + kind + " " + error;
                return false;
            }
            if (auto *d = std::get_if<DynamicForward>(&*spec)) {
                d->allow = args.allow;
                d->username = args.socks_user;
                d->password = socks_password;
                dynamic = socks = true;
            } else if (auto *r = std::get_if<RemoteDynamicForward>(&*spec)) {
                if (args.allow.empty()) {
                    error = "-R " + text + " has no HOST:HOSTPORT, so it is reverse SOCKS: the bastion's clients "
                            "choose where pytun connects in this network; say where they may go with --allow "
                            "CIDR[:PORT[-PORT]] (e.g. --allow 10.0.0.0/8:389), or give -R PORT:HOST:HOSTPORT";
                    return false;
                }
                r->allow = args.allow;
                socks = true;
            }
            // Two listeners on one address and port: the second could never serve.
            if (const std::string here = local_listener(*spec); !here.empty() && !here.ends_with(":0")) {
                for (const auto &other : o.forwards) {
                    if (local_listener(other) == here) {
                        error = "-" + std::string(1, kind) + " " + text + ": " + here + " is also where '" +
                                describe(other) + "' listens: choose another port";
                        return false;
                    }
                }
            }
            o.forwards.push_back(std::move(*spec));
        }
    }
    if (o.forwards.empty()) {
        error = "nothing to forward: give at least one -L, -D or -R";
        return false;
    }
    if (!args.allow.empty() && !socks) {
        error = "--allow applies to SOCKS forwards (-D, or -R without HOST:HOSTPORT), and there is none";
        return false;
    }
    if (args.socks_user.empty() != socks_password.empty()) {
        error = "--socks-user and --socks-password-file go together";
        return false;
    }
    if (!args.socks_user.empty() && !dynamic) {
        error = "--socks-user applies to -D forwards, and there is none";
        return false;
    }
    return true;
}

// One line per forward: where it serves, or why not.
std::string forwards_text(const std::vector<ForwardSpec> &specs, const std::vector<ForwardStatus> &forwards)
{
    std::string out;
    for (std::size_t i = 0; i < forwards.size(); ++i) {
        const ForwardStatus &f = forwards[i];
        out += "\n  " + f.description + ": ";
        if (!f.serving) {
            out += "NOT serving (retried): " + (f.error.empty() ? std::string("starting") : f.error);
            continue;
        }
        if (i < specs.size() && local_listener(specs[i]).empty()) {
            out += "the bastion listens on port " + std::to_string(f.bound_port);
        } else {
            const auto *l = i < specs.size() ? std::get_if<LocalForward>(&specs[i]) : nullptr;
            const auto *d = i < specs.size() ? std::get_if<DynamicForward>(&specs[i]) : nullptr;
            out += "listening on " + host_port(l ? l->bind_address : d ? d->bind_address : "", f.bound_port);
        }
    }
    return out;
}

// What the serving state of each forward says, to notice changes.
std::vector<std::string> serving_key(const std::vector<ForwardStatus> &forwards)
{
    std::vector<std::string> out;
    for (const auto &f : forwards)
        out.push_back(f.serving ? "+" + std::to_string(f.bound_port) : "-" + f.error);
    return out;
}

bool serving(ManagedState s)
{
    return s == ManagedState::up || s == ManagedState::degraded;
}

} // namespace

int run_forward(const ForwardArgs &args)
{
    auto usage = [](const std::string &error) {
        std::cerr << "pytun forward: " << error << " (pytun forward --help)\n";
        return k_exit_usage;
    };
    TunnelOptions o;
    std::string error;
    if (!parse_remote(args.remote, o, error))
        return usage(error);
    if (args.min_sessions > args.max_sessions)
        return usage("--min-sessions " + std::to_string(args.min_sessions) + " is more than --max-sessions " +
                     std::to_string(args.max_sessions) + "; lower it or raise --max-sessions");
    if (!args.jump.empty()) {
        auto jump = parse_jump(args.jump, error);
        if (!jump)
            return usage("-J " + error);
        o.jump = std::move(*jump); // with the key of -i and the known_hosts of --known-hosts
    }
    if (!args.proxy.empty()) {
        auto proxy = parse_proxy(args.proxy, error);
        if (!proxy)
            return usage("--proxy: " + error);
        o.proxy = std::move(*proxy);
    } else {
        const EnvironmentProxy environment = environment_proxy();
        if (!environment.error.empty())
            return usage(environment.error + " (or give --proxy none)");
        environment.apply(o);
    }
    o.name = o.username + "@" + host_port(o.server_host, o.server_port);
    o.key_file = args.key_file;
    o.known_hosts_file = args.known_hosts;
    o.remote_host.clear(); // no classic reverse tunnel: every forward is in `forwards`
    o.keep_alive = std::chrono::seconds(args.keep_alive);
    o.max_sessions = args.max_sessions;
    o.min_sessions = args.min_sessions;
    std::string socks_password;
    if (!args.socks_password_file.empty() && !read_secret(args.socks_password_file, socks_password, error)) {
        std::cerr << "pytun forward: " << error << "\n";
        return k_exit_failed;
    }
    if (!add_forwards(args, socks_password, o, error))
        return usage(error);
    set_log_level(args.verbose ? LogLevel::debug : LogLevel::warning);
    std::string message;
    raise_descriptor_limit(message);

    ManagerOptions mo;
    mo.threads = 1;
    mo.grace_period = std::chrono::seconds(args.grace);
    TunnelManager manager(mo);
    // State changes reach the main thread through this queue: it prints them,
    // and ends the command on an error no retry can mend.
    std::mutex mutex;
    std::deque<TunnelEvent> events;
    Subscription subscription = manager.subscribe([&](const TunnelEvent &e) {
        std::lock_guard lock(mutex);
        events.push_back(e);
    });
    if (ApplyResult applied = manager.apply({o}); applied.error)
        return usage(applied.message);

    ServiceNotifier notifier;
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    // Often enough that "connected" is printed as soon as it is true.
    const auto tick = std::min(notifier.tick(), std::chrono::milliseconds(200));
    bool up = false;
    std::vector<std::string> shown;
    for (;;) {
        timespec timeout{static_cast<time_t>(tick.count() / 1000), static_cast<long>(tick.count() % 1000) * 1000000L};
        const int sig = sigtimedwait(&signals, nullptr, &timeout);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
            std::cerr << "pytun forward: " << strsignal(sig) << ": stopping; open connections get up to "
                      << args.grace << " s to finish\n";
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
                std::cerr << "pytun forward: " << why << "\n";
                notifier.stopping();
                manager.stop();
                return k_exit_failed;
            }
            std::cerr << "pytun forward: " << (serving(e.from) ? "connection lost: " : "cannot connect: ") << why
                      << "; retrying\n";
        }
        const auto status = manager.status();
        const bool now_up = !status.empty() && serving(status[0].state);
        if (now_up) {
            auto key = serving_key(status[0].forwards);
            if (!up) {
                const std::string route = describe_route(o);
                std::cerr << "pytun forward: connected to " << o.name << (route.empty() ? "" : " " + route)
                          << forwards_text(o.forwards, status[0].forwards) << "\n";
                notifier.ready("connected to " + o.name);
            } else if (key != shown) {
                std::cerr << "pytun forward: forwards of " << o.name << " now:"
                          << forwards_text(o.forwards, status[0].forwards) << "\n";
            }
            shown = std::move(key);
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
