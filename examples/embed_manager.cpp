// SPDX-License-Identifier: MIT
// Example: an application that embeds a pytun::TunnelManager from code (no
// config files), prints every state change and a status table every few seconds.
//
//   embed_manager --server-host H [--server-port 22] --user U --key KEYFILE
//       --known-hosts FILE --tunnel NAME:LISTEN_PORT:REMOTE_HOST:REMOTE_PORT
//       [--tunnel ...] [--bind-address A] [--keep-alive 30] [--status-every 5]
//
// Every option can also come from the environment: PYTUN_SERVER_HOST,
// PYTUN_SERVER_PORT, PYTUN_USER, PYTUN_KEY, PYTUN_KNOWN_HOSTS,
// PYTUN_BIND_ADDRESS, PYTUN_KEEP_ALIVE, PYTUN_TUNNELS (tunnel specs separated
// by commas) and PYTUN_KEY_PASSPHRASE (only there: a passphrase on the command
// line shows in `ps`). SIGINT/SIGTERM stop every tunnel and exit 0; an invalid
// set of tunnels exits 1, a usage error 2.
#include <pytun/error.h>
#include <pytun/log.h>
#include <pytun/manager.h>
#include <pytun/tunnel.h>

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace {

int usage(const char *why)
{
    std::fprintf(stderr,
                 "embed_manager: %s\n"
                 "usage: embed_manager --server-host H [--server-port 22] --user U --key KEYFILE\n"
                 "         --known-hosts FILE --tunnel NAME:LISTEN_PORT:REMOTE_HOST:REMOTE_PORT [--tunnel ...]\n"
                 "         [--bind-address A] [--keep-alive SECONDS] [--status-every SECONDS]\n"
                 "  (or the PYTUN_* environment variables; see the top of embed_manager.cpp)\n",
                 why);
    return 2;
}

/// A port number 1-65535 (0 allowed when `zero_ok`: the bastion chooses).
bool parse_port(const std::string &text, bool zero_ok, std::uint16_t &port)
{
    char *end = nullptr;
    errno = 0;
    long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno != 0 || v < (zero_ok ? 0 : 1) || v > 65535)
        return false;
    port = static_cast<std::uint16_t>(v);
    return true;
}

std::string local_time(std::chrono::system_clock::time_point when)
{
    std::time_t t = std::chrono::system_clock::to_time_t(when);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    return buf;
}

void print_status(const pytun::TunnelManager &manager)
{
    std::printf("%-16s %-12s %8s %6s  %-24s %6s %6s %12s %12s  %s\n", "NAME", "STATE", "STARTED", "LISTEN", "SERVICE",
                "ACTIVE", "TOTAL", "TO_SERVICE", "FROM_SERVICE", "LAST ERROR");
    for (const pytun::TunnelStatus &s : manager.status()) {
        std::string service = s.remote_host + ":" + std::to_string(s.remote_port);
        if (s.service_checked && !s.service_reachable)
            service += " (down)";
        std::string error;
        if (s.last_error)
            error = s.last_error.message() + (s.port_held ? " [port held]" : "");
        if (s.state == pytun::ManagedState::backing_off)
            error += " (next attempt " + local_time(s.next_attempt) + ")";
        std::printf("%-16s %-12s %8llu %6u  %-24s %6llu %6llu %12llu %12llu  %s\n", s.name.c_str(),
                    pytun::to_string(s.state), static_cast<unsigned long long>(s.started_times),
                    static_cast<unsigned>(s.listen_port), service.c_str(),
                    static_cast<unsigned long long>(s.traffic.connections_active),
                    static_cast<unsigned long long>(s.traffic.connections_total),
                    static_cast<unsigned long long>(s.traffic.bytes_to_service),
                    static_cast<unsigned long long>(s.traffic.bytes_from_service), error.c_str());
    }
    std::fflush(stdout);
}

} // namespace

int main(int argc, char **argv)
{
    // Options: the environment first, the command line overrides.
    std::map<std::string, std::string> opt;
    std::vector<std::string> tunnel_specs;
    for (const auto &[env, key] : std::map<std::string, std::string>{{"PYTUN_SERVER_HOST", "server-host"},
                                                                     {"PYTUN_SERVER_PORT", "server-port"},
                                                                     {"PYTUN_USER", "user"},
                                                                     {"PYTUN_KEY", "key"},
                                                                     {"PYTUN_KNOWN_HOSTS", "known-hosts"},
                                                                     {"PYTUN_BIND_ADDRESS", "bind-address"},
                                                                     {"PYTUN_KEEP_ALIVE", "keep-alive"}})
        if (const char *v = std::getenv(env.c_str()))
            opt[key] = v;
    if (const char *v = std::getenv("PYTUN_TUNNELS")) {
        std::istringstream list(v);
        std::string spec;
        while (std::getline(list, spec, ','))
            if (!spec.empty())
                tunnel_specs.push_back(spec);
    }
    bool tunnels_from_argv = false;
    for (int i = 1; i < argc; ++i) {
        std::string key = argv[i];
        if (key.rfind("--", 0) != 0 || i + 1 >= argc)
            return usage(("bad argument: " + key).c_str());
        key = key.substr(2);
        std::string value = argv[++i];
        if (key == "tunnel") {
            if (!tunnels_from_argv)
                tunnel_specs.clear(); // the command line replaces PYTUN_TUNNELS
            tunnels_from_argv = true;
            tunnel_specs.push_back(value);
        } else {
            opt[key] = value;
        }
    }
    for (const char *required : {"server-host", "user", "key", "known-hosts"})
        if (opt[required].empty())
            return usage((std::string("--") + required + " is required").c_str());
    if (tunnel_specs.empty())
        return usage("at least one --tunnel is required");

    pytun::TunnelOptions common;
    common.server_host = opt["server-host"];
    if (!parse_port(opt.count("server-port") ? opt["server-port"] : "22", false, common.server_port))
        return usage("--server-port must be 1-65535");
    common.username = opt["user"];
    common.key_file = opt["key"];
    if (const char *p = std::getenv("PYTUN_KEY_PASSPHRASE"))
        common.key_passphrase = p;
    common.known_hosts_file = opt["known-hosts"];
    common.bind_address = opt["bind-address"];
    if (opt.count("keep-alive")) {
        long s = std::strtol(opt["keep-alive"].c_str(), nullptr, 10);
        if (s < 0 || s > 86400)
            return usage("--keep-alive must be 0-86400 seconds");
        common.keep_alive = std::chrono::seconds(s);
    }
    long status_every = opt.count("status-every") ? std::strtol(opt["status-every"].c_str(), nullptr, 10) : 5;
    if (status_every < 1)
        return usage("--status-every must be at least 1 second");

    std::vector<pytun::TunnelOptions> tunnels;
    for (const std::string &spec : tunnel_specs) {
        // NAME:LISTEN_PORT:REMOTE_HOST:REMOTE_PORT
        std::vector<std::string> part;
        std::istringstream in(spec);
        std::string field;
        while (std::getline(in, field, ':'))
            part.push_back(field);
        pytun::TunnelOptions t = common;
        if (part.size() != 4 || part[0].empty() || part[2].empty() || !parse_port(part[1], true, t.listen_port) ||
            !parse_port(part[3], false, t.remote_port))
            return usage(("bad tunnel '" + spec + "': expected NAME:LISTEN_PORT:REMOTE_HOST:REMOTE_PORT").c_str());
        t.name = part[0];
        t.remote_host = part[2];
        tunnels.push_back(std::move(t));
    }

    // Signals are taken synchronously by this thread (sigtimedwait); block
    // them before the manager starts its threads, which inherit the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    pytun::TunnelManager manager; // one event-loop thread per core, default backoff

    // Events arrive on the manager's event-loop threads: keep the handler
    // short, and serialize output with the status printer.
    std::mutex out_mutex;
    pytun::Subscription events = manager.subscribe([&out_mutex](const pytun::TunnelEvent &e) {
        std::lock_guard lock(out_mutex);
        std::printf("%s EVENT %s: %s -> %s", local_time(e.when).c_str(), e.name.c_str(), pytun::to_string(e.from),
                    pytun::to_string(e.to));
        if (e.error)
            std::printf(" (%s%s%s)", e.error.message().c_str(), e.message.empty() ? "" : ": ", e.message.c_str());
        std::printf("\n");
        std::fflush(stdout);
    });

    pytun::ApplyResult applied = manager.apply(tunnels);
    if (applied.error) {
        std::fprintf(stderr, "embed_manager: %s: %s\n", applied.error.message().c_str(), applied.message.c_str());
        return 1;
    }
    std::printf("started %zu tunnel(s) on %zu thread(s); Ctrl-C stops\n", applied.started.size(),
                manager.thread_count());
    std::fflush(stdout);

    timespec every{status_every, 0};
    for (;;) {
        int sig = sigtimedwait(&signals, nullptr, &every);
        if (sig == SIGINT || sig == SIGTERM) {
            std::lock_guard lock(out_mutex);
            std::printf("signal %d: stopping\n", sig);
            std::fflush(stdout);
            break;
        }
        if (sig < 0 && errno == EAGAIN) {
            std::lock_guard lock(out_mutex);
            print_status(manager); // a snapshot: never waits on the network
        }
    }
    manager.stop(); // forwards cancelled, open connections get the grace period
    events.reset();
    print_status(manager);
    return 0;
}
