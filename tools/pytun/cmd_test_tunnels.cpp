// SPDX-License-Identifier: MIT
// pytun --test_tunnels: for every tunnel connect, verify, authenticate, then
// start each forward as the connector would (the bastion's ports requested
// and cancelled, local ports bound), and for a local forward let the bastion
// open one channel to its target; no byte of traffic is sent.
#include "commands.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <variant>

#include <pytun/tunnel.h>

namespace pytun::cli {
namespace {

// A connection to a forward's local listener, held open while the bastion
// opens the channel for it; closed when it goes.
class HeldConnection {
public:
    HeldConnection(std::string address, std::uint16_t port)
    {
        // A wildcard bind is reached over loopback.
        if (address == "0.0.0.0")
            address = "127.0.0.1";
        else if (address == "::")
            address = "::1";
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo *found = nullptr;
        if (getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &found) != 0)
            return;
        for (addrinfo *a = found; a && fd_ < 0; a = a->ai_next) {
            fd_ = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd_ >= 0 && ::connect(fd_, a->ai_addr, a->ai_addrlen) != 0) {
                ::close(fd_);
                fd_ = -1;
            }
        }
        freeaddrinfo(found);
    }
    ~HeldConnection()
    {
        if (fd_ >= 0)
            ::close(fd_);
    }
    HeldConnection(const HeldConnection &) = delete;
    HeldConnection &operator=(const HeldConnection &) = delete;
    bool connected() const { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// Whether the bastion connects a local forward's target: a connection to the
// listener makes the tunnel open a direct-tcpip channel; it is counted as set
// up (both ends connected) or failed. "" when it worked, else why not.
std::string reach_target(const Tunnel &tunnel, std::size_t index, const LocalForward &spec, std::uint16_t port,
                         std::chrono::milliseconds open_timeout)
{
    HeldConnection client(spec.bind_address, port);
    if (!client.connected())
        return "cannot connect to its own listener " + spec.bind_address + ":" + std::to_string(port);
    const auto deadline =
        std::chrono::steady_clock::now() + (open_timeout.count() > 0 ? open_timeout : std::chrono::seconds(10)) +
        std::chrono::seconds(2);
    while (std::chrono::steady_clock::now() < deadline) {
        const TunnelStats s = tunnel.forwards().at(index).traffic;
        if (s.connection_setup.count > 0)
            return {};
        if (s.connections_failed > 0 || s.connections_refused > 0)
            return "the bastion could not connect to " + spec.target_host + ":" + std::to_string(spec.target_port) +
                   " (refused, unreachable, or not allowed by its PermitOpen; its reason is in the log line above)";
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return "the bastion did not connect to " + spec.target_host + ":" + std::to_string(spec.target_port) +
           " within open_timeout";
}

// What a serving forward was checked for, or why it failed ("" on success in `error`).
std::string check_forward(const Tunnel &tunnel, std::size_t index, const ForwardSpec &spec,
                          const ForwardStatus &status, std::string &error)
{
    if (!status.serving) {
        error = status.error.empty() ? "did not start" : status.error;
        return {};
    }
    const std::string port = std::to_string(status.bound_port);
    if (const auto *l = std::get_if<LocalForward>(&spec)) {
        error = reach_target(tunnel, index, *l, status.bound_port, tunnel.options().open_timeout);
        return "listening on port " + port + ", the bastion reached " + l->target_host + ":" +
               std::to_string(l->target_port);
    }
    if (std::holds_alternative<DynamicForward>(spec))
        return "listening on port " + port + " (its clients choose the destinations)";
    return "the bastion listens on port " + port;
}

} // namespace

int test_tunnels(const Config &config, std::ostream &out)
{
    const EnvironmentProxy environment = environment_proxy(config);
    if (!environment.error.empty()) {
        out << "  FAILED " << environment.error << "\n";
        return k_exit_tunnels_failed;
    }
    int failed = 0;
    for (const auto &t : config.tunnels) {
        const TunnelOptions options = tunnel_options(t, environment);
        Tunnel tunnel(options);
        std::error_code ec = tunnel.start();
        const std::uint16_t bound = tunnel.listen_port();
        const std::string why = ec ? tunnel.last_error_message() : std::string();
        // The classic tunnel alone: the original's one line.
        const bool classic_only = t.forwards.empty();
        std::string details;
        bool forward_failed = false;
        if (!classic_only) {
            const std::vector<ForwardSpec> specs = all_forwards(options);
            const std::vector<ForwardStatus> forwards = tunnel.forwards();
            for (std::size_t i = 0; i < specs.size() && i < forwards.size(); ++i) {
                std::string error;
                std::string done = check_forward(tunnel, i, specs[i], forwards[i], error);
                // A tunnel that failed as a whole says why once, below.
                if (ec && error.empty())
                    continue;
                forward_failed = forward_failed || !error.empty();
                details += "           " + std::string(error.empty() ? "ok     " : "FAILED ") + forwards[i].description +
                           ": " + (error.empty() ? done : error) + "\n";
            }
        }
        tunnel.stop();
        const bool tunnel_failed = ec || forward_failed;
        out << "  " << (tunnel_failed ? "FAILED" : "ok    ") << " " << t.tunnel_name << ": " << t.username << "@"
            << t.server_host << ":" << t.server_port;
        if (!t.remote_host.empty())
            out << " port " << (ec ? t.port : bound);
        if (const std::string route = describe_route(options); !route.empty())
            out << " (" << route << ")";
        if (ec)
            out << ": " << (why.empty() ? ec.message() : why);
        out << "\n" << details;
        failed += tunnel_failed;
    }
    out << "tunnels: " << config.tunnels.size() - static_cast<std::size_t>(failed) << " of "
        << config.tunnels.size() << " work\n";
    return failed ? k_exit_tunnels_failed : k_exit_ok;
}

} // namespace pytun::cli
