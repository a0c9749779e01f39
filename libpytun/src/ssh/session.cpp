// SPDX-License-Identifier: MIT
// The session driver: the only caller of libssh2 for one session.
#include "ssh/session.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <pytun/crypto.h>
#include <pytun/error.h>

#include "forward/relay.h"
#include "ssh/libssh2_global.h"

namespace pytun::detail {
namespace {

// Channel-level failures close one channel; every other error means the
// session (the transport) is gone.
bool is_channel_level(int rc)
{
    switch (rc) {
    case LIBSSH2_ERROR_CHANNEL_OUTOFORDER:
    case LIBSSH2_ERROR_CHANNEL_FAILURE:
    case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED:
    case LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED:
    case LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED:
    case LIBSSH2_ERROR_CHANNEL_CLOSED:
    case LIBSSH2_ERROR_CHANNEL_EOF_SENT:
    case LIBSSH2_ERROR_CHANNEL_WINDOW_FULL:
    case LIBSSH2_ERROR_INVAL:
        return true;
    default:
        return false;
    }
}

// Upper bound of bytes moved for one channel in one pass, so one busy
// connection cannot starve the others.
constexpr std::size_t k_send_budget_per_pass = 512 * 1024;

// Reads shorter than this look like interactive traffic (see recv_callback).
constexpr ssize_t k_small_read = 4096;

} // namespace

SshSession::SshSession(asio::io_context &io, Logger log)
    : io_(io), log_(std::move(log)), socket_(io), resolver_(io), connect_timer_(io), housekeeping_timer_(io)
{
}

SshSession::~SshSession()
{
    close();
}

void SshSession::connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout, Done done)
{
    auto self = shared_from_this();
    auto finished = std::make_shared<bool>(false);
    auto complete = [this, self, finished, done](std::error_code ec, std::string message) {
        if (*finished)
            return;
        *finished = true;
        connect_timer_.cancel();
        done(ec, std::move(message));
    };
    connect_timer_.expires_after(timeout);
    connect_timer_.async_wait([this, self, complete, host, port, timeout](const asio::error_code &ec) {
        if (ec)
            return;
        resolver_.cancel();
        asio::error_code ignored;
        socket_.close(ignored);
        complete(Errc::bastion_timeout, "no answer from " + host + ":" + std::to_string(port) + " within " +
                                            std::to_string(timeout.count()) + " ms");
    });
    resolver_.async_resolve(
        host, std::to_string(port),
        [this, self, complete, host, port](const asio::error_code &ec, asio::ip::tcp::resolver::results_type results) {
            if (ec) {
                if (ec == asio::error::operation_aborted)
                    return;
                complete(Errc::bastion_unresolved, "cannot resolve bastion host '" + host + "': " + ec.message());
                return;
            }
            asio::async_connect(socket_, results,
                                [this, self, complete, host, port](const asio::error_code &cec,
                                                                   const asio::ip::tcp::endpoint &endpoint) {
                                    if (cec) {
                                        if (cec == asio::error::operation_aborted)
                                            return;
                                        complete(Errc::bastion_unreachable, "cannot connect to " + host + ":" +
                                                                                std::to_string(port) + ": " +
                                                                                cec.message());
                                        return;
                                    }
                                    log_->debug("TCP connected to {}:{}", endpoint.address().to_string(),
                                                endpoint.port());
                                    complete({}, {});
                                });
        });
}

ssize_t SshSession::send_callback(libssh2_socket_t fd, const void *buffer, std::size_t length, int flags,
                                  void **abstract)
{
    auto *self = static_cast<SshSession *>(*abstract);
    if (self->closed_)
        return -EPIPE; // close(): let libssh2 free everything without touching the network
    if (self->batching_sends_) {
        flags |= MSG_MORE;
        self->sends_held_ = true;
    }
    for (;;) {
        ssize_t n = ::send(fd, buffer, length, flags | MSG_NOSIGNAL);
        if (n >= 0) {
            // libssh2 keeps one packet pending at a time: a short write means
            // it is half-sent, a full write means nothing is pending.
            self->outbound_partial_ = static_cast<std::size_t>(n) < length;
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            self->outbound_partial_ = true;
            return -EAGAIN;
        }
        self->socket_errno_ = errno;
        return -errno;
    }
}

ssize_t SshSession::recv_callback(libssh2_socket_t fd, void *buffer, std::size_t length, int flags,
                                  void **abstract)
{
    auto *self = static_cast<SshSession *>(*abstract);
    if (self->closed_)
        return -ECONNRESET;
    for (;;) {
        ssize_t n = ::recv(fd, buffer, length, flags);
        if (n > 0) {
            self->bytes_received_ += static_cast<std::uint64_t>(n);
            // Quick ACKs are not sticky in Linux: re-arm after each small read
            // so the bastion never waits for a delayed ACK (its Nagle + our
            // delayed ACK would add up to 40 ms to small exchanges). Bulk
            // transfers are ACKed promptly anyway and skip the syscall.
            if (n < k_small_read) {
                int one = 1;
                ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
            }
            return n;
        }
        if (n == 0) {
            self->peer_closed_ = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        self->socket_errno_ = errno;
        return -errno;
    }
}

// SSH_MSG_DISCONNECT (e.g. "Too many authentication failures"): the
// transport is over even while the TCP connection still lingers.
void SshSession::disconnect_callback(LIBSSH2_SESSION *, int, const char *, int, const char *, int, void **abstract)
{
    static_cast<SshSession *>(*abstract)->peer_closed_ = true;
}

std::error_code SshSession::begin(const std::string &hostkey_preference, std::string &message)
{
    ensure_libssh2_initialised();
    static std::once_flag logged_cipher;
    std::call_once(logged_cipher, [this] { log_->debug("AES-CTR for libssh2: {}", aes_ctr_implementation()); });
    ssh_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, this);
    if (!ssh_) {
        message = "libssh2 could not allocate a session";
        return Errc::handshake_failed;
    }
    asio::error_code ec;
    socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    socket_.non_blocking(true, ec);
    int fd = socket_.native_handle();
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));

    libssh2_session_set_blocking(ssh_, 0);
    // want_reply=0: replies to keepalives are never consumed by libssh2 and
    // would pile up (see libssh2.md). Interval 1: send whenever we ask.
    libssh2_keepalive_config(ssh_, 0, 1);
    // ISO C++ has no cast between function and object pointers; libssh2's
    // API takes the callback as void*.
    void *send_fn = nullptr;
    void *recv_fn = nullptr;
    void *disconnect_fn = nullptr;
    auto send_ptr = &SshSession::send_callback;
    auto recv_ptr = &SshSession::recv_callback;
    auto disconnect_ptr = &SshSession::disconnect_callback;
    static_assert(sizeof(send_ptr) == sizeof(void *));
    std::memcpy(&send_fn, &send_ptr, sizeof(send_fn));
    std::memcpy(&recv_fn, &recv_ptr, sizeof(recv_fn));
    std::memcpy(&disconnect_fn, &disconnect_ptr, sizeof(disconnect_fn));
    libssh2_session_callback_set(ssh_, LIBSSH2_CALLBACK_SEND, send_fn);
    libssh2_session_callback_set(ssh_, LIBSSH2_CALLBACK_RECV, recv_fn);
    libssh2_session_callback_set(ssh_, LIBSSH2_CALLBACK_DISCONNECT, disconnect_fn);

    if (!hostkey_preference.empty() &&
        libssh2_session_method_pref(ssh_, LIBSSH2_METHOD_HOSTKEY, hostkey_preference.c_str()) != 0) {
        log_->warn("libssh2 rejected host key preference '{}': {}", hostkey_preference, last_error_text());
    }
    return {};
}

void SshSession::set_tcp_liveness(std::chrono::seconds keep_alive)
{
    const int fd = socket_.native_handle();
    const int one = 1;
    const int idle = static_cast<int>(std::max<std::int64_t>(1, keep_alive.count()));
    const int interval = std::max(1, idle / 3);
    const int count = 3;
    const unsigned user_timeout = static_cast<unsigned>((keep_alive.count() + 4) * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    // Unacknowledged data older than this kills the connection (the same
    // bound as the health probe's: keep_alive + 4 s).
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

// libssh2_keepalive_send treats EAGAIN as success and leaves the half-sent
// packet pointing at its own stack frame: the next send would then fail with
// BAD_USE forever. So it is only called when the whole packet surely fits
// into the socket's send buffer.
bool SshSession::keepalive_fits() const
{
    if (outbound_partial_)
        return false;
    const int fd = const_cast<asio::ip::tcp::socket &>(socket_).native_handle();
    int queued = 0;
    int sndbuf = 0;
    socklen_t len = sizeof(sndbuf);
    if (::ioctl(fd, SIOCOUTQ, &queued) != 0 || ::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0)
        return false;
    return queued < sndbuf / 4;
}

void SshSession::send_keepalive()
{
    submit(
        "keepalive",
        [this] {
            if (!keepalive_fits())
                return 0; // the probe checks liveness anyway
            int seconds_to_next = 0;
            return libssh2_keepalive_send(ssh_, &seconds_to_next);
        },
        [](int) {});
}

void SshSession::probe(std::function<void(int rc)> done)
{
    auto channel = std::make_shared<LIBSSH2_CHANNEL *>(nullptr);
    submit(
        "probe: open session channel",
        [this, channel] {
            *channel = libssh2_channel_open_ex(ssh_, "session", sizeof("session") - 1, LIBSSH2_CHANNEL_WINDOW_DEFAULT,
                                               LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
            return *channel ? 0 : libssh2_session_last_errno(ssh_);
        },
        [this, channel, done](int rc) {
            if (rc != 0) {
                done(rc);
                return;
            }
            submit(
                "probe: close session channel",
                [channel] {
                    int close_rc = libssh2_channel_close(*channel);
                    return close_rc == LIBSSH2_ERROR_EAGAIN ? close_rc : libssh2_channel_free(*channel);
                },
                [done](int) { done(0); });
        });
}

std::string SshSession::last_error_text() const
{
    if (!ssh_)
        return "no session";
    char *text = nullptr;
    int len = 0;
    int rc = libssh2_session_last_error(ssh_, &text, &len, 0);
    std::string out = text && len > 0 ? std::string(text, static_cast<std::size_t>(len)) : std::string("no detail");
    return out + " (libssh2 error " + std::to_string(rc) + ")";
}

void SshSession::submit(const char *what, std::function<int()> attempt, std::function<void(int)> done)
{
    ops_.push_back({what, std::move(attempt), std::move(done)});
    wake();
}

void SshSession::serve_listener(LIBSSH2_LISTENER *listener, std::function<void(LIBSSH2_CHANNEL *)> on_channel)
{
    listener_ = listener;
    transport_readable_ = true; // opens may have arrived with the forward's reply
    on_channel_ = std::move(on_channel);
    schedule_housekeeping();
    wake();
}

// Once a second: idle relays give their buffer memory back.
void SshSession::schedule_housekeeping()
{
    housekeeping_timer_.expires_after(std::chrono::seconds(1));
    housekeeping_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
        if (ec || closed_)
            return;
        for (auto &relay : relays_)
            relay->release_idle_buffers();
        schedule_housekeeping();
    });
}

void SshSession::stop_listener()
{
    listener_ = nullptr;
    on_channel_ = nullptr;
}

void SshSession::adopt(std::shared_ptr<Relay> relay)
{
    relays_.push_back(std::move(relay));
    rescan_receive_ = true;
    wake();
}

void SshSession::close_all_relays()
{
    for (auto &relay : relays_)
        relay->begin_close("tunnel stopping");
    wake();
}

void SshSession::wake()
{
    if (service_posted_ || closed_)
        return;
    service_posted_ = true;
    asio::post(io_, [self = shared_from_this()] { self->service(); });
}

// One pass of the driver. Order: the pinned call (nothing else may send while
// a packet is half-sent), queued session operations, new connections,
// incoming data, outgoing data and EOFs, channel closes.
void SshSession::service()
{
    service_posted_ = false;
    if (closed_ || failed_ || !ssh_)
        return;
    auto self = shared_from_this(); // callbacks below may drop the last owner
    batching_sends_ = true;
    bool go_on = run_pinned() && run_ops() && accept_channels();
    if (go_on) {
        const bool scan = rescan_receive_ || bytes_received_ != bytes_received_at_scan_;
        rescan_receive_ = false;
        bytes_received_at_scan_ = bytes_received_;
        for (std::size_t i = 0; go_on && i < relays_.size(); ++i) {
            Relay &relay = *relays_[i];
            if (relay.finished())
                continue;
            if (relay.closing()) {
                go_on = close_channel(relay);
                continue;
            }
            if (scan && relay.wants_receive()) {
                LIBSSH2_CHANNEL *ch = relay.channel();
                if (libssh2_poll_channel_read(ch, 0) || libssh2_channel_eof(ch))
                    go_on = receive(relay);
            }
            if (go_on && !relay.finished() && !relay.closing())
                go_on = send(relay);
        }
        // Data that arrived during this pass (reads pull in more) needs
        // another look.
        if (go_on && bytes_received_ != bytes_received_at_scan_)
            wake();
    }
    push_batched_sends();
    if (closed_)
        return;
    if (!failed_ && (peer_closed_ || socket_errno_)) {
        fail(Errc::transport_lost, peer_closed_ ? "the bastion closed the connection"
                                                : std::string("socket error: ") + std::strerror(socket_errno_));
        return;
    }
    sweep_finished();
    arm();
}

// Sends the bytes the pass's MSG_MORE sends may have held back: setting
// TCP_NODELAY (already on) makes Linux push pending frames at once.
void SshSession::push_batched_sends()
{
    batching_sends_ = false;
    if (!sends_held_ || closed_)
        return;
    sends_held_ = false;
    const int one = 1;
    ::setsockopt(socket_.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void SshSession::arm()
{
    if (closed_ || failed_ || !ssh_)
        return;
    auto self = shared_from_this();
    if (!read_armed_) {
        read_armed_ = true;
        socket_.async_wait(asio::ip::tcp::socket::wait_read, [this, self](const asio::error_code &ec) {
            read_armed_ = false;
            transport_readable_ = true;
            if (!ec)
                service();
        });
    }
    if (outbound_partial_ && !write_armed_) {
        write_armed_ = true;
        socket_.async_wait(asio::ip::tcp::socket::wait_write, [this, self](const asio::error_code &ec) {
            write_armed_ = false;
            if (!ec)
                service();
        });
    }
}

bool SshSession::blocked(Pinned pin)
{
    if (!outbound_partial_)
        return true; // nothing half-sent: the call waits for the bastion, others may go on
    pinned_ = pin;
    if (pin.relay)
        pin.relay->set_pinned(true);
    return false;
}

bool SshSession::run_pinned()
{
    if (pinned_.kind == Pinned::Kind::none)
        return true;
    Pinned pin = pinned_;
    pinned_ = {};
    if (pin.relay)
        pin.relay->set_pinned(false);
    Relay *relay = pin.relay;
    switch (pin.kind) {
    case Pinned::Kind::none:
        return true;
    case Pinned::Kind::op:
        return run_ops();
    case Pinned::Kind::accept:
        transport_readable_ = true; // the pinned call must run even without new data
        return accept_channels();
    case Pinned::Kind::read: {
        ssize_t rc = libssh2_channel_read(relay->channel(), pin.buffer, pin.size);
        if (rc > 0)
            relay->received(static_cast<std::size_t>(rc));
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked(pin);
        if (rc < 0)
            return channel_error(*relay, static_cast<int>(rc), "read");
        return outbound_partial_ ? blocked({Pinned::Kind::accept}) : true;
    }
    case Pinned::Kind::write: {
        ssize_t rc = libssh2_channel_write(relay->channel(), pin.buffer, pin.size);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked(pin);
        if (rc < 0)
            return channel_error(*relay, static_cast<int>(rc), "write");
        relay->sent(static_cast<std::size_t>(rc));
        return outbound_partial_ ? blocked({Pinned::Kind::accept}) : true;
    }
    case Pinned::Kind::eof: {
        int rc = libssh2_channel_send_eof(relay->channel());
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked(pin);
        if (rc < 0)
            return channel_error(*relay, rc, "send EOF");
        relay->eof_sent();
        return true;
    }
    case Pinned::Kind::close:
        return close_channel(*relay);
    }
    return true;
}

bool SshSession::run_ops()
{
    while (!ops_.empty()) {
        Op &op = ops_.front();
        int rc = op.attempt();
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::op});
        Op finished = std::move(op);
        ops_.pop_front();
        log_->trace("{} finished: {}", finished.what, rc);
        finished.done(rc);
        if (closed_ || failed_)
            return false;
        if (outbound_partial_)
            return blocked({Pinned::Kind::accept});
    }
    return true;
}

// Pulls every available packet off the transport (forward_accept reads until
// EAGAIN) and hands each new forwarded connection over. This is also the
// call that flushes a packet libssh2 half-sent on its own (an open
// confirmation or a reply to the server) after another call returned.
bool SshSession::accept_channels()
{
    // Only when something arrived: the socket reported data, or another call
    // (a channel read or write drains the transport too) pulled packets in,
    // which may have queued new connections. A pass started by a relay would
    // otherwise just pay for a recv() that finds nothing.
    if (!listener_ || (!transport_readable_ && bytes_received_ == bytes_received_at_accept_))
        return true;
    transport_readable_ = false;
    bytes_received_at_accept_ = bytes_received_;
    for (;;) {
        LIBSSH2_CHANNEL *channel = libssh2_channel_forward_accept(listener_);
        bytes_received_at_accept_ = bytes_received_;
        if (channel) {
            on_channel_(channel);
            if (closed_)
                return false;
            continue;
        }
        int err = libssh2_session_last_errno(ssh_);
        if (err == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::accept});
        // forward_accept reports every transport failure as CHANNEL_UNKNOWN.
        fail(Errc::transport_lost, peer_closed_ ? std::string("the bastion closed the connection")
                                   : socket_errno_ ? std::string("socket error: ") + std::strerror(socket_errno_)
                                                   : "accept failed (" + std::to_string(err) + "): " + last_error_text());
        return false;
    }
}

bool SshSession::receive(Relay &relay)
{
    while (relay.wants_receive()) {
        std::span<char> space = relay.receive_space();
        if (space.empty())
            return true; // backpressure: the window stops the bastion
        ssize_t rc = libssh2_channel_read(relay.channel(), space.data(), space.size());
        if (rc > 0) {
            relay.received(static_cast<std::size_t>(rc));
            if (outbound_partial_)
                return blocked({Pinned::Kind::accept});
            continue;
        }
        if (rc == 0) {
            if (libssh2_channel_eof(relay.channel()))
                relay.received_eof();
            return outbound_partial_ ? blocked({Pinned::Kind::accept}) : true;
        }
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::read, &relay, space.data(), space.size()});
        return channel_error(relay, static_cast<int>(rc), "read");
    }
    return true;
}

bool SshSession::send(Relay &relay)
{
    LIBSSH2_CHANNEL *channel = relay.channel();
    std::size_t budget = k_send_budget_per_pass;
    while (budget > 0) {
        std::span<char> data = relay.send_data();
        if (data.empty() || libssh2_channel_window_write(channel) == 0)
            break; // nothing to send, or wait for the bastion's WINDOW_ADJUST
        ssize_t rc = libssh2_channel_write(channel, data.data(), data.size());
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::write, &relay, data.data(), data.size()});
        if (rc < 0)
            return channel_error(relay, static_cast<int>(rc), "write");
        if (rc == 0)
            break;
        relay.sent(static_cast<std::size_t>(rc));
        budget -= std::min(budget, static_cast<std::size_t>(rc));
        if (outbound_partial_)
            return blocked({Pinned::Kind::accept});
    }
    if (budget == 0)
        wake(); // more to send: continue after the other channels had their turn
    if (relay.wants_eof()) {
        int rc = libssh2_channel_send_eof(channel);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::eof, &relay});
        if (rc < 0)
            return channel_error(relay, rc, "send EOF");
        relay.eof_sent();
    }
    return true;
}

// libssh2_channel_close sends EOF (if not yet sent) and CLOSE, then waits for
// the bastion's CLOSE; free() then releases the channel. While waiting the
// call returns EAGAIN with nothing half-sent, so other channels go on.
bool SshSession::close_channel(Relay &relay)
{
    LIBSSH2_CHANNEL *channel = relay.channel();
    int rc = libssh2_channel_close(channel);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return blocked({Pinned::Kind::close, &relay});
    if (rc < 0 && !is_channel_level(rc)) {
        fail(Errc::transport_lost, "channel close failed (" + std::to_string(rc) + "): " + last_error_text());
        return false;
    }
    rc = libssh2_channel_free(channel);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return blocked({Pinned::Kind::close, &relay});
    relay.channel_freed();
    return true;
}

bool SshSession::channel_error(Relay &relay, int rc, const char *what)
{
    if (!is_channel_level(rc)) {
        fail(Errc::transport_lost, std::string(what) + " failed: " + last_error_text());
        return false;
    }
    log_->debug("channel {} failed ({}); closing that connection", what, last_error_text());
    relay.channel_failed(rc);
    return close_channel(relay);
}

void SshSession::fail(std::error_code ec, const std::string &message)
{
    if (failed_ || closed_)
        return;
    failed_ = true;
    log_->debug("session failed: {}", message);
    if (on_failure_) {
        auto handler = std::move(on_failure_);
        on_failure_ = nullptr;
        asio::post(io_, [handler, ec, message, self = shared_from_this()] { handler(ec, message); });
    }
}

void SshSession::sweep_finished()
{
    std::erase_if(relays_, [](const std::shared_ptr<Relay> &relay) { return relay->finished(); });
}

void SshSession::close()
{
    if (closed_)
        return;
    closed_ = true; // from here our socket callbacks fail at once
    for (auto &relay : relays_)
        relay->abort();
    relays_.clear();
    ops_.clear();
    pinned_ = {};
    listener_ = nullptr;
    // The callbacks hold their owners (the tunnel); dropping them breaks the cycle.
    on_channel_ = nullptr;
    on_failure_ = nullptr;
    if (ssh_) {
        // Frees channels and listeners too; with the callbacks failing it
        // cannot block on the network.
        libssh2_session_free(ssh_);
        ssh_ = nullptr;
    }
    asio::error_code ignored;
    connect_timer_.cancel();
    housekeeping_timer_.cancel();
    resolver_.cancel();
    socket_.close(ignored);
}

} // namespace pytun::detail
