// SPDX-License-Identifier: MIT
// Through a jump host to the bastion: an SSH connection, a channel, a
// socketpair.
#include "tunnel/jump.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <pytun/error.h>

#include "forward/relay.h"
#include "forward/traffic.h"
#include "ssh/channel_stream.h"

namespace pytun::detail {
namespace {

std::string endpoint(const std::string &host, std::uint16_t port)
{
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

} // namespace

JumpTransport::JumpTransport(asio::io_context &io, ConnectionOptions jump, std::string bastion_host,
                             std::uint16_t bastion_port, std::shared_ptr<spdlog::logger> log)
    : io_(io), options_(std::move(jump)), bastion_(endpoint(bastion_host, bastion_port)),
      bastion_host_(std::move(bastion_host)), bastion_port_(bastion_port),
      name_("the jump host " + options_.username + "@" + endpoint(options_.server_host, options_.server_port)),
      log_(std::move(log)), session_end_(io)
{
}

JumpTransport::~JumpTransport()
{
    close();
}

TransportFactory JumpTransport::factory(ConnectionOptions jump, std::string bastion_host, std::uint16_t bastion_port)
{
    return [jump = std::move(jump), bastion_host = std::move(bastion_host),
            bastion_port](asio::io_context &io, std::shared_ptr<spdlog::logger> log) -> std::shared_ptr<Transport> {
        return std::make_shared<JumpTransport>(io, jump, bastion_host, bastion_port, std::move(log));
    };
}

void JumpTransport::start(Ready ready, Lost lost)
{
    ready_ = std::move(ready);
    lost_ = std::move(lost);
    auto self = shared_from_this();
    SshConnection::Handlers handlers;
    handlers.ready = [this, self] { on_jump_ready(); };
    handlers.failed = [this, self](std::error_code ec, const std::string &why) { fail(ec, name_ + ": " + why); };
    jump_ = std::make_shared<SshConnection>(io_, options_, log_, std::move(handlers));
    // Posted: a key file the jump connection cannot use fails inside its
    // start(), and `ready` must not run inside this call.
    asio::post(io_, [this, self] {
        if (!closed_)
            jump_->start();
    });
}

void JumpTransport::on_jump_ready()
{
    if (closed_)
        return;
    log_->debug("logged in to {}; opening a channel to the bastion {}", name_, bastion_);
    // Keepalive, TCP_USER_TIMEOUT and probes on the one real TCP connection:
    // the bastion's session runs on a local socket that has none of them.
    jump_->start_health_checks();
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
        fail(Errc::transport_lost, "cannot make a socketpair for the connection through " + name_ + ": " +
                                       std::strerror(errno));
        return;
    }
    const asio::generic::stream_protocol local(AF_UNIX, 0);
    Relay::Socket relayed(io_);
    asio::error_code ignored;
    session_end_.assign(local, fds[0], ignored);
    relayed.assign(local, fds[1], ignored);
    counters_ = std::make_shared<TrafficCounters>();
    relay_ = std::make_shared<Relay>(io_, log_, counters_);
    auto self = shared_from_this();
    relay_->on_open({}, [this, self](Relay::Socket &, OpenError error) { open_error_ = error; },
                    std::chrono::milliseconds(0));
    relay_->start(std::move(relayed));
    jump_->session().open_direct_tcpip(relay_, bastion_host_, bastion_port_, "127.0.0.1", 0,
                                       [this, self] { on_channel_open_over(); });
}

void JumpTransport::on_channel_open_over()
{
    if (closed_)
        return;
    if (relay_->phase() == ChannelStream::Phase::open) {
        log_->debug("{} connected us to the bastion {}", name_, bastion_);
        auto ready = std::move(ready_);
        ready_ = nullptr;
        ready({}, {}, std::move(session_end_));
        return;
    }
    switch (open_error_) {
    case OpenError::prohibited:
        fail(Errc::bastion_unreachable, name_ + " may not connect to the bastion " + bastion_ +
                                            " (administratively prohibited: see AllowTcpForwarding and PermitOpen "
                                            "in its sshd_config, and permitopen= of the key in its authorized_keys)");
        return;
    case OpenError::connect_failed:
        fail(Errc::bastion_unreachable, name_ + " cannot connect to the bastion " + bastion_ +
                                            " (refused or unreachable from there: check server_host and "
                                            "server_port as the jump host sees them)");
        return;
    case OpenError::timed_out:
        fail(Errc::bastion_timeout, name_ + " did not connect to the bastion " + bastion_ + " in time");
        return;
    case OpenError::resource_shortage:
    case OpenError::other:
    case OpenError::none:
        fail(Errc::bastion_unreachable,
             name_ + " did not open a channel to the bastion " + bastion_ + " (" + to_string(open_error_) + ")");
        return;
    }
}

void JumpTransport::fail(std::error_code ec, const std::string &message)
{
    if (closed_)
        return;
    auto ready = std::move(ready_);
    auto lost = std::move(lost_);
    close();
    if (ready)
        ready(ec, message, SshSession::Socket(io_));
    else if (lost)
        lost(ec, message);
}

void JumpTransport::close()
{
    if (closed_)
        return;
    closed_ = true;
    ready_ = nullptr;
    lost_ = nullptr;
    asio::error_code ignored;
    session_end_.close(ignored);
    if (jump_)
        jump_->close(); // frees the session: the relay's stream is aborted and its socket closed
    relay_.reset();
}

} // namespace pytun::detail
