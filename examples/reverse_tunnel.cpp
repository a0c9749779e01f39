// SPDX-License-Identifier: MIT
// Example: one reverse tunnel from the command line, like `ssh -N -R`.
//
//   reverse_tunnel --server-host H --server-port P --user U --key KEY
//       --known-hosts FILE --listen-port N --remote-host H --remote-port M
//
// Prints "READY listen_port=N" once the bastion listens; SIGINT/SIGTERM stop
// it (exit 0); a failure prints the error and exits 1.
#include <pytun/crypto.h>
#include <pytun/error.h>
#include <pytun/log.h>
#include <pytun/tunnel.h>

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>

namespace {

int usage()
{
    std::fprintf(stderr,
                 "usage: reverse_tunnel --server-host H [--server-port 22] --user U --key KEYFILE\n"
                 "         --known-hosts FILE [--bind-address A] [--listen-port 4000] --remote-host H\n"
                 "         [--remote-port 22] [--passphrase P] [--log-level trace|debug|info|warning|error]\n");
    return 2;
}

pytun::LogLevel parse_level(const std::string &s)
{
    if (s == "trace") return pytun::LogLevel::trace;
    if (s == "debug") return pytun::LogLevel::debug;
    if (s == "warning") return pytun::LogLevel::warning;
    if (s == "error") return pytun::LogLevel::error;
    return pytun::LogLevel::info;
}

} // namespace

int main(int argc, char **argv)
{
    // The benchmark runs this program: libssh2's AES-CTR in batches, as the
    // pytun command uses it (an embedder opts in the same way, crypto.h).
    pytun::set_aes_ctr_batching(true);
    std::map<std::string, std::string> args;
    for (int i = 1; i < argc; ++i) {
        std::string key = argv[i];
        if (key.rfind("--", 0) != 0 || i + 1 >= argc)
            return usage();
        args[key.substr(2)] = argv[++i];
    }
    auto get = [&](const char *key, const char *fallback = "") {
        auto it = args.find(key);
        return it == args.end() ? std::string(fallback) : it->second;
    };

    pytun::TunnelOptions options;
    options.server_host = get("server-host");
    options.server_port = static_cast<std::uint16_t>(std::atoi(get("server-port", "22").c_str()));
    options.username = get("user");
    options.key_file = get("key");
    options.key_passphrase = get("passphrase");
    options.known_hosts_file = get("known-hosts");
    options.bind_address = get("bind-address");
    options.listen_port = static_cast<std::uint16_t>(std::atoi(get("listen-port", "4000").c_str()));
    options.remote_host = get("remote-host");
    options.remote_port = static_cast<std::uint16_t>(std::atoi(get("remote-port", "22").c_str()));
    pytun::set_log_level(parse_level(get("log-level", "info")));

    // Signals are taken synchronously by this thread (sigwait); every other
    // thread inherits the blocked mask. SIGUSR1 is how the watcher below
    // reports a tunnel that died on its own.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    pytun::Tunnel tunnel(options);
    if (std::error_code ec = tunnel.start()) {
        std::fprintf(stderr, "reverse_tunnel: %s\n", tunnel.last_error_message().c_str());
        return 1;
    }
    std::printf("READY listen_port=%u\n", tunnel.listen_port());
    std::fflush(stdout);

    std::thread watcher([&tunnel] {
        std::error_code reason = tunnel.wait();
        if (reason != pytun::Errc::stopped)
            kill(getpid(), SIGUSR1); // blocked everywhere: stays pending if main is already stopping
    });
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    int status = 0;
    if (signal_number == SIGUSR1) {
        std::fprintf(stderr, "reverse_tunnel: %s\n", tunnel.last_error_message().c_str());
        status = 1;
    }
    tunnel.stop();
    watcher.join();
    return status;
}
