// SPDX-License-Identifier: MIT
// pytun: the connector command (drop-in for the original; see docs/cli.md).
#include "commands.h"

#include <signal.h>

#include <algorithm>
#include <iostream>

#include <CLI/CLI.hpp>

#include <pytun/crypto.h>

namespace {

// An example for each mode, after the flags in --help (and in pytun(1)).
std::string help_examples()
{
    return "\nExamples:\n"
           "  run the connector (what the systemd unit does; SIGHUP reloads, SIGTERM stops):\n"
           "    pytun --config_ini /etc/pytun/connector.ini\n"
           "  run it in the foreground with JSON log lines and debug detail:\n"
           "    pytun --config_ini /etc/pytun/connector.ini --log-format json --log-level debug\n"
           "  check every file before starting or reloading (exit 0 valid, 1 problems):\n"
           "    pytun --config_ini /etc/pytun/connector.ini --check\n"
           "  send a test e-mail and a test webhook:\n"
           "    pytun --config_ini /etc/pytun/connector.ini --test_smtp --test_http\n"
           "  reach every local service (exit 3 if one does not answer):\n"
           "    pytun --config_ini /etc/pytun/connector.ini --test_connections\n"
           "  log in to every bastion and request each forward (exit 4 if one fails):\n"
           "    pytun --config_ini /etc/pytun/connector.ini --test_tunnels\n"
           "  everything above as one readable report:\n"
           "    pytun --config_ini /etc/pytun/connector.ini --test_all\n"
           "  forward ports through one SSH connection, like ssh -N (see pytun forward --help):\n"
           "    pytun forward -r tunnel@bastion.example.com -i key --known-hosts known_hosts -L 5432:db:5432\n"
           "  reach whole subnets through the bastion, sshuttle-style, DNS included (see pytun vpn --help):\n"
           "    pytun vpn -r tunnel@bastion.example.com -i key --known-hosts known_hosts --dns 10.0.0.0/8\n"
           "  make a key that may only listen on one tunnel's port:\n"
           "    pytun --make-key /etc/pytun/tunnels/ldap.ini\n"
           "  the versions of pytun, libssh2 and OpenSSL:\n"
           "    pytun --version\n"
           "\nMore: man pytun; " PYTUN_DOCDIR "/docs\n";
}

} // namespace

int main(int argc, char **argv)
{
    using namespace pytun::cli;
    // One thread handles signals (sigtimedwait in run mode); every thread
    // started later inherits this mask, so no libssh2 call sees EINTR.
    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
    signal(SIGPIPE, SIG_IGN);
    // The process is ours: libssh2's AES-CTR in batches (opt-in for embedders).
    pytun::set_aes_ctr_batching(true);

    CLI::App app{"pytun: keeps reverse SSH tunnels up (drop-in for the pytun connector).\n"
                 "Without a test flag it runs the connector until SIGTERM/SIGINT; SIGHUP reloads.",
                 "pytun"};
    std::string config_ini = "connector.ini";
    std::string make_key_file, log_level, log_format = "text";
    bool check = false, smtp = false, http = false, connections = false, tunnels = false, all = false,
         show_version = false;
    app.add_option("--config_ini", config_ini, "main configuration file")->capture_default_str();
    app.add_flag("--check", check, "load and validate everything, print every problem; exit 0 or 1, start nothing");
    app.add_flag("--test_smtp", smtp, "send one test e-mail (exit 0 sent, 1 failed, 2 not configured)");
    app.add_flag("--test_http", http, "send one test webhook (exit 0 sent, 1 failed, 2 not configured)");
    app.add_flag("--test_connections", connections,
                 "TCP-connect to every tunnel's remote_host:remote_port (exit 0, or 3 if any failed)");
    app.add_flag("--test_tunnels,--test_connectors", tunnels,
                 "SSH connect, verify, authenticate, request and cancel each forward (exit 0, or 4)");
    app.add_flag("--test_all", all, "all of the above plus the service state, as a readable report (exit 0)");
    app.add_option("--make-key", make_key_file,
                   "create an ed25519 key next to this tunnel file and print its authorized_keys line")
        ->type_name("TUNNEL.ini");
    app.add_option("--log-level", log_level,
                   "level of every log, overriding log_level of [pytun] and of each tunnel file")
        ->type_name("LEVEL")
        ->check(CLI::IsMember({"trace", "debug", "info", "warning", "warn", "error", "critical"}, CLI::ignore_case));
    app.add_option("--log-format", log_format,
                   "text (the original's lines) or json (one object per line: time, level, pid, logger, "
                   "tunnel, event, message, error) for the files, the console and the journal")
        ->type_name("FORMAT")
        ->check(CLI::IsMember({"text", "json"}, CLI::ignore_case))
        ->capture_default_str();
    app.add_flag("-v,--version", show_version, "print the versions of pytun, libssh2 and OpenSSL");
    app.footer(help_examples());

    ForwardArgs fwd;
    CLI::App *forward = app.add_subcommand(
        "forward", "forward ports through one SSH connection, like ssh -N -L/-D/-R: in the foreground until "
                   "SIGTERM, SIGINT or SIGHUP (then exit 0), reconnecting by itself; exit 2 for a command line that "
                   "cannot work, 1 when the bastion, its host key or the key refuse or no forward can listen");
    forward->add_option("-r,--remote", fwd.remote, "the bastion (an IPv6 address in brackets when a port follows)")
        ->type_name("[USER@]HOST[:PORT]")
        ->required();
    forward->add_option("-J,--jump", fwd.jump,
                        "reach the bastion through this SSH host, like ssh -J (same key and known_hosts file)")
        ->type_name("[USER@]HOST[:PORT]");
    forward->add_option("--proxy", fwd.proxy,
                        "reach the first SSH host through this proxy (default: https_proxy or all_proxy, minus "
                        "no_proxy; none: no proxy)")
        ->type_name("URL");
    forward->add_option("-i,--identity", fwd.key_file, "private key (OpenSSH or PEM)")->type_name("KEYFILE")->required();
    forward->add_option("--known-hosts", fwd.known_hosts, "known_hosts file with the bastion's host key")
        ->type_name("FILE")
        ->required();
    forward->add_option("-L", fwd.local,
                        "listen here (127.0.0.1 without BIND; * for every interface), connect from the bastion "
                        "(repeatable)")
        ->type_name("[BIND:]PORT:HOST:HOSTPORT")
        ->allow_extra_args(false);
    forward->add_option("-D", fwd.dynamic, "SOCKS 4/4a/5 proxy here, connections from the bastion (repeatable)")
        ->type_name("[BIND:]PORT")
        ->allow_extra_args(false);
    forward->add_option("-R", fwd.reverse,
                        "the bastion listens, connect from here; without HOST:HOSTPORT its clients speak SOCKS "
                        "and --allow is required (repeatable)")
        ->type_name("[BIND:]PORT[:HOST:HOSTPORT]")
        ->allow_extra_args(false);
    forward->add_option("--allow", fwd.allow,
                        "destinations the SOCKS forwards (-D, -R without target) may reach (repeatable)")
        ->type_name("CIDR[:PORT[-PORT]]|HOST[:PORT[-PORT]]")
        ->allow_extra_args(false);
    forward->add_option("--socks-user", fwd.socks_user, "-D clients must authenticate (RFC 1929) as this user")
        ->type_name("USER");
    forward->add_option("--socks-password-file", fwd.socks_password_file,
                        "the first line is the --socks-user password (not on the command line, where ps shows it)")
        ->type_name("FILE");
    forward->add_option("--keep-alive", fwd.keep_alive, "seconds between health checks (0: none)")
        ->check(CLI::Range(0, 86400))
        ->capture_default_str();
    forward->add_option("--max-sessions", fwd.max_sessions,
                        "SSH connections for bursts of opens (-L, -D), the first included")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    forward->add_option("--min-sessions", fwd.min_sessions,
                        "of those, SSH connections kept open while idle, so that bursts find them ready")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    forward->add_option("--grace", fwd.grace, "seconds open connections get to finish when stopped")
        ->check(CLI::Range(0, 3600))
        ->capture_default_str();
    forward->add_flag("-v,--verbose", fwd.verbose, "log the library's lines from debug level on (every connection)");
    forward->footer("Examples:\n"
                    "  a database and a SOCKS proxy through the bastion:\n"
                    "    pytun forward -r tunnel@bastion.example.com -i ~/.ssh/id_ed25519 --known-hosts kh \\\n"
                    "        -L 5432:db.internal:5432 -D 1080\n"
                    "  the bastion's clients reach LDAP and SMTP here through reverse SOCKS on its port 1080:\n"
                    "    pytun forward -r tunnel@[2001:db8::1]:2222 -i key --known-hosts kh -R 1080 \\\n"
                    "        --allow 10.0.0.0/8:389 --allow smtp.corp.example:25\n"
                    "  the bastion behind a jump host, reached through an HTTP proxy:\n"
                    "    pytun forward -r tunnel@bastion.internal -J jump@gw.example.com -i key --known-hosts kh \\\n"
                    "        --proxy http://proxy.corp:3128 -L 5432:db.internal:5432\n"
                    "More: man pytun; " PYTUN_DOCDIR "/docs/cli.md");

    VpnArgs vpn_args;
    CLI::App *vpn = app.add_subcommand(
        "vpn", "sshuttle's transparent proxy over plain SSH channels: capture TCP to SUBNETs (and DNS) with "
               "nftables or iptables and carry it through the bastion; nothing to install there. In the "
               "foreground until SIGTERM or SIGINT (rules removed, exit 0); needs root or CAP_NET_ADMIN; exit 2 "
               "for a command line that cannot work, 1 when it cannot capture or the bastion refuses");
    vpn->add_option("subnets", vpn_args.subnets,
                    "captured: IP/MASK[:PORT[-PORT]], an address, a host name (all its addresses), 0/0, ::/0; "
                    "@FILE reads arguments from FILE, one per line")
        ->type_name("SUBNET...");
    vpn->add_option("-r,--remote", vpn_args.remote, "the bastion (an IPv6 address in brackets when a port follows)")
        ->type_name("[USER@]HOST[:PORT]");
    vpn->add_option("-i,--identity", vpn_args.key_file, "private key (OpenSSH or PEM)")->type_name("KEYFILE");
    vpn->add_option("--known-hosts", vpn_args.known_hosts, "known_hosts file with the bastion's host key")
        ->type_name("FILE");
    vpn->add_flag("--dns", vpn_args.dns,
                  "capture DNS to this machine's nameservers and resolve through the bastion's resolver");
    vpn->add_option("--ns-hosts", vpn_args.ns_hosts, "capture DNS to these nameservers instead (implies --dns)")
        ->type_name("IP[,IP]");
    vpn->add_option("--to-ns", vpn_args.to_ns,
                    "the resolver to ask, as the bastion reaches it (default: one of its resolv.conf)")
        ->type_name("IP[:PORT]");
    vpn->add_option("-x,--exclude", vpn_args.exclude, "never captured, same syntax as SUBNET (repeatable)")
        ->type_name("SUBNET")
        ->allow_extra_args(false);
    vpn->add_option("-X,--exclude-from", vpn_args.exclude_files, "excluded subnets from a file (repeatable)")
        ->type_name("FILE")
        ->allow_extra_args(false);
    vpn->add_option("-s,--subnets", vpn_args.subnet_files, "captured subnets from a file (repeatable)")
        ->type_name("FILE")
        ->allow_extra_args(false);
    vpn->add_flag("-N,--auto-nets", vpn_args.auto_nets,
                  "also capture the bastion's routes (minus loopback, link-local and the default route)");
    vpn->add_option("--method", vpn_args.method, "nft, nat (iptables), or auto: nft when it is installed")
        ->check(CLI::IsMember({"auto", "nft", "nat"}))
        ->capture_default_str();
    vpn->add_option("-l,--listen", vpn_args.listen,
                    "where captured connections arrive (default 127.0.0.1 and ::1, port 12300 or the first free "
                    "below); 0.0.0.0 or [::] also captures what this machine routes for its LAN")
        ->type_name("[IP:]PORT");
    vpn->add_flag("--disable-ipv6", vpn_args.disable_ipv6, "do not carry IPv6: IPv6 to the subnets is blocked");
    vpn->add_flag("--fail-open", vpn_args.fail_open,
                  "while the SSH connection is down, lift the capture (default: captured connections are reset)");
    vpn->add_flag("-D,--daemon", vpn_args.daemon, "run in the background once up; log to syslog");
    vpn->add_option("--pidfile", vpn_args.pidfile, "with -D: write the pid here (default ./pytun-vpn.pid)")
        ->type_name("FILE");
    vpn->add_flag("--cleanup", vpn_args.cleanup,
                  "remove the rules that crashed pytun runs left in this network namespace, then exit");
    vpn->add_option("--keep-alive", vpn_args.keep_alive, "seconds between health checks (0: none)")
        ->check(CLI::Range(0, 86400))
        ->capture_default_str();
    vpn->add_option("--max-sessions", vpn_args.max_sessions, "SSH connections for bursts of connections")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    vpn->add_option("--min-sessions", vpn_args.min_sessions,
                    "of those, kept open while idle (default " +
                        std::to_string(pytun::TransparentForward::default_min_sessions) + ", at most --max-sessions)")
        ->check(CLI::Range(1, 64));
    vpn->add_option("--grace", vpn_args.grace, "seconds open connections get to finish when stopped")
        ->check(CLI::Range(0, 3600))
        ->capture_default_str();
    vpn->add_flag("-v,--verbose", vpn_args.verbose, "debug lines, one per connection");
    vpn->footer("Examples:\n"
                "  the office network and its DNS, through the bastion:\n"
                "    pytun vpn -r tunnel@bastion.example.com -i key --known-hosts kh --dns 10.0.0.0/8\n"
                "  everything but the LAN, IPv4 and IPv6, as a router for the LAN:\n"
                "    pytun vpn -r tunnel@bastion.example.com -i key --known-hosts kh -l 0.0.0.0:12300 \\\n"
                "        -x 192.168.1.0/24 0/0 ::/0\n"
                "  remove the rules of a pytun vpn that was killed:\n"
                "    pytun vpn --cleanup\n"
                "More: man pytun; " PYTUN_DOCDIR "/docs/vpn.md");

    // sshuttle's @FILE arguments (pytun vpn only).
    std::vector<std::string> arguments(argv + 1, argv + argc);
    if (!arguments.empty() && arguments[0] == "vpn") {
        if (std::string error = expand_argument_files(arguments); !error.empty()) {
            std::cerr << "pytun vpn: " << error << "\n";
            return k_exit_usage;
        }
    }
    std::reverse(arguments.begin(), arguments.end()); // CLI11 takes them last first

    try {
        app.parse(arguments);
    } catch (const CLI::CallForHelp &e) {
        return app.exit(e);
    } catch (const CLI::ParseError &e) {
        app.exit(e);
        return 2;
    }
    LogFlags log_flags;
    if (!log_level.empty())
        log_flags.level = parse_log_level(log_level);
    log_flags.format = CLI::detail::to_lower(log_format) == "json" ? pytun::LogFormat::json : pytun::LogFormat::text;

    if (*forward)
        return run_forward(fwd);
    if (*vpn)
        return run_vpn(vpn_args);
    if (show_version)
        return print_version(std::cout);
    if (!make_key_file.empty())
        return make_key(make_key_file);
    if (check)
        return check_config(config_ini);
    if (!(smtp || http || connections || tunnels || all))
        return run_connector(config_ini, log_flags);

    // The test modes log to the console only (what libpytun says while they run).
    pytun::Logging logging(console_logging(log_flags));
    std::string message;
    logging.start(message);

    auto config = load_or_report(config_ini);
    if (!config)
        return k_exit_failed;
    if (all)
        return test_all(*config, std::cout);
    // Several test flags: run each, the first failure's status wins.
    int rc = 0;
    auto step = [&rc](int r) {
        if (rc == 0)
            rc = r;
    };
    if (smtp)
        step(test_smtp(*config, std::cout));
    if (http)
        step(test_http(*config, std::cout));
    if (connections)
        step(test_connections(*config, std::cout));
    if (tunnels)
        step(test_tunnels(*config, std::cout));
    return rc;
}
