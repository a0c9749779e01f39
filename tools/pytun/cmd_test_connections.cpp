// SPDX-License-Identifier: MIT
// pytun --test_connections: TCP-connect to every tunnel's local service.
#include "commands.h"

#include <pytun/health.h>

namespace pytun::cli {

int test_connections(const Config &config, std::ostream &out)
{
    int failed = 0, probed = 0;
    for (const auto &t : config.tunnels) {
        // Only the classic reverse tunnel has a local service of its own: the
        // targets of local forwards are reached from the bastion, and SOCKS
        // clients choose theirs (--test_tunnels checks what it can).
        if (t.remote_host.empty()) {
            out << "  -      " << t.tunnel_name << ": no remote_host (forwards only): nothing to connect to here\n";
            continue;
        }
        ++probed;
        ServiceHealth h = HealthMonitor::probe(t.remote_host, t.remote_port, std::chrono::seconds(2));
        out << "  " << (h.reachable ? "ok    " : "FAILED") << " " << t.tunnel_name << ": " << t.remote_host << ":"
            << t.remote_port;
        if (h.reachable)
            out << " (" << h.connect_time.count() / 1000.0 << " ms)\n";
        else
            out << ": " << h.error << "\n";
        failed += !h.reachable;
    }
    out << "connections: " << probed - failed << " of " << probed << " reachable\n";
    return failed ? k_exit_connections_failed : k_exit_ok;
}

} // namespace pytun::cli
