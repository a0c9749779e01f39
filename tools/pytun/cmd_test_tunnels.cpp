// SPDX-License-Identifier: MIT
// pytun --test_tunnels: for every tunnel connect, verify, authenticate, request
// and cancel the remote forward.
#include "commands.h"

#include <pytun/tunnel.h>

namespace pytun::cli {

int test_tunnels(const Config &config, std::ostream &out)
{
    int failed = 0;
    for (const auto &t : config.tunnels) {
        Tunnel tunnel(to_tunnel_options(t));
        std::error_code ec = tunnel.start();
        const std::uint16_t bound = tunnel.listen_port();
        std::string why = ec ? tunnel.last_error_message() : std::string();
        tunnel.stop();
        out << "  " << (ec ? "FAILED" : "ok    ") << " " << t.tunnel_name << ": " << t.username << "@"
            << t.server_host << ":" << t.server_port << " port " << (ec ? t.port : bound);
        if (ec)
            out << ": " << (why.empty() ? ec.message() : why);
        out << "\n";
        failed += static_cast<bool>(ec);
    }
    out << "tunnels: " << config.tunnels.size() - static_cast<std::size_t>(failed) << " of "
        << config.tunnels.size() << " work\n";
    return failed ? k_exit_tunnels_failed : k_exit_ok;
}

} // namespace pytun::cli
