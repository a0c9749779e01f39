// SPDX-License-Identifier: MIT
// TransparentForwarder (pytun vpn): firewall rules redirect new TCP
// connections to the captured subnets to pytun's listener; each accepted
// connection goes through the bastion to its original destination in a
// direct-tcpip channel. What must outlive one SSH connection, the rules and
// the listener, is the forward's CaptureKeep (forward/forward.h): while the
// tunnel reconnects, captured connections are reset (fail-closed) or the
// rules are lifted (fail-open). With --dns the keep also holds the DNS
// relay (vpn/dns_relay.h), attached to each connection's resolver; with -N
// the bastion's routes join the captured nets on the first connection.
// docs/vpn.md.
#pragma once

#include "internal.h"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/tunnel.h>

#include "forward/forward.h"
#include "forward/traffic.h"
#include "vpn/server_info.h"

namespace pytun::detail {

class CaptureKeep;
class SshSession;

/// What is wrong with `spec` without touching the network or the firewall
/// ("" when nothing): every subnet and exclude parses (no wildcard: the
/// capture sees addresses, not names), there is something to capture, the
/// listen address is a loopback or wildcard address.
PYTUN_CONNECTOR_USES std::string check_transparent_forward(const TransparentForward &spec);

class TransparentForwarder final : public Forward, public std::enable_shared_from_this<TransparentForwarder> {
public:
    TransparentForwarder(asio::io_context &io, TransparentForward spec, const TunnelOptions &tunnel,
                         std::shared_ptr<spdlog::logger> log, std::shared_ptr<TrafficCounters> counters);
    ~TransparentForwarder() override;

    void start(ForwardContext context, Handlers handlers) override;
    void stop_accepting(std::function<void()> done) override;

private:
    void resolve_names(std::function<void(const std::string &error)> done);
    void ask_server_then_install();
    void install();
    // DNS and -N: what this connection asks the bastion before the rules go in.
    void read_auto_nets(std::function<void()> next);
    void choose_resolver(std::function<void()> next);
    void attach_dns();
    void fail(std::error_code ec, const std::string &message);
    void serve(asio::ip::tcp::socket socket);

    asio::io_context &io_;
    TransparentForward spec_;
    std::string tunnel_name_;
    std::chrono::milliseconds open_timeout_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<TrafficCounters> counters_;
    std::shared_ptr<CaptureKeep> keep_;
    ChannelOpener *opener_ = nullptr; ///< valid until stop_accepting()
    std::weak_ptr<SshSession> session_; ///< this connection's, for the commands -N and --dns run there
    Admission *admission_ = nullptr;
    Handlers handlers_;
    std::optional<Nameserver> resolver_; ///< this connection's resolver for the DNS relay
    bool stopped_ = false;
};

} // namespace pytun::detail
