// SPDX-License-Identifier: MIT
// Example: a local forward and a SOCKS proxy over one SSH connection, like
// `ssh -N -L 5432:db.internal:5432 -D 1080`.
//
//   forward_proxy --server-host H [--server-port 22] --user U --key KEY --known-hosts FILE
//       --local [BIND:]PORT:HOST:HOSTPORT --socks [BIND:]PORT [--allow RULE]
//
// Prints "READY" and where each forward listens once connected; SIGINT or
// SIGTERM stop it (exit 0); a failure prints the error and exits 1. A Tunnel
// does not reconnect when the bastion goes; TunnelManager does (embed_manager.cpp).
#include <pytun/error.h>
#include <pytun/tunnel.h>

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

int main(int argc, char **argv)
{
    std::map<std::string, std::string> args;
    for (int i = 1; i + 1 < argc; i += 2)
        args[argv[i]] = argv[i + 1];
    auto get = [&](const char *key, const char *fallback = "") {
        auto it = args.find(key);
        return it == args.end() ? std::string(fallback) : it->second;
    };

    pytun::TunnelOptions options;
    options.server_host = get("--server-host");
    options.server_port = static_cast<std::uint16_t>(std::atoi(get("--server-port", "22").c_str()));
    options.username = get("--user");
    options.key_file = get("--key");
    options.known_hosts_file = get("--known-hosts");
    options.remote_host.clear(); // no reverse tunnel: only the forwards below

    // The forwards, written as for ssh; parse_forward says what is wrong with one.
    std::string error;
    auto local = pytun::parse_forward('L', get("--local"), error);
    auto socks = local ? pytun::parse_forward('D', get("--socks"), error) : std::nullopt;
    if (!local || !socks) {
        std::fprintf(stderr, "forward_proxy: %s\n", error.c_str());
        return 2;
    }
    if (std::string rule = get("--allow"); !rule.empty()) // else any destination the bastion reaches
        std::get<pytun::DynamicForward>(*socks).allow.push_back(rule);
    options.forwards = {*local, *socks};

    // Signals are taken by this thread (sigwait); the tunnel's thread, started
    // below, inherits the blocked mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    pytun::Tunnel tunnel(options);
    if (tunnel.start()) {
        std::fprintf(stderr, "forward_proxy: %s\n", tunnel.last_error_message().c_str());
        return 1;
    }
    std::printf("READY\n");
    for (const pytun::ForwardStatus &f : tunnel.forwards()) {
        if (f.serving)
            std::printf("%s: listening on port %u\n", f.description.c_str(), f.bound_port);
        else // retried by the tunnel while the other one serves
            std::printf("%s: not serving: %s\n", f.description.c_str(), f.error.c_str());
    }
    std::fflush(stdout);

    int signal_number = 0;
    sigwait(&signals, &signal_number);
    tunnel.stop();
    const pytun::TunnelStats total = tunnel.stats();
    std::printf("stopped: %llu connections, %llu bytes in, %llu bytes out\n",
                static_cast<unsigned long long>(total.connections_total),
                static_cast<unsigned long long>(total.bytes_to_service),
                static_cast<unsigned long long>(total.bytes_from_service));
    return 0;
}
