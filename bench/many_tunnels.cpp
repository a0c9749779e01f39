// SPDX-License-Identifier: MIT
// Benchmark helper: N reverse tunnels in one process (a TunnelManager), for
// the memory-per-tunnel comparison with N `ssh -N -R` processes.
//
//   many_tunnels --count N --server-host H --server-port P --user U --key K
//                --known-hosts F --remote-host H --remote-port M [--port-base B]
//
// The bastion chooses every listen port, or with --port-base tunnel i asks
// for B+i. Prints "READY count=N" once all are up, then "UP n" whenever the
// number of serving tunnels changes (bench/scale.py times a bastion restart
// with it); SIGINT/SIGTERM stop it.
#include <pytun/crypto.h>
#include <pytun/manager.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
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
        const int port_base = args.count("port-base") ? std::atoi(args["port-base"].c_str()) : 0;
        o.listen_port = static_cast<std::uint16_t>(port_base ? port_base + i : 0);
        o.remote_host = args["remote-host"];
        o.remote_port = static_cast<std::uint16_t>(std::atoi(args["remote-port"].c_str()));
        tunnels.push_back(o);
    }
    // Counted from state changes rather than status() snapshots, so that
    // watching costs no CPU that the idle measurement would see.
    std::atomic<int> up{0};
    pytun::TunnelManager manager;
    auto subscription = manager.subscribe([&up](const pytun::TunnelEvent &e) {
        const bool was = e.from == pytun::ManagedState::up, is = e.to == pytun::ManagedState::up;
        if (was != is)
            up += is ? 1 : -1;
    });
    manager.apply(tunnels);
    std::atomic<bool> stopping{false};
    std::thread watcher([&] {
        int last = -1;
        bool ready = false;
        while (!stopping) {
            const int now = up.load();
            if (!ready && now == count) {
                std::printf("READY count=%d\n", count);
                ready = true;
            }
            if (now != last)
                std::printf("UP %d\n", now);
            std::fflush(stdout);
            last = now;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    stopping = true;
    watcher.join();
    manager.stop();
    return 0;
}
