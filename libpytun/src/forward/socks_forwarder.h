// SPDX-License-Identifier: MIT
// SocksForwarder (ssh -D): a SOCKS 4, 4a and 5 proxy on a local address;
// each CONNECT goes through the bastion (a direct-tcpip channel; names are
// resolved by the bastion). Also the negotiation of a reverse SOCKS forward
// (the bastion's clients speak SOCKS to pytun, which connects from here).
#pragma once

#include "internal.h"

#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/tunnel.h>

#include "forward/destination.h"
#include "forward/forward.h"
#include "forward/relay.h"
#include "forward/socks.h"
#include "forward/traffic.h"

namespace pytun::detail {

class LocalListener;

/// Parses an allowlist; false and "RULE: why" in `error` for the first bad one.
bool parse_allowlist(const std::vector<std::string> &rules, DestinationSet &set, std::string &error);

class SocksForwarder final : public Forward, public std::enable_shared_from_this<SocksForwarder> {
public:
    SocksForwarder(asio::io_context &io, pytun::DynamicForward spec, std::chrono::milliseconds open_timeout,
                   std::shared_ptr<spdlog::logger> log, std::shared_ptr<TrafficCounters> counters);
    ~SocksForwarder() override;

    void start(ForwardContext context, Handlers handlers) override;
    void stop_accepting(std::function<void()> done) override;

private:
    class Client;
    void on_client(asio::ip::tcp::socket socket);
    void on_request(std::shared_ptr<Client> client);

    asio::io_context &io_;
    pytun::DynamicForward spec_;
    std::chrono::milliseconds open_timeout_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<TrafficCounters> counters_;
    DestinationSet allow_;
    std::shared_ptr<LocalListener> listener_;
    ChannelOpener *opener_ = nullptr;
    Admission *admission_ = nullptr;
    std::vector<std::weak_ptr<Client>> handshakes_; ///< in progress, closed on stop
};

/// The negotiation of one channel of a reverse SOCKS forward: a SOCKS
/// handshake with the bastion's client, then a connect to an allowed
/// destination from here. Install with Relay::negotiate().
void negotiate_reverse_socks(Relay &relay, std::shared_ptr<const DestinationSet> allow,
                             std::chrono::milliseconds connect_timeout, std::shared_ptr<spdlog::logger> log);

} // namespace pytun::detail
