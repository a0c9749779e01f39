// SPDX-License-Identifier: MIT
// Benchmark helper: N reverse tunnels in one process (a TunnelManager), for
// the memory-per-tunnel comparison with N `ssh -N -R` processes.
//
//   many_tunnels --count N --server-host H --server-port P --user U --key K
//                --known-hosts F --remote-host H --remote-port M
//
// The bastion chooses every listen port. Prints "READY count=N" once all are
// up; SIGINT/SIGTERM stop it.
#include <pytun/crypto.h>
#include <pytun/manager.h>

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

int main(int argc, char **argv)
{
    pytun::set_aes_ctr_batching(true); // as the pytun command does
    std::map<std::string, std::string> args;
    for (int i = 1; i + 1 < argc; i += 2)
        args[std::string(argv[i]).substr(2)] = argv[i + 1];
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    const int count = std::atoi(args["count"].c_str());
    std::vector<pytun::TunnelOptions> tunnels;
    for (int i = 0; i < count; ++i) {
        pytun::TunnelOptions o;
        o.name = "bench-" + std::to_string(i);
        o.server_host = args["server-host"];
        o.server_port = static_cast<std::uint16_t>(std::atoi(args["server-port"].c_str()));
        o.username = args["user"];
        o.key_file = args["key"];
        o.known_hosts_file = args["known-hosts"];
        o.bind_address = "127.0.0.1";
        o.listen_port = 0;
        o.remote_host = args["remote-host"];
        o.remote_port = static_cast<std::uint16_t>(std::atoi(args["remote-port"].c_str()));
        tunnels.push_back(o);
    }
    pytun::TunnelManager manager;
    manager.apply(tunnels);
    for (int waited = 0; waited < 600; ++waited) {
        int up = 0;
        for (const auto &s : manager.status())
            up += s.state == pytun::ManagedState::up;
        if (up == count) {
            std::printf("READY count=%d\n", count);
            std::fflush(stdout);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    manager.stop();
    return 0;
}
