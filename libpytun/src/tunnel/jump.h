// SPDX-License-Identifier: MIT
// JumpTransport: the way to a bastion through a jump host, as ssh -J goes.
// An SSH connection to the jump host (its own host key, key and proxy),
// then a direct-tcpip channel from it to the bastion's SSH port; the
// bastion's SSH session runs on one end of a socketpair whose other end a
// Relay carries into that channel. Everything stays on the loop thread and
// nothing listens. Each connection to the bastion (the tunnel's own, the
// session pool's extra ones) has a jump connection of its own.
#pragma once

#include "internal.h"

#include <cstdint>
#include <memory>
#include <string>

#include <asio.hpp>
#include <spdlog/logger.h>

#include "ssh/connection.h"

namespace pytun::detail {

class Relay;
struct TrafficCounters;

class JumpTransport final : public Transport, public std::enable_shared_from_this<JumpTransport> {
public:
    /// `jump` reaches the jump host; the channel goes to bastion_host:port.
    JumpTransport(asio::io_context &io, ConnectionOptions jump, std::string bastion_host, std::uint16_t bastion_port,
                  std::shared_ptr<spdlog::logger> log);
    ~JumpTransport() override;

    void start(Ready ready, Lost lost) override;
    void close() override;

    /// The factory a bastion's ConnectionOptions::via holds.
    static TransportFactory factory(ConnectionOptions jump, std::string bastion_host, std::uint16_t bastion_port);

private:
    void on_jump_ready();
    void on_channel_open_over();
    void fail(std::error_code ec, const std::string &message);

    asio::io_context &io_;
    ConnectionOptions options_;
    std::string bastion_;  ///< "host:port"
    std::string bastion_host_;
    std::uint16_t bastion_port_;
    std::string name_;     ///< "the jump host user@host:port"
    std::shared_ptr<spdlog::logger> log_;
    Ready ready_;
    Lost lost_;
    std::shared_ptr<SshConnection> jump_;
    std::shared_ptr<TrafficCounters> counters_;
    std::shared_ptr<Relay> relay_;
    SshSession::Socket session_end_; ///< for the bastion's session, once the channel is open
    OpenError open_error_{};
    bool closed_ = false;
};

} // namespace pytun::detail
