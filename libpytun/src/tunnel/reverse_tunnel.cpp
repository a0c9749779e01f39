// SPDX-License-Identifier: MIT
// One reverse tunnel's life cycle on an event loop.
#include "tunnel/reverse_tunnel.h"


#include <pytun/error.h>

#include "ssh/session.h"
#include "ssh/user_auth.h"

namespace pytun::detail {
namespace {

// Forwarded connections the bastion may queue in libssh2 before we accept
// them (past this the bastion gets an open failure).
constexpr int k_accept_queue = 1024;

// A health probe unanswered this long means the bastion is gone. With probes
// every keep_alive, a bastion that goes silent right after an answer is
// declared dead after keep_alive + this (+ scheduling): under keep_alive + 5 s.
constexpr std::chrono::seconds k_probe_grace{4};
// After the grace period, closing the remaining channels may take this long.
constexpr std::chrono::milliseconds k_close_deadline{500};

std::string target(const std::string &host, std::uint16_t port)
{
    return host + ":" + std::to_string(port);
}

} // namespace

ReverseTunnel::ReverseTunnel(asio::io_context &io, TunnelOptions options, std::shared_ptr<spdlog::logger> log,
                             std::shared_ptr<RelayCounters> counters, Handlers handlers)
    : io_(io), options_(std::move(options)), log_(std::move(log)), counters_(std::move(counters)),
      handlers_(std::move(handlers)), setup_timer_(io), stop_timer_(io), health_timer_(io), probe_deadline_(io)
{
}

ReverseTunnel::~ReverseTunnel()
{
    if (session_)
        session_->close();
}

std::error_code ReverseTunnel::check_options(const TunnelOptions &options, std::string &message)
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

void ReverseTunnel::start()
{
    std::string message;
    if (auto ec = check_options(options_, message)) {
        finish(ec, message);
        return;
    }
    if (auto ec = inspect_key_file(options_.key_file, key_, message)) {
        finish(ec, message);
        return;
    }
    if (key_.encrypted && options_.key_passphrase.empty()) {
        finish(Errc::key_encrypted, "the private key " + options_.key_file +
                                        " is encrypted and no passphrase was given: use an unencrypted copy for "
                                        "the service (ssh-keygen -p -N '' -f COPY)");
        return;
    }
    if (auto ec = known_hosts_.load(options_.known_hosts_file, options_.server_host, options_.server_port, *log_,
                                    message)) {
        finish(ec, message);
        return;
    }

    session_ = std::make_shared<SshSession>(io_, log_);
    auto self = shared_from_this();
    session_->on_failure([this, self](std::error_code ec, const std::string &why) {
        if (stopping_) { // the bastion may hang up first while we stop
            finish(Errc::stopped, "stopped");
            return;
        }
        finish(ec, "connection to the bastion " + target(options_.server_host, options_.server_port) +
                       " lost: " + why);
    });
    setup_timer_.expires_after(options_.connect_timeout);
    setup_timer_.async_wait([this, self](const asio::error_code &ec) {
        if (!ec && !up_)
            finish(Errc::bastion_timeout, "SSH set-up with " + target(options_.server_host, options_.server_port) +
                                              " did not finish within " +
                                              std::to_string(options_.connect_timeout.count()) + " ms");
    });
    log_->debug("connecting to {}", target(options_.server_host, options_.server_port));
    session_->connect(options_.server_host, options_.server_port, options_.connect_timeout,
                      [this, self](std::error_code ec, const std::string &why) {
                          if (ended_)
                              return;
                          if (ec) {
                              finish(ec, why);
                              return;
                          }
                          on_tcp_connected();
                      });
}

void ReverseTunnel::on_tcp_connected()
{
    std::string message;
    const std::string preference = known_hosts_.hostkey_preference();
    if (auto ec = session_->begin(preference, message)) {
        finish(ec, message);
        return;
    }
    if (!preference.empty())
        log_->debug("asking for host key types {} (what known_hosts holds for this host)", preference);
    auto self = shared_from_this();
    LIBSSH2_SESSION *ssh = session_->raw();
    const int fd = session_->socket_fd();
    session_->submit(
        "handshake", [ssh, fd] { return libssh2_session_handshake(ssh, fd); },
        [this, self](int rc) { on_handshake(rc); });
}

void ReverseTunnel::on_handshake(int rc)
{
    if (ended_)
        return;
    const std::string where = target(options_.server_host, options_.server_port);
    if (rc != 0) {
        std::string hint;
        const std::string preference = known_hosts_.hostkey_preference();
        if ((rc == LIBSSH2_ERROR_KEX_FAILURE || rc == LIBSSH2_ERROR_KEY_EXCHANGE_FAILURE) && !preference.empty())
            hint = "; the bastion may offer none of the host key types known_hosts holds for it (" + preference +
                   "): its keys may have changed";
        finish(Errc::handshake_failed, "SSH handshake with " + where + " failed: " + session_->last_error_text() + hint);
        return;
    }
    std::string message;
    if (auto ec = known_hosts_.verify(session_->raw(), message)) {
        finish(ec, message);
        return;
    }
    log_->debug("host key of {} verified", where);
    auto self = shared_from_this();
    auth_ = std::make_unique<UserAuth>(*session_, options_, key_);
    session_->submit(
        "authenticate", [this] { return auth_->attempt(); }, [this, self](int result) { on_authenticated(result); });
}

void ReverseTunnel::on_authenticated(int rc)
{
    if (ended_)
        return;
    const std::string who = options_.username + "@" + target(options_.server_host, options_.server_port);
    if (rc != 0) {
        std::string message;
        const std::error_code ec = auth_->explain(rc, message);
        finish(ec, message);
        return;
    }
    log_->debug("authenticated as {}", who);
    auto self = shared_from_this();
    LIBSSH2_SESSION *ssh = session_->raw();
    session_->submit(
        "tcpip-forward",
        [this, ssh] {
            const char *bind = options_.bind_address.empty() ? nullptr : options_.bind_address.c_str();
            listener_ = libssh2_channel_forward_listen_ex(ssh, bind, options_.listen_port, &bound_port_,
                                                          k_accept_queue);
            return listener_ ? 0 : libssh2_session_last_errno(ssh);
        },
        [this, self](int result) { on_listening(result); });
}

void ReverseTunnel::on_listening(int rc)
{
    if (ended_)
        return;
    const std::string bind = options_.bind_address.empty() ? std::string("(default address)") : options_.bind_address;
    if (rc != 0) {
        if (rc == LIBSSH2_ERROR_REQUEST_DENIED)
            finish(Errc::remote_port_refused,
                   "the bastion " + target(options_.server_host, options_.server_port) +
                       " refused to listen on port " + std::to_string(options_.listen_port) + " " + bind +
                       ": this key or user may not listen there (permitlisten in the bastion's authorized_keys, "
                       "as for keys from pytun --make-key; PermitListen or AllowTcpForwarding in its "
                       "sshd_config), or another session holds the port (another user, or a previous pytun "
                       "session the bastion has not dropped yet); the bastion's sshd log names the reason");
        else
            finish(Errc::transport_lost, "port forward request failed: " + session_->last_error_text());
        return;
    }
    up_ = true;
    setup_timer_.cancel();
    const auto port = static_cast<std::uint16_t>(bound_port_ > 0 ? bound_port_ : options_.listen_port);
    log_->info("tunnel up: bastion {} port {} -> {}", target(options_.server_host, options_.server_port), port,
               target(options_.remote_host, options_.remote_port));
    auto self = shared_from_this();
    session_->serve_listener(listener_, [this, self](LIBSSH2_CHANNEL *channel) { on_channel(channel); });
    if (options_.keep_alive.count() > 0) {
        session_->set_tcp_liveness(options_.keep_alive);
        schedule_health_check();
    }
    if (handlers_.up)
        handlers_.up(port);
}

void ReverseTunnel::schedule_health_check()
{
    health_timer_.expires_after(options_.keep_alive);
    health_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
        if (!ec && !ended_ && !stopping_)
            run_health_check();
    });
}

// Every keep_alive: an SSH keepalive, and a probe whose answer proves the
// whole path (bastion sshd included) works. No answer within 5 s: dead.
void ReverseTunnel::run_health_check()
{
    auto self = shared_from_this();
    session_->send_keepalive();
    const auto started = std::chrono::steady_clock::now();
    probe_deadline_.expires_after(k_probe_grace);
    probe_deadline_.async_wait([this, self](const asio::error_code &ec) {
        if (!ec && !ended_ && !stopping_)
            finish(Errc::transport_lost, "the bastion " + target(options_.server_host, options_.server_port) +
                                             " did not answer a health probe within " +
                                             std::to_string(k_probe_grace.count()) +
                                             " s: the connection is dead or the network drops packets");
    });
    session_->probe([this, self, started](int rc) {
        if (ended_ || stopping_)
            return;
        probe_deadline_.cancel();
        // A refused channel is an answer too: the bastion is alive.
        if (rc != 0 && rc != LIBSSH2_ERROR_CHANNEL_FAILURE && rc != LIBSSH2_ERROR_REQUEST_DENIED) {
            finish(Errc::transport_lost, "health probe failed: " + session_->last_error_text());
            return;
        }
        if (handlers_.probed)
            handlers_.probed(std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - started));
        schedule_health_check();
    });
}

void ReverseTunnel::on_channel(LIBSSH2_CHANNEL *channel)
{
    auto relay = std::make_shared<Relay>(*session_, channel, *counters_, ++next_connection_id_);
    session_->adopt(relay);
    relay->connect(options_.remote_host, options_.remote_port, options_.local_connect_timeout);
}

void ReverseTunnel::finish(std::error_code ec, const std::string &message)
{
    if (ended_)
        return;
    ended_ = true;
    setup_timer_.cancel();
    health_timer_.cancel();
    probe_deadline_.cancel();
    if (ec == Errc::stopped)
        log_->info("tunnel stopped");
    else
        log_->error("{}", message);
    if (session_)
        session_->close();
    listener_ = nullptr; // freed with the session
    // The handlers hold their owner; release them all (after the last call).
    auto ended = std::move(handlers_.ended);
    handlers_ = {};
    if (ended)
        ended(ec, message);
}

void ReverseTunnel::stop(std::chrono::milliseconds grace, std::function<void()> done)
{
    if (ended_ || !up_ || !session_ || stopping_) {
        finish(Errc::stopped, "stopped");
        asio::post(io_, std::move(done));
        return;
    }
    stopping_ = true;
    health_timer_.cancel();
    probe_deadline_.cancel();
    LIBSSH2_LISTENER *listener = listener_;
    auto session = session_;
    // Cancel first so the bastion stops accepting; open connections go on.
    session_->submit(
        "cancel-tcpip-forward",
        [session, listener] {
            session->stop_listener();
            return libssh2_channel_forward_cancel(listener);
        },
        [](int) {});
    // libssh2 does not wait for the cancel's reply. A probe after it is a
    // barrier: sshd handles requests in order, so once the probe is answered
    // the port is free again (a restart on reload can bind it at once).
    session_->probe([this, self = shared_from_this()](int) { cancel_confirmed_ = true; });
    listener_ = nullptr;
    grace_deadline_ = std::chrono::steady_clock::now() + grace;
    poll_stop(std::move(done));
}

// Every 10 ms until done: connections finished on their own, or the grace
// period is over and they are closed, or closing took too long.
void ReverseTunnel::poll_stop(std::function<void()> done)
{
    const auto now = std::chrono::steady_clock::now();
    if (ended_ || session_->closed() || (closing_relays_ && now >= hard_deadline_)) {
        finish(Errc::stopped, "stopped");
        done();
        return;
    }
    if (!disconnecting_ && session_->relay_count() == 0 && cancel_confirmed_) {
        // Every channel is closed: say goodbye, then free the session.
        disconnecting_ = true;
        closing_relays_ = true;
        hard_deadline_ = now + k_close_deadline;
        LIBSSH2_SESSION *ssh = session_->raw();
        session_->submit(
            "disconnect", [ssh] { return libssh2_session_disconnect(ssh, "pytun: tunnel stopped"); },
            [this, self = shared_from_this()](int) { finish(Errc::stopped, "stopped"); });
    } else if (!closing_relays_ && now >= grace_deadline_) {
        log_->info("closing {} connection(s) still open after the grace period", session_->relay_count());
        session_->close_all_relays();
        closing_relays_ = true;
        hard_deadline_ = now + k_close_deadline;
    }
    stop_timer_.expires_after(std::chrono::milliseconds(ended_ ? 0 : 10));
    stop_timer_.async_wait([this, self = shared_from_this(), done](const asio::error_code &) { poll_stop(done); });
}

} // namespace pytun::detail
