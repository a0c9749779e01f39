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
    Foreground run;
    run.command = "pytun forward";
    run.grace = args.grace;
    run.verbose = args.verbose;
    if (!args.local.empty() || !args.dynamic.empty()) // only they open channels, and so keep sessions warm
        run.warm_sessions = o.min_sessions;
    std::vector<std::string> shown;
    run.serving = [&o, &shown](const TunnelStatus &status, bool first) {
        auto key = serving_key(status.forwards);
        if (first) {
            const std::string route = describe_route(o);
            std::cerr << "pytun forward: connected to " << o.name << (route.empty() ? "" : " " + route)
                      << forwards_text(o.forwards, status.forwards) << "\n";
        } else if (key != shown) {
            std::cerr << "pytun forward: forwards of " << o.name << " now:" << forwards_text(o.forwards, status.forwards)
                      << "\n";
        }
        shown = std::move(key);
    };
    return run_foreground(o, run);
}

} // namespace pytun::cli
