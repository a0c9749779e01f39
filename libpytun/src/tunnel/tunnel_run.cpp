// SPDX-License-Identifier: MIT
// One run of a tunnel: a connection, its forwards, a graceful stop.
#include "tunnel/tunnel_run.h"

#include <pytun/error.h>

#include "forward/reverse_forward.h"
#include "ssh/connection.h"
#include "ssh/session.h"

namespace pytun::detail {
namespace {

// After the grace period, closing the remaining channels and saying goodbye
// may take this long.
constexpr std::chrono::milliseconds k_close_deadline{500};

ConnectionOptions connection_options(const TunnelOptions &o)
{
    ConnectionOptions c;
    c.server_host = o.server_host;
    c.server_port = o.server_port;
    c.username = o.username;
    c.key_file = o.key_file;
    c.key_passphrase = o.key_passphrase;
    c.known_hosts_file = o.known_hosts_file;
    c.connect_timeout = o.connect_timeout;
    c.keep_alive = o.keep_alive;
    return c;
}

ReverseForwardSpec reverse_forward_spec(const TunnelOptions &o)
{
    ReverseForwardSpec spec;
    spec.bind_address = o.bind_address;
    spec.listen_port = o.listen_port;
    spec.target_host = o.remote_host;
    spec.target_port = o.remote_port;
    spec.connect_timeout = o.local_connect_timeout;
    return spec;
}

} // namespace

TunnelRun::TunnelRun(asio::io_context &io, TunnelOptions options, std::shared_ptr<spdlog::logger> log,
                     std::shared_ptr<TrafficCounters> counters, Handlers handlers)
    : io_(io), options_(std::move(options)), log_(std::move(log)), counters_(std::move(counters)),
      handlers_(std::move(handlers)), setup_timer_(io), grace_timer_(io), close_deadline_(io)
{
}

TunnelRun::~TunnelRun()
{
    if (connection_)
        connection_->close();
}

std::error_code TunnelRun::check_options(const TunnelOptions &options, std::string &message)
{
    std::string missing;
    if (options.server_host.empty())
        missing += " server_host";
    if (options.username.empty())
        missing += " username";
    if (options.remote_host.empty())
        missing += " remote_host";
    if (options.key_file.empty())
        missing += " keyfile";
    if (!missing.empty()) {
        message = "missing required setting(s):" + missing;
        return Errc::invalid_options;
    }
    if (options.server_port == 0 || options.remote_port == 0) {
        message = "server_port and remote_port must be between 1 and 65535";
        return Errc::invalid_options;
    }
    return {};
}

void TunnelRun::start()
{
    std::string message;
    if (auto ec = check_options(options_, message)) {
        finish(ec, message);
        return;
    }
    auto self = shared_from_this();
    forwards_.push_back(std::make_shared<ReverseForward>(reverse_forward_spec(options_), log_, counters_));

    SshConnection::Handlers handlers;
    handlers.ready = [this, self] { on_ready(); };
    handlers.failed = [this, self](std::error_code ec, const std::string &why) { on_connection_failed(ec, why); };
    handlers.probed = [this, self](std::chrono::microseconds rtt) {
        if (handlers_.probed)
            handlers_.probed(rtt);
    };
    connection_ = std::make_shared<SshConnection>(io_, connection_options(options_), log_, std::move(handlers));
    setup_timer_.expires_after(options_.connect_timeout);
    setup_timer_.async_wait([this, self](const asio::error_code &ec) {
        if (!ec && !up_)
            finish(Errc::bastion_timeout, "SSH set-up with " + connection_->where() + " did not finish within " +
                                              std::to_string(options_.connect_timeout.count()) + " ms");
    });
    connection_->start();
}

void TunnelRun::on_ready()
{
    auto self = shared_from_this();
    for (auto &forward : forwards_) {
        Forward::Handlers handlers;
        handlers.ready = [this, self](std::uint16_t port) { on_forward_ready(port); };
        handlers.failed = [this, self](std::error_code ec, const std::string &why) { finish(ec, why); };
        forward->start(*connection_, std::move(handlers));
        if (ended_)
            return;
    }
}

void TunnelRun::on_forward_ready(std::uint16_t bound_port)
{
    if (ended_)
        return;
    if (listen_port_ == 0)
        listen_port_ = bound_port;
    if (++forwards_ready_ < forwards_.size())
        return;
    up_ = true;
    setup_timer_.cancel();
    connection_->start_health_checks();
    if (handlers_.up)
        handlers_.up(listen_port_);
}

void TunnelRun::on_connection_failed(std::error_code ec, const std::string &message)
{
    if (stopping_) { // the bastion may hang up first while we stop
        finish(Errc::stopped, "stopped");
        return;
    }
    finish(ec, message);
}

void TunnelRun::stop(std::chrono::milliseconds grace, std::function<void()> done)
{
    if (ended_ || !up_ || stopping_) {
        finish(Errc::stopped, "stopped");
        asio::post(io_, std::move(done));
        return;
    }
    stopping_ = true;
    stop_done_ = std::move(done);
    connection_->stop_health_checks();
    auto self = shared_from_this();
    forwards_accepting_ = forwards_.size();
    for (auto &forward : forwards_)
        forward->stop_accepting([this, self] {
            if (--forwards_accepting_ == 0)
                maybe_disconnect();
        });
    grace_timer_.expires_after(grace);
    grace_timer_.async_wait([this, self](const asio::error_code &ec) {
        if (!ec)
            on_grace_over();
    });
}

void TunnelRun::on_grace_over()
{
    if (ended_ || disconnecting_)
        return;
    SshSession &session = connection_->session();
    if (session.stream_count() > 0)
        log_->info("closing {} connection(s) still open after the grace period", session.stream_count());
    session.close_all_streams();
    arm_close_deadline();
}

// Once no new stream can arrive and every stream has closed: say goodbye.
void TunnelRun::maybe_disconnect()
{
    if (ended_ || disconnecting_ || forwards_accepting_ > 0)
        return;
    auto self = shared_from_this();
    SshSession &session = connection_->session();
    if (session.stream_count() > 0) {
        session.when_no_streams([this, self] { maybe_disconnect(); });
        return;
    }
    disconnecting_ = true;
    grace_timer_.cancel();
    arm_close_deadline();
    connection_->disconnect([this, self] { finish(Errc::stopped, "stopped"); });
}

// Closing channels and saying goodbye must not wait for a bastion that no
// longer answers.
void TunnelRun::arm_close_deadline()
{
    if (closing_streams_)
        return;
    closing_streams_ = true;
    close_deadline_.expires_after(k_close_deadline);
    close_deadline_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
        if (!ec)
            finish(Errc::stopped, "stopped");
    });
}

void TunnelRun::finish(std::error_code ec, const std::string &message)
{
    if (ended_)
        return;
    ended_ = true;
    setup_timer_.cancel();
    grace_timer_.cancel();
    close_deadline_.cancel();
    if (ec == Errc::stopped)
        log_->info("tunnel stopped");
    else
        log_->error("{}", message);
    if (connection_)
        connection_->close();
    // The handlers hold their owner; release them all (after the last call).
    auto ended = std::move(handlers_.ended);
    auto stop_done = std::move(stop_done_);
    handlers_ = {};
    if (ended)
        ended(ec, message);
    if (stop_done)
        stop_done();
}

} // namespace pytun::detail
