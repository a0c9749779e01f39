// SPDX-License-Identifier: MIT
// One run of a tunnel: a connection, its forwards, a graceful stop.
#include "tunnel/tunnel_run.h"

#include <algorithm>

#include <pytun/error.h>

#include "forward/admission.h"
#include "forward/local_forwarder.h"
#include "forward/reverse_forwarder.h"
#include "forward/socks_forwarder.h"
#include "ssh/connection.h"
#include "ssh/session.h"
#include "tunnel/jump.h"
#include "tunnel/run_status.h"
#include "tunnel/session_pool.h"
#include "vpn/capture_rules.h"
#include "vpn/transparent_forwarder.h"

namespace pytun::detail {
namespace {

// After the grace period, closing the remaining channels and saying goodbye
// may take this long.
constexpr std::chrono::milliseconds k_close_deadline{500};
// A forward that cannot serve while the others do is retried after this,
// doubling up to the maximum.
constexpr std::chrono::milliseconds k_forward_retry_initial{1000};
constexpr std::chrono::milliseconds k_forward_retry_max{30000};
// A standby asks the bastion for its port again after 1 to 2 s (jittered, so
// two standbys of one port do not ask in lockstep).
constexpr std::chrono::milliseconds k_standby_retry_min{1000};
constexpr std::chrono::milliseconds k_standby_retry_max{2000};

bool opens_channels(const ForwardSpec &spec)
{
    return std::holds_alternative<LocalForward>(spec) || std::holds_alternative<DynamicForward>(spec) ||
           std::holds_alternative<TransparentForward>(spec);
}

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
    const auto forwards = all_forwards(o);
    c.anchor = std::any_of(forwards.begin(), forwards.end(), opens_channels);
    if (std::any_of(forwards.begin(), forwards.end(),
                    [](const ForwardSpec &f) { return std::holds_alternative<TransparentForward>(f); }))
    {
        c.socket_mark = k_capture_mark; // the capture must let the bastion connections through
        c.server_nodelay = true;        // captured connections open back to back (docs/vpn.md, "Bursts")
    }
    const std::string route = describe_route(o);
    c.route = route.empty() ? route : " " + route;
    if (o.jump.host.empty()) {
        c.proxy = o.proxy;
        return c;
    }
    // ssh -J: the proxy, if any, leads to the jump host; the jump host's
    // key, user and known_hosts default to the tunnel's.
    const bool own_key = !o.jump.key_file.empty();
    ConnectionOptions j;
    j.server_host = o.jump.host;
    j.server_port = o.jump.port;
    j.username = o.jump.username.empty() ? o.username : o.jump.username;
    j.key_file = own_key ? o.jump.key_file : o.key_file;
    j.key_passphrase = own_key ? o.jump.key_passphrase : o.key_passphrase;
    j.known_hosts_file = o.jump.known_hosts_file.empty() ? o.known_hosts_file : o.jump.known_hosts_file;
    j.connect_timeout = o.connect_timeout;
    j.setup_timeout = o.connect_timeout;
    j.keep_alive = o.keep_alive;
    j.proxy = o.proxy;
    j.role = "jump host";
    j.socket_mark = c.socket_mark;
    if (o.proxy.kind != ProxyOptions::Kind::none)
        j.route = " through the proxy " + describe(o.proxy);
    c.via = JumpTransport::factory(std::move(j), o.server_host, o.server_port);
    return c;
}

} // namespace

TunnelRun::TunnelRun(asio::io_context &io, TunnelOptions options, std::shared_ptr<spdlog::logger> log,
                     std::shared_ptr<RunStatus> status, std::shared_ptr<ForwardKeeps> keeps, Handlers handlers)
    : io_(io), options_(std::move(options)), specs_(all_forwards(options_)), log_(std::move(log)),
      status_(std::move(status)), keeps_(std::move(keeps)), handlers_(std::move(handlers)), standby_timer_(io),
      random_(std::random_device{}()), setup_timer_(io), grace_timer_(io), close_deadline_(io)
{
    forwards_.resize(specs_.size());
    states_.assign(specs_.size(), ForwardState::starting);
    retry_delays_.assign(specs_.size(), k_forward_retry_initial);
    for (std::size_t i = 0; i < specs_.size(); ++i) {
        retry_timers_.push_back(std::make_unique<asio::steady_timer>(io));
        show_keep(i); // an earlier run's: shown while this one connects
    }
}

// A keep (the VPN capture) outlives runs and counts during outages: its
// state shows with its forward from the run's start.
void TunnelRun::show_keep(std::size_t index)
{
    if (const auto &keep = keeps_->slots[index])
        status_->set_capture(index, keep->capture_state());
}

TunnelRun::~TunnelRun()
{
    if (pool_)
        pool_->close();
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
    if (options.key_file.empty())
        missing += " keyfile";
    if (options.remote_host.empty() && options.forwards.empty())
        missing += " remote_host (or a forward)";
    if (!missing.empty()) {
        message = "missing required setting(s):" + missing;
        return Errc::invalid_options;
    }
    if (options.server_port == 0 || (!options.remote_host.empty() && options.remote_port == 0)) {
        message = "server_port and remote_port must be between 1 and 65535";
        return Errc::invalid_options;
    }
    if (options.proxy.kind != ProxyOptions::Kind::none && (options.proxy.host.empty() || options.proxy.port == 0)) {
        message = "the proxy needs a host and a port from 1 to 65535";
        return Errc::invalid_options;
    }
    if (!options.jump.host.empty() && options.jump.port == 0) {
        message = "the jump host's port must be between 1 and 65535";
        return Errc::invalid_options;
    }
    for (const auto &spec : options.forwards) {
        const std::string what = describe(spec);
        if (const auto *f = std::get_if<RemoteForward>(&spec); f && (f->target_host.empty() || !f->target_port))
            message = what + ": a remote forward needs a target host and port";
        else if (const auto *l = std::get_if<LocalForward>(&spec); l && (l->target_host.empty() || !l->target_port))
            message = what + ": a local forward needs a target host and port";
        else if (const auto *r = std::get_if<RemoteDynamicForward>(&spec); r && r->allow.empty())
            message = what + ": a reverse SOCKS forward needs an allowlist (allow): without one any client of the "
                             "bastion port could reach the whole local network";
        else if (const auto *t = std::get_if<TransparentForward>(&spec))
            if (std::string problem = check_transparent_forward(*t); !problem.empty())
                message = what + ": " + problem;
        if (!message.empty())
            return Errc::invalid_options;
    }
    if (std::count_if(options.forwards.begin(), options.forwards.end(), [](const ForwardSpec &f) {
            return std::holds_alternative<TransparentForward>(f);
        }) > 1) {
        message = "a tunnel carries one VPN capture at most: merge their subnets, or use two tunnels";
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
    SshConnection::Handlers handlers;
    handlers.ready = [this, self] { on_ready(); };
    handlers.failed = [this, self](std::error_code ec, const std::string &why) { on_connection_failed(ec, why); };
    handlers.probed = [this, self](std::chrono::microseconds rtt) {
        if (handlers_.probed)
            handlers_.probed(rtt);
    };
    const ConnectionOptions connection = connection_options(options_);
    connection_ = std::make_shared<SshConnection>(io_, connection, log_, std::move(handlers));
    SessionPool::Limits limits;
    limits.max_sessions = std::max(1u, options_.max_sessions);
    // Warm sessions only serve channels pytun opens (-L, -D, the VPN).
    const bool opening = std::any_of(specs_.begin(), specs_.end(), opens_channels);
    limits.min_sessions = opening ? std::clamp(options_.min_sessions, 1u, limits.max_sessions) : 1u;
    pool_ = std::make_shared<SessionPool>(io_, connection, log_, limits, status_);
    admission_ = std::make_unique<Admission>(options_.max_connections,
                                             [status = status_] { return status->total().connections_active; });
    setup_timer_.expires_after(options_.connect_timeout);
    setup_timer_.async_wait([this, self](const asio::error_code &ec) {
        if (!ec && !up_) {
            const auto [code, why] = connection_->overdue(options_.connect_timeout);
            finish(code, why);
        }
    });
    connection_->start();
}

void TunnelRun::on_ready()
{
    pool_->add_primary(connection_);
    for (std::size_t i = 0; i < specs_.size() && !ended_; ++i)
        start_forward(i);
}

void TunnelRun::start_forward(std::size_t index)
{
    struct Make {
        TunnelRun &run;
        std::size_t index;
        std::shared_ptr<Forward> operator()(const RemoteForward &f) const
        {
            ReverseForwarderSpec spec;
            spec.bind_address = f.bind_address;
            spec.listen_port = f.listen_port;
            spec.target_host = f.target_host;
            spec.target_port = f.target_port;
            spec.connect_timeout = run.options_.local_connect_timeout;
            return std::make_shared<ReverseForwarder>(spec, run.log_, run.status_->counters(index));
        }
        std::shared_ptr<Forward> operator()(const LocalForward &f) const
        {
            return std::make_shared<LocalForwarder>(run.io_, f, run.log_, run.status_->counters(index));
        }
        std::shared_ptr<Forward> operator()(const DynamicForward &f) const
        {
            return std::make_shared<SocksForwarder>(run.io_, f, run.options_.open_timeout, run.log_,
                                                    run.status_->counters(index));
        }
        std::shared_ptr<Forward> operator()(const RemoteDynamicForward &f) const
        {
            ReverseForwarderSpec spec;
            spec.bind_address = f.bind_address;
            spec.listen_port = f.listen_port;
            spec.allow = f.allow;
            spec.connect_timeout = run.options_.local_connect_timeout;
            return std::make_shared<ReverseForwarder>(spec, run.log_, run.status_->counters(index));
        }
        std::shared_ptr<Forward> operator()(const TransparentForward &f) const
        {
            return std::make_shared<TransparentForwarder>(run.io_, f, run.options_, run.log_,
                                                          run.status_->counters(index));
        }
    };
    auto forward = std::visit(Make{*this, index}, specs_[index]);
    states_[index] = ForwardState::starting;
    forwards_[index] = forward;
    auto self = shared_from_this();
    Forward::Handlers handlers;
    handlers.ready = [this, self, index, round = round_](std::uint16_t port) {
        if (round == round_)
            on_forward_ready(index, port);
    };
    handlers.failed = [this, self, index, round = round_](std::error_code ec, const std::string &why) {
        if (round == round_)
            on_forward_failed(index, ec, why);
    };
    handlers.described = [this, self, index](const std::string &detail) { status_->set_detail(index, detail); };
    forward->start(ForwardContext{*connection_, *pool_, *admission_, keeps_->slots[index]}, std::move(handlers));
    show_keep(index); // made by the first run's start
}

void TunnelRun::on_forward_ready(std::size_t index, std::uint16_t bound_port)
{
    if (ended_)
        return;
    states_[index] = ForwardState::serving;
    retry_delays_[index] = k_forward_retry_initial;
    status_->set_serving(index, bound_port);
    if (up_)
        log_->info("forward serving again: {}", describe(specs_[index]));
    else
        check_started();
}

void TunnelRun::on_forward_failed(std::size_t index, std::error_code ec, const std::string &message)
{
    if (ended_)
        return;
    states_[index] = ForwardState::failed;
    status_->set_failed(index, message);
    // Called from inside the forward: drop it only after it has returned.
    asio::post(io_, [self = shared_from_this(), forward = std::move(forwards_[index])] {});
    if (!first_error_) {
        first_error_ = ec;
        first_error_message_ = message;
    }
    if (ec == Errc::remote_port_refused && !port_refused_) {
        port_refused_ = true;
        first_error_ = ec; // what a standby waits for, and what ends the run otherwise
        first_error_message_ = message;
    }
    if (up_) {
        log_->warn("forward {} cannot serve: {}", describe(specs_[index]), message);
        schedule_retry(index);
    } else {
        check_started();
    }
}

// Up once every forward has started or failed, with at least one serving;
// the run fails with the first error when none serves.
void TunnelRun::check_started()
{
    if (std::count(states_.begin(), states_.end(), ForwardState::starting) > 0)
        return;
    if (port_refused_ && options_.standby && handlers_.standby) {
        enter_standby();
        return;
    }
    const auto serving = std::find(states_.begin(), states_.end(), ForwardState::serving);
    if (serving == states_.end()) {
        finish(first_error_, first_error_message_);
        return;
    }
    up_ = true;
    standby_ = false;
    setup_timer_.cancel();
    for (std::size_t i = 0; i < specs_.size(); ++i)
        if (states_[i] == ForwardState::failed) {
            log_->warn("forward {} cannot serve, the others do; retrying it: {}", describe(specs_[i]),
                       status_->forwards()[i].error);
            schedule_retry(i);
        }
    connection_->start_health_checks();
    const auto forwards = status_->forwards();
    const std::uint16_t port = forwards[static_cast<std::size_t>(serving - states_.begin())].bound_port;
    if (handlers_.up)
        handlers_.up(port);
}

// Another connector holds a port of this connection: the active holds every
// port, the standby none, so give back what this round got, keep the session
// (no new login) and ask again in 1-2 s.
void TunnelRun::enter_standby()
{
    for (std::size_t i = 0; i < forwards_.size(); ++i) {
        if (forwards_[i])
            forwards_[i]->stop_accepting([] {}); // it holds itself until the bastion has released the port
        status_->set_failed(i, "standby: " + (states_[i] == ForwardState::failed ? status_->forwards()[i].error
                                                                                  : std::string("given back while another connector holds a port of this connection")));
    }
    // Called from inside a forward: drop them only after it has returned.
    asio::post(io_, [forwards = std::move(forwards_)] {});
    forwards_.assign(specs_.size(), nullptr);
    if (!standby_) {
        standby_ = true;
        setup_timer_.cancel();
        connection_->start_health_checks(); // a standby notices a dead bastion like an active tunnel
        log_->info("standby: {}; asking again every 1-2 s on this session", first_error_message_);
        handlers_.standby(first_error_message_);
    }
    std::uniform_int_distribution<long long> jitter(k_standby_retry_min.count(), k_standby_retry_max.count());
    standby_timer_.expires_after(std::chrono::milliseconds(jitter(random_)));
    standby_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
        if (ec || ended_ || stopping_)
            return;
        ++round_;
        port_refused_ = false;
        first_error_ = {};
        first_error_message_.clear();
        for (std::size_t i = 0; i < specs_.size() && !ended_; ++i)
            start_forward(i);
    });
}

void TunnelRun::schedule_retry(std::size_t index)
{
    auto &timer = *retry_timers_[index];
    timer.expires_after(retry_delays_[index]);
    retry_delays_[index] = std::min(retry_delays_[index] * 2, k_forward_retry_max);
    timer.async_wait([this, self = shared_from_this(), index](const asio::error_code &ec) {
        if (!ec && !ended_ && !stopping_)
            start_forward(index);
    });
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
    for (auto &timer : retry_timers_)
        timer->cancel();
    auto self = shared_from_this();
    forwards_accepting_ = 1; // released below, after every forward was asked
    for (auto &forward : forwards_)
        if (forward) {
            ++forwards_accepting_;
            forward->stop_accepting([this, self] {
                if (--forwards_accepting_ == 0)
                    maybe_disconnect();
            });
        }
    if (--forwards_accepting_ == 0)
        maybe_disconnect();
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
    if (const std::size_t open = pool_->stream_count(); open > 0)
        log_->info("closing {} connection(s) still open after the grace period", open);
    pool_->close_all_streams();
    arm_close_deadline();
}

// Once no new stream can arrive and every stream has closed: say goodbye.
void TunnelRun::maybe_disconnect()
{
    if (ended_ || disconnecting_ || forwards_accepting_ > 0)
        return;
    auto self = shared_from_this();
    if (pool_->stream_count() > 0) {
        pool_->when_no_streams([this, self] { maybe_disconnect(); });
        return;
    }
    disconnecting_ = true;
    grace_timer_.cancel();
    arm_close_deadline();
    pool_->close();
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
    standby_timer_.cancel();
    grace_timer_.cancel();
    close_deadline_.cancel();
    for (auto &timer : retry_timers_)
        timer->cancel();
    if (ec == Errc::stopped)
        log_->info("tunnel stopped");
    else
        log_->error("{}", message);
    for (auto &forward : forwards_)
        if (forward)
            forward->stop_accepting([] {});
    // The forwards hold this run in their handlers: let them go, but not
    // from inside one of their own calls (finish may run in one).
    asio::post(io_, [forwards = std::move(forwards_)] {});
    forwards_.clear();
    if (pool_)
        pool_->close();
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
