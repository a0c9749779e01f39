// SPDX-License-Identifier: MIT
// ReverseForwarder (ssh -R): the bastion listens on a port and opens a
// forwarded-tcpip channel for every connection that arrives there; each is
// relayed to target_host:target_port, dialled from here, or, for reverse
// SOCKS (no target), to where the client asks in a SOCKS handshake over the
// channel, if the allowlist lets it.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <libssh2.h>
#include <spdlog/logger.h>

#include "forward/destination.h"
#include "forward/forward.h"
#include "forward/traffic.h"

namespace pytun::detail {

struct ReverseForwarderSpec {
    std::string bind_address;  ///< on the bastion; empty: its default
    std::uint16_t listen_port = 0; ///< on the bastion; 0: the bastion chooses
    std::string target_host;   ///< empty: reverse SOCKS, each client names its target
    std::uint16_t target_port = 0;
    std::vector<std::string> allow; ///< reverse SOCKS: where clients may go
    std::chrono::milliseconds connect_timeout{2000}; ///< per forwarded connection
};

class ReverseForwarder final : public Forward, public std::enable_shared_from_this<ReverseForwarder> {
public:
    ReverseForwarder(ReverseForwarderSpec spec, std::shared_ptr<spdlog::logger> log,
                   std::shared_ptr<TrafficCounters> counters);
    ~ReverseForwarder() override;

    void start(ForwardContext context, Handlers handlers) override;
    void stop_accepting(std::function<void()> done) override;

private:
    void on_listening(int rc, int bound_port);
    void on_channel(LIBSSH2_CHANNEL *channel);

    ReverseForwarderSpec spec_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<TrafficCounters> counters_;
    SshConnection *connection_ = nullptr;
    Admission *admission_ = nullptr;
    Handlers handlers_;
    LIBSSH2_LISTENER *listener_ = nullptr;
    std::shared_ptr<const DestinationSet> allow_; ///< reverse SOCKS
};

} // namespace pytun::detail
