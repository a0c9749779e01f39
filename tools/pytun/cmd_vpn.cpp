// SPDX-License-Identifier: MIT
// pytun vpn: sshuttle's transparent proxy over standard SSH channels, one
// tunnel with a TransparentForward, in the foreground (or -D) until
// SIGTERM/SIGINT; --cleanup removes what crashed runs left. docs/vpn.md.
#include "commands.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <pytun/log.h>
#include <pytun/tunnel.h>

namespace pytun::cli {
namespace {

constexpr const char *k_command = "pytun vpn";

int usage(const std::string &error)
{
    std::cerr << k_command << ": " << error << " (pytun vpn --help)\n";
    return k_exit_usage;
}

// -s and -X files: whitespace-separated entries, '#' starts a comment.
bool read_list_file(const std::string &option, const std::string &path, std::vector<std::string> &out,
                    std::string &error)
{
    std::ifstream in(path);
    if (!in) {
        error = option + " " + path + ": cannot be read: " + std::strerror(errno);
        return false;
    }
    for (std::string line; std::getline(in, line);) {
        std::istringstream words(line.substr(0, line.find('#')));
        for (std::string word; words >> word;)
            out.push_back(word);
    }
    return true;
}

std::vector<std::string> split_commas(const std::string &text)
{
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty())
            out.push_back(item);
    return out;
}

// -l [IP:]PORT, an IPv6 address in brackets: "12300", "0.0.0.0:12300", "[::]:12300".
bool parse_listen(const std::string &text, TransparentForward &spec, std::string &error)
{
    std::string address, port = text;
    if (const auto colon = text.rfind(':'); colon != std::string::npos) {
        address = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (address.size() >= 2 && address.front() == '[' && address.back() == ']')
            address = address.substr(1, address.size() - 2);
    }
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
        error = "-l '" + text + "': expected [IP:]PORT with PORT 1-65535 (e.g. 12300 or 0.0.0.0:12300)";
        return false;
    }
    if (!address.empty())
        spec.listen_address = address;
    spec.listen_port = static_cast<std::uint16_t>(value);
    return true;
}

bool build_spec(const VpnArgs &args, TransparentForward &spec, std::string &error)
{
    spec.subnets = args.subnets;
    for (const auto &file : args.subnet_files)
        if (!read_list_file("-s", file, spec.subnets, error))
            return false;
    spec.exclude = args.exclude;
    for (const auto &file : args.exclude_files)
        if (!read_list_file("-X", file, spec.exclude, error))
            return false;
    if (spec.subnets.empty() && !args.auto_nets) {
        error = "nothing to capture: give at least one SUBNET (e.g. 10.0.0.0/8), -s FILE or -N";
        return false;
    }
    // A bad CIDR is the command line's fault (exit 2), found before connecting.
    for (const auto *list : {&spec.subnets, &spec.exclude})
        for (const auto &subnet : *list)
            if (!check_destination(subnet, error))
                return false;
    spec.auto_nets = args.auto_nets;
    spec.nameservers = split_commas(args.ns_hosts);
    spec.dns = args.dns || !spec.nameservers.empty();
    spec.to_ns = args.to_ns;
    if (!spec.to_ns.empty() && !spec.dns) {
        error = "--to-ns applies to the DNS the tunnel carries: add --dns (or --ns-hosts)";
        return false;
    }
    spec.method = args.method == "nft"   ? CaptureMethod::nft
                  : args.method == "nat" ? CaptureMethod::nat
                                         : CaptureMethod::automatic;
    if (!args.listen.empty() && !parse_listen(args.listen, spec, error))
        return false;
    spec.ipv6 = !args.disable_ipv6;
    spec.fail_open = args.fail_open;
    return true;
}

int cleanup()
{
    if (std::string why = capture_unavailable(CaptureMethod::automatic); !why.empty()) {
        std::cerr << k_command << " --cleanup: " << why << "\n";
        return k_exit_failed;
    }
    const auto removed = remove_stale_captures(true);
    for (const auto &line : removed)
        std::cout << k_command << " --cleanup: " << line << "\n";
    if (removed.empty())
        std::cout << k_command << " --cleanup: nothing to remove in this network namespace\n";
    return k_exit_ok;
}

// "pytun vpn: up: capturing NETS (not X) through U@H:P; DNS on; method nft; port N"
std::string up_line(const TunnelOptions &o, const TransparentForward &spec, const ForwardStatus &forward)
{
    std::string capturing = forward.detail, method = "?";
    if (const auto at = forward.detail.find("; method "); at != std::string::npos) {
        capturing = forward.detail.substr(0, at);
        method = forward.detail.substr(at + 9);
    }
    return std::string(k_command) + ": up: " + capturing + " through " + o.name + "; DNS " +
           (spec.dns ? "on" : "off") + "; method " + method + "; port " + std::to_string(forward.bound_port);
}

// -D: the parent waits until the child is up (it prints the up line and
// exits 0) or gives up (exit 1: the child said why on stderr). The child
// writes the pid file, logs to syslog, and has no terminal.
struct Daemon {
    int report_fd = -1; ///< the child's end of the pipe to the waiting parent
    std::string pidfile;
    bool owns_pidfile = false; ///< this is the child, which wrote it

    // Returns -1 in the child, else the parent's exit status.
    int start()
    {
        int fds[2];
        if (pipe(fds) != 0) {
            std::cerr << k_command << ": -D: pipe: " << std::strerror(errno) << "\n";
            return k_exit_failed;
        }
        const pid_t child = fork();
        if (child < 0) {
            std::cerr << k_command << ": -D: fork: " << std::strerror(errno) << "\n";
            return k_exit_failed;
        }
        if (child > 0) {
            close(fds[1]);
            std::string line;
            char buffer[512];
            for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) != 0;) {
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0)
                    break;
                line.append(buffer, static_cast<std::size_t>(n));
            }
            if (line.empty())
                return k_exit_failed; // the child said why
            std::cout << line << std::flush;
            return k_exit_ok;
        }
        close(fds[0]);
        report_fd = fds[1];
        setsid();
        if (chdir("/") != 0) { // nothing depends on it: every path is absolute by now
        }
        const int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            close(null);
        }
        std::ofstream(pidfile) << getpid() << "\n";
        owns_pidfile = true;
        openlog("pytun-vpn", LOG_PID, LOG_DAEMON);
        set_log_handler([](LogLevel level, std::string_view, std::string_view message) {
            const int priority = level >= LogLevel::error     ? LOG_ERR
                                 : level >= LogLevel::warning ? LOG_WARNING
                                 : level >= LogLevel::info    ? LOG_INFO
                                                              : LOG_DEBUG;
            syslog(priority, "%.*s", static_cast<int>(message.size()), message.data());
        });
        return -1;
    }

    // Up: the parent prints `line` and returns; the terminal is let go.
    void up(const std::string &line)
    {
        if (report_fd < 0)
            return;
        const std::string text = line + "\n";
        if (write(report_fd, text.data(), text.size()) < 0) { /* the parent is gone: nothing to tell */
        }
        close(report_fd);
        report_fd = -1;
        const int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }

    ~Daemon()
    {
        if (owns_pidfile)
            std::remove(pidfile.c_str());
    }
};

} // namespace

std::string expand_argument_files(std::vector<std::string> &args)
{
    std::vector<std::string> out;
    for (const auto &arg : args) {
        if (arg.size() < 2 || arg[0] != '@') {
            out.push_back(arg);
            continue;
        }
        std::ifstream in(arg.substr(1));
        if (!in)
            return arg + ": cannot read the argument file " + arg.substr(1) + ": " + std::strerror(errno);
        for (std::string line; std::getline(in, line);) {
            if (!line.empty() && line.back() == '\r')
                line.pop_back();
            if (!line.empty())
                out.push_back(line);
        }
    }
    args = std::move(out);
    return {};
}

int run_vpn(const VpnArgs &args)
{
    if (args.cleanup)
        return cleanup();
    TunnelOptions o;
    std::string error;
    if (args.remote.empty() || args.key_file.empty() || args.known_hosts.empty())
        return usage("-r, -i and --known-hosts are required (only --cleanup goes without them)");
    if (!parse_remote(args.remote, o, error))
        return usage(error);
    if (args.min_sessions > args.max_sessions)
        return usage("--min-sessions " + std::to_string(args.min_sessions) + " is more than --max-sessions " +
                     std::to_string(args.max_sessions) + "; lower it or raise --max-sessions");
    TransparentForward spec;
    if (!build_spec(args, spec, error))
        return usage(error);
    o.name = o.username + "@" + host_port(o.server_host, o.server_port);
    o.key_file = args.key_file;
    o.known_hosts_file = args.known_hosts;
    o.remote_host.clear(); // every forward is in `forwards`
    o.keep_alive = std::chrono::seconds(args.keep_alive);
    o.max_sessions = args.max_sessions;
    o.min_sessions = args.min_sessions != 0
                         ? args.min_sessions
                         : std::min(TransparentForward::default_min_sessions, args.max_sessions);
    o.forwards.push_back(spec);
    // Before connecting anywhere: a capture that cannot work says so at once.
    if (std::string why = capture_unavailable(spec.method); !why.empty()) {
        std::cerr << k_command << ": " << why << "\n";
        return k_exit_failed;
    }

    // What a crashed run left goes now, not only once the bastion answers:
    // its rules would reset the captured connections until then.
    for (const auto &line : remove_stale_captures())
        std::cerr << k_command << ": " << line << "\n";

    Daemon daemon;
    if (args.daemon) {
        std::error_code ec;
        daemon.pidfile = std::filesystem::absolute(args.pidfile.empty() ? "pytun-vpn.pid" : args.pidfile, ec).string();
        if (const int status = daemon.start(); status >= 0)
            return status; // the parent
    }

    Foreground run;
    run.command = k_command;
    run.grace = args.grace;
    run.verbose = args.verbose;
    run.warm_sessions = o.min_sessions; // the up line means: ready for a burst
    bool announced = false;
    run.serving = [&](const TunnelStatus &status, bool first) {
        if (!first || status.forwards.empty())
            return;
        if (announced) {
            std::cerr << k_command << ": connected to " << o.name << " again\n";
            return;
        }
        announced = true;
        const std::string line = up_line(o, spec, status.forwards[0]);
        if (args.daemon) {
            daemon.up(line);
            syslog(LOG_INFO, "%s", line.c_str());
        } else {
            std::cout << line << std::endl;
        }
    };
    return run_foreground(o, run);
}

} // namespace pytun::cli
