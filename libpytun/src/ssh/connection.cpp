// SPDX-License-Identifier: MIT
// One SSH connection's life: connect, verify, authenticate, keep alive.
#include "ssh/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <pytun/error.h>

#include "loop/connect.h"
#include "ssh/command.h"
#include "ssh/proxy.h"
#include "ssh/session.h"
#include "ssh/user_auth.h"

namespace pytun::detail {
namespace {

// A health probe unanswered this long means the bastion is gone. With probes
// every keep_alive, a bastion that goes silent right after an answer is
// declared dead after keep_alive + this (+ scheduling): under keep_alive + 5 s.
constexpr std::chrono::seconds k_probe_grace{4};

// TCP keepalive and TCP_USER_TIMEOUT sized from the health interval, so the
// kernel gives up on a silent bastion within keep_alive + k_probe_grace too.
void set_tcp_liveness(int fd, std::chrono::seconds keep_alive)
{
    const int one = 1;
    const int idle = static_cast<int>(std::max<std::int64_t>(1, keep_alive.count()));
    const int interval = std::max(1, idle / 3);
    const int count = 3;
    const auto user_timeout = static_cast<unsigned>((keep_alive + k_probe_grace).count() * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    // Unacknowledged data older than this kills the connection.
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

// A refused channel or request is an answer too: the bastion is alive.
bool probe_answered(int rc)
{
    return rc == 0 || rc == LIBSSH2_ERROR_CHANNEL_FAILURE || rc == LIBSSH2_ERROR_REQUEST_DENIED ||
           rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED;
}

} // namespace

SshConnection::SshConnection(asio::io_context &io, ConnectionOptions options, std::shared_ptr<spdlog::logger> log,
                             Handlers handlers)
    : io_(io), options_(std::move(options)), log_(std::move(log)), handlers_(std::move(handlers)), socket_(io),
      setup_timer_(io), health_timer_(io), probe_deadline_(io)
{
}

SshConnection::~SshConnection()
{
    close();
}

std::string SshConnection::where() const
{
    return options_.server_host + ":" + std::to_string(options_.server_port);
}

void SshConnection::start()
{
    std::string message;
    if (auto ec = inspect_key_file(options_.key_file, key_, message)) {
        fail(ec, message);
        return;
    }
    if (key_.encrypted && options_.key_passphrase.empty()) {
        fail(Errc::key_encrypted, "the private key " + options_.key_file +
                                      " is encrypted and no passphrase was given: use an unencrypted copy for "
                                      "the service (ssh-keygen -p -N '' -f COPY)");
        return;
    }
    if (auto ec = known_hosts_.load(options_.known_hosts_file, options_.server_host, options_.server_port, *log_,
                                    message)) {
        fail(ec, message);
        return;
    }
    if (options_.setup_timeout.count() > 0) {
        setup_timer_.expires_after(options_.setup_timeout);
        setup_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
            if (!ec && !ended_) {
                const auto [code, why] = overdue(options_.setup_timeout);
                fail(code, why);
            }
        });
    }
    log_->debug("connecting to {}{}", where(), route());
    if (options_.via)
        connect_via();
    else
        connect_direct();
}

// A TCP connect to the bastion, or to the proxy and through it. The connect
// deadline covers the proxy's handshake too.
void SshConnection::connect_direct()
{
    const bool proxied = options_.proxy.kind != ProxyOptions::Kind::none;
    const std::string &host = proxied ? options_.proxy.host : options_.server_host;
    const std::uint16_t port = proxied ? options_.proxy.port : options_.server_port;
    const std::string first_hop = proxied ? "the proxy " + describe(options_.proxy) : where();
    const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
    connect_with_deadline(
        socket_, host, port, options_.connect_timeout,
        [this, self = shared_from_this(), proxied, first_hop, deadline](const ConnectOutcome &outcome) {
            if (ended_)
                return;
            using Failure = ConnectOutcome::Failure;
            switch (outcome.failure) {
            case Failure::none:
                log_->debug("TCP connected to {}:{}", outcome.endpoint.address().to_string(), outcome.endpoint.port());
                if (!proxied) {
                    on_transport(SshSession::Socket(std::move(socket_)));
                    return;
                }
                proxying_ = true;
                proxy_handshake(socket_, options_.proxy, options_.server_host, options_.server_port, deadline,
                                [this, self](std::error_code ec, const std::string &message) {
                                    proxying_ = false;
                                    if (ended_)
                                        return;
                                    if (ec) {
                                        fail(ec, message);
                                        return;
                                    }
                                    log_->debug("the proxy {} connected us to {}", describe(options_.proxy), where());
                                    on_transport(SshSession::Socket(std::move(socket_)));
                                });
                return;
            case Failure::resolve:
                if (proxied)
                    fail(Errc::proxy_failed, "cannot resolve the proxy's host '" + options_.proxy.host +
                                                 "': " + outcome.error.message());
                else
                    fail(Errc::bastion_unresolved, "cannot resolve " + options_.role + " host '" + options_.server_host +
                                                       "': " + outcome.error.message());
                return;
            case Failure::connect:
                fail(proxied ? Errc::proxy_failed : Errc::bastion_unreachable,
                     "cannot connect to " + first_hop + ": " + outcome.error.message());
                return;
            case Failure::timeout:
                fail(proxied ? Errc::proxy_failed : Errc::bastion_timeout,
                     "no answer from " + first_hop + " within " + std::to_string(options_.connect_timeout.count()) +
                         " ms");
                return;
            }
        },
        nullptr, options_.socket_mark);
}

std::pair<std::error_code, std::string> SshConnection::overdue(std::chrono::milliseconds limit) const
{
    const std::string within = " within " + std::to_string(limit.count()) + " ms";
    if (proxying_)
        return {Errc::proxy_failed, "the proxy " + describe(options_.proxy) + " did not answer the request for " +
                                        where() + within + " (connect_timeout)"};
    return {Errc::bastion_timeout, "SSH set-up with " + where() + route() + " did not finish" + within};
}

void SshConnection::connect_via()
{
    transport_ = options_.via(io_, log_);
    auto self = shared_from_this();
    transport_->start(
        [this, self](std::error_code ec, const std::string &message, SshSession::Socket socket) {
            if (ended_)
                return;
            if (ec) {
                fail(ec, message);
                return;
            }
            on_transport(std::move(socket));
        },
        [this, self](std::error_code ec, const std::string &message) { fail(ec, message); });
}

void SshConnection::on_transport(SshSession::Socket socket)
{
    session_ = std::make_shared<SshSession>(std::move(socket), log_);
    auto self = shared_from_this();
    session_->on_failure([this, self](std::error_code ec, const std::string &why) {
        fail(ec, "connection to the " + options_.role + " " + where() + route() + " lost: " + why);
    });
    std::string message;
    const std::string preference = known_hosts_.hostkey_preference();
    if (auto ec = session_->begin(preference, message)) {
        fail(ec, message);
        return;
    }
    if (!preference.empty())
        log_->debug("asking for host key types {} (what known_hosts holds for this host)", preference);
    LIBSSH2_SESSION *ssh = session_->raw();
    const int fd = session_->socket_fd();
    session_->submit(
        "handshake", [ssh, fd] { return libssh2_session_handshake(ssh, fd); },
        [this, self](int rc) { on_handshake(rc); });
}

void SshConnection::on_handshake(int rc)
{
    if (ended_)
        return;
    if (rc != 0) {
        std::string hint;
        const std::string preference = known_hosts_.hostkey_preference();
        if ((rc == LIBSSH2_ERROR_KEX_FAILURE || rc == LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE) && !preference.empty())
            hint = "; the " + options_.role + " may offer none of the host key types known_hosts holds for it (" + preference +
                   "): its keys may have changed";
        fail(Errc::handshake_failed,
             "SSH handshake with " + where() + " failed: " + session_->last_error_text() + hint);
        return;
    }
    std::string message;
    if (auto ec = known_hosts_.verify(session_->raw(), message)) {
        fail(ec, message);
        return;
    }
    log_->debug("host key of {} verified", where());
    auth_ = std::make_unique<UserAuth>(*session_, options_, key_);
    session_->submit(
        "authenticate", [this] { return auth_->attempt(); },
        [this, self = shared_from_this()](int result) { on_authenticated(result); });
}

void SshConnection::on_authenticated(int rc)
{
    if (ended_)
        return;
    const std::string who = options_.username + "@" + where();
    if (rc != 0) {
        std::string message;
        const std::error_code ec = auth_->explain(rc, message);
        fail(ec, message);
        return;
    }
    log_->debug("authenticated as {}", who);
    if (options_.anchor) {
        open_anchor();
        return;
    }
    become_ready();
}

void SshConnection::become_ready()
{
    if (options_.server_nodelay && !asked_server_nodelay_) {
        asked_server_nodelay_ = true;
        ask_server_nodelay(); // comes back here once sshd has answered
        return;
    }
    setup_timer_.cancel();
    if (handlers_.ready)
        handlers_.ready();
}

// Ready only once sshd has answered the exec request (it has set
// TCP_NODELAY by then), not when the command ends: a forced command may
// run on until the command's timeout.
void SshConnection::ask_server_nodelay()
{
    CommandLimits limits;
    limits.max_output = 0;
    run_command(
        *session_, "true", limits,
        [log = log_, where = where()](CommandResult result) {
            if (result.failure != CommandResult::Failure::none)
                log->debug("{}: running `true` to make sshd send without delay failed ({}); small replies may wait "
                           "a round trip",
                           where, result.message);
        },
        [weak = weak_from_this()] {
            if (auto self = weak.lock(); self && !self->ended_)
                self->become_ready();
        });
}

void SshConnection::open_anchor()
{
    auto channel = std::make_shared<LIBSSH2_CHANNEL *>(nullptr);
    LIBSSH2_SESSION *ssh = session_->raw();
    session_->submit(
        "open anchor channel",
        [ssh, channel] {
            *channel = libssh2_channel_open_ex(ssh, "session", sizeof("session") - 1, LIBSSH2_CHANNEL_WINDOW_DEFAULT,
                                               LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
            return *channel ? 0 : libssh2_session_last_errno(ssh);
        },
        [this, self = shared_from_this(), channel](int rc) {
            if (ended_)
                return;
            if (*channel)
                session_->set_anchor(*channel);
            else // e.g. MaxSessions 0: streams' channels read instead, probes open channels
                log_->info("the {} {} refused an idle session channel ({}); going on without one", options_.role, where(),
                           session_->last_error_text());
            (void)rc;
            become_ready();
        },
        SshSession::Lane::open);
}

void SshConnection::start_health_checks()
{
    if (options_.keep_alive.count() <= 0 || !session_ || checking_health_)
        return;
    checking_health_ = true;
    if (session_->is_tcp()) // else the transport's own connection watches the network
        set_tcp_liveness(session_->socket_fd(), options_.keep_alive);
    schedule_health_check();
}

void SshConnection::stop_health_checks()
{
    checking_health_ = false;
    health_timer_.cancel();
    probe_deadline_.cancel();
}

void SshConnection::schedule_health_check()
{
    health_timer_.expires_after(options_.keep_alive);
    health_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
        if (!ec && !ended_ && checking_health_)
            run_health_check();
    });
}

// Every keep_alive: an SSH keepalive, and a probe whose answer proves the
// whole path (bastion sshd included) works. Its deadline runs from when it
// is sent.
void SshConnection::run_health_check()
{
    auto self = shared_from_this();
    session_->send_keepalive();
    auto started = std::make_shared<std::chrono::steady_clock::time_point>();
    probe(
        [this, self, started](int rc) {
            if (ended_ || !checking_health_)
                return;
            probe_deadline_.cancel();
            if (!probe_answered(rc)) {
                fail(Errc::transport_lost, "health probe failed: " + session_->last_error_text());
                return;
            }
            if (handlers_.probed)
                handlers_.probed(
                    std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - *started));
            schedule_health_check();
        },
        [this, self, started] {
            *started = std::chrono::steady_clock::now();
            probe_deadline_.expires_after(k_probe_grace);
            probe_deadline_.async_wait([this, self](const asio::error_code &ec) {
                if (!ec && !ended_ && checking_health_)
                    fail(Errc::transport_lost, "the " + options_.role + " " + where() + " did not answer a health probe within " +
                                                   std::to_string(k_probe_grace.count()) +
                                                   " s: the connection is dead or the network drops packets");
            });
        });
}

void SshConnection::probe(std::function<void(int rc)> done, std::function<void()> started)
{
    auto session = session_;
    // Runs `started` before the first attempt of the probe's first call.
    auto first_attempt = [started = std::make_shared<std::function<void()>>(std::move(started))] {
        if (*started) {
            auto call = std::move(*started);
            *started = nullptr;
            call();
        }
    };
    if (LIBSSH2_CHANNEL *anchor = session->anchor()) {
        static constexpr char k_name[] = "PYTUN_PROBE";
        session->submit(
            "probe: request on the anchor channel",
            [anchor, first_attempt] {
                first_attempt();
                return libssh2_channel_setenv_ex(anchor, k_name, sizeof(k_name) - 1, "1", 1);
            },
            [this, self = shared_from_this(), session, done](int rc) {
                if (rc == 0 || rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED) {
                    done(0);
                    return;
                }
                // The bastion closed the anchor (e.g. a channel timeout): go
                // on without it; open-and-close probes from now on.
                log_->debug("anchor channel unusable ({}); probing with channel opens", session->last_error_text());
                session->set_anchor(nullptr);
                probe(done);
            },
            SshSession::Lane::anchor);
        return;
    }
    auto channel = std::make_shared<LIBSSH2_CHANNEL *>(nullptr);
    session->submit(
        "probe: open session channel",
        [session, channel, first_attempt] {
            first_attempt();
            *channel = libssh2_channel_open_ex(session->raw(), "session", sizeof("session") - 1,
                                               LIBSSH2_CHANNEL_WINDOW_DEFAULT, LIBSSH2_CHANNEL_PACKET_DEFAULT,
                                               nullptr, 0);
            return *channel ? 0 : libssh2_session_last_errno(session->raw());
        },
        [session, channel, done](int rc) {
            if (rc != 0) {
                done(rc);
                return;
            }
            session->submit(
                "probe: close session channel",
                [channel] {
                    int close_rc = libssh2_channel_close(*channel);
                    return close_rc == LIBSSH2_ERROR_EAGAIN ? close_rc : libssh2_channel_free(*channel);
                },
                [done](int) { done(0); }); // a close needs no open state: not behind other opens
        },
        SshSession::Lane::open);
}

void SshConnection::disconnect(std::function<void()> done)
{
    stop_health_checks();
    if (ended_ || !session_) {
        close();
        asio::post(io_, std::move(done));
        return;
    }
    LIBSSH2_SESSION *ssh = session_->raw();
    session_->submit(
        "disconnect", [ssh] { return libssh2_session_disconnect(ssh, "pytun: tunnel stopped"); },
        [this, self = shared_from_this(), done](int) {
            close();
            done();
        });
}

void SshConnection::fail(std::error_code ec, const std::string &message)
{
    if (ended_)
        return;
    auto failed = std::move(handlers_.failed);
    close();
    if (failed)
        failed(ec, message);
}

void SshConnection::close()
{
    if (ended_)
        return;
    ended_ = true;
    stop_health_checks();
    setup_timer_.cancel();
    asio::error_code ignored;
    socket_.close(ignored);
    if (session_)
        session_->close();
    if (transport_)
        transport_->close();
    // The handlers hold their owner: release them.
    handlers_ = {};
}

} // namespace pytun::detail
