// SPDX-License-Identifier: MIT
// The pytun command's sub-commands (one file each) and what they share.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <pytun/config.h>
#include <pytun/manager.h>
#include <pytun/logging.h>

namespace pytun::cli {

/// Exit statuses (compat.md).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failed = 1;
inline constexpr int k_exit_not_configured = 2;
inline constexpr int k_exit_usage = 2;      ///< bad command line (as argparse, and CLI11's parse errors)
inline constexpr int k_exit_connections_failed = 3;
inline constexpr int k_exit_tunnels_failed = 4;

/// --log-level and --log-format: they override the configuration's levels
/// (also after a reload) and choose the line format of every log.
struct LogFlags {
    std::optional<LogLevel> level;
    LogFormat format = LogFormat::text;
};

/// "debug", "WARNING", "warn", ... (any case); empty when it is not a level.
std::optional<LogLevel> parse_log_level(std::string name);

/// Console-only logging for the modes that write no log files.
LoggingOptions console_logging(const LogFlags &flags);

/// The proxy the environment names for tunnels whose configuration names
/// none: https_proxy, else all_proxy (lower case first, then upper case, as
/// curl reads them; a value without a scheme is http://), minus the hosts
/// no_proxy exempts (docs/configuration.md).
struct EnvironmentProxy {
    std::optional<ProxyOptions> proxy; ///< empty: no variable set
    std::string variable;              ///< the one read ("https_proxy", ...)
    std::string no_proxy;
    std::string error;                 ///< the variable does not parse (its value is not shown)
    /// Sets options.proxy for its first hop (the jump host, else the
    /// bastion), unless no_proxy exempts that host.
    void apply(TunnelOptions &options) const;
};
EnvironmentProxy environment_proxy();
/// The same for `config`'s tunnels: nothing when each of them sets `proxy`
/// (or [pytun] does), so that a variable that does not parse is an error
/// only when a tunnel would use it.
EnvironmentProxy environment_proxy(const Config &config);

/// to_tunnel_options(), plus the environment's proxy when neither the
/// tunnel nor [pytun] sets `proxy` (`proxy = none` keeps it off).
TunnelOptions tunnel_options(const TunnelConfig &tunnel, const EnvironmentProxy &environment);

/// Load the configuration; print every diagnostic to stderr (warnings too).
/// Empty when there was an error. With `warnings`, the warnings of a valid
/// configuration are handed back instead of printed (run mode logs them).
std::optional<Config> load_or_report(const std::string &path, const LoadOptions &options = {},
                                     std::vector<Diagnostic> *warnings = nullptr);

/// "host:port", or "[v6]:port".
std::string host_port(const std::string &host, std::uint16_t port);
/// -r [USER@]HOST[:PORT] into o.username (default: the current user),
/// o.server_host and o.server_port; false and `error` when it does not parse.
bool parse_remote(const std::string &text, TunnelOptions &o, std::string &error);

/// How a foreground command (pytun forward, pytun vpn) runs its one tunnel.
struct Foreground {
    std::string command;  ///< begins each of its lines: "pytun forward"
    unsigned grace = 5;   ///< seconds open connections get when it stops
    bool verbose = false; ///< the library's lines from debug on (else warnings only)
    /// While serving, at each check; `first`: since start or since it was lost.
    std::function<void(const TunnelStatus &, bool first)> serving;
    /// Serving counts (and systemd hears READY) once this many SSH connections
    /// are set up, the sessions kept warm for bursts, or after warm_wait at
    /// the latest (a bastion that refuses extra connections must not hold
    /// it up).
    unsigned warm_sessions = 1;
    std::chrono::milliseconds warm_wait{5000};
};
/// Runs `o` (its options already parsed) until SIGTERM, SIGINT or SIGHUP
/// (exit 0), or an error no retry can mend (exit 1); options the library
/// rejects exit 2. Notifies systemd (READY once serving, the watchdog).
int run_foreground(const TunnelOptions &o, const Foreground &how);

/// `pytun forward` (docs/cli.md): its command line.
struct ForwardArgs {
    std::string remote;       ///< -r [USER@]HOST[:PORT]
    std::string jump;         ///< -J [USER@]HOST[:PORT]
    std::string proxy;        ///< --proxy URL (or none); empty: the environment's
    std::string key_file;     ///< -i
    std::string known_hosts;  ///< --known-hosts
    std::vector<std::string> local, dynamic, reverse; ///< -L, -D, -R
    std::vector<std::string> allow; ///< --allow: destinations SOCKS forwards may reach
    std::string socks_user;
    std::string socks_password_file;
    unsigned keep_alive = 30;
    unsigned max_sessions = 8;
    unsigned min_sessions = 1;
    unsigned grace = 5;
    bool verbose = false;
};

/// `pytun vpn` (docs/vpn.md): sshuttle's options where sshuttle has them.
struct VpnArgs {
    std::string remote;       ///< -r [USER@]HOST[:PORT]
    std::string key_file;     ///< -i
    std::string known_hosts;  ///< --known-hosts
    std::vector<std::string> subnets;      ///< SUBNET... (after @FILE expansion)
    std::vector<std::string> exclude;      ///< -x
    std::vector<std::string> exclude_files; ///< -X
    std::vector<std::string> subnet_files;  ///< -s
    bool dns = false;
    std::string ns_hosts;     ///< --ns-hosts IP[,IP]
    std::string to_ns;        ///< --to-ns IP[:PORT]
    bool auto_nets = false;   ///< -N
    std::string method = "auto";
    std::string listen;       ///< -l [IP:]PORT
    bool disable_ipv6 = false;
    bool fail_open = false;
    bool daemon = false;      ///< -D
    std::string pidfile;
    bool cleanup = false;
    unsigned keep_alive = 30;
    unsigned max_sessions = TransparentForward::default_max_sessions;
    unsigned min_sessions = 0; ///< 0: TransparentForward::default_min_sessions, at most max_sessions
    unsigned grace = 5;
    bool verbose = false;
};

/// sshuttle's @FILE arguments: each line of FILE (without its line end) is
/// one argument; empty when every argument was read, else the error.
std::string expand_argument_files(std::vector<std::string> &args);

int run_connector(const std::string &config_path, const LogFlags &log_flags);
int run_forward(const ForwardArgs &args);
int run_vpn(const VpnArgs &args);
int check_config(const std::string &config_path);
int test_smtp(const Config &config, std::ostream &out);
int test_http(const Config &config, std::ostream &out);
int test_connections(const Config &config, std::ostream &out);
int test_tunnels(const Config &config, std::ostream &out);
int test_all(const Config &config, std::ostream &out);
int make_key(const std::string &tunnel_file);
int print_version(std::ostream &out);

} // namespace pytun::cli
