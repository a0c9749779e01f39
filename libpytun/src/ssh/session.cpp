// SPDX-License-Identifier: MIT
// The session driver: the only caller of libssh2 for one session.
#include "ssh/session.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include <pytun/crypto.h>
#include <pytun/error.h>

#include "ssh/channel_stream.h"
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

// Upper bound of bytes read from the SSH socket in one pass, so that what
// arrives is delivered in steady steps rather than in window-sized gulps.
constexpr std::size_t k_recv_budget_per_pass = 64 * 1024;

// Most bytes gathered for one send (see SshSession::gathered_).
constexpr std::size_t k_gather_limit = 256 * 1024;

// Reads shorter than this look like interactive traffic (see recv_callback).
constexpr ssize_t k_small_read = 4096;

} // namespace

namespace {

bool is_tcp_socket(int fd)
{
    int domain = 0;
    socklen_t len = sizeof(domain);
    return ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && (domain == AF_INET || domain == AF_INET6);
}

} // namespace

SshSession::SshSession(Socket socket, Logger log)
    : io_(static_cast<asio::io_context &>(socket.get_executor().context())), log_(std::move(log)),
      socket_(std::move(socket)), tcp_(is_tcp_socket(socket_.native_handle())), housekeeping_timer_(io_)
{
}

SshSession::~SshSession()
{
    close();
}

ssize_t SshSession::send_callback(libssh2_socket_t fd, const void *buffer, std::size_t length, int flags,
                                  void **abstract)
{
    auto *self = static_cast<SshSession *>(*abstract);
    if (self->closed_)
        return -EPIPE; // close(): let libssh2 free everything without touching the network
    // Gathered bytes go first; a packet they leave no room for stays with
    // libssh2, untouched, until they are out (it is then "half-sent").
    std::vector<char> &gathered = self->gathered_;
    if (!gathered.empty() && gathered.size() + length > k_gather_limit && !self->flush_gathered(MSG_MORE)) {
        self->outbound_partial_ = true;
        return self->socket_errno_ ? -self->socket_errno_ : -EAGAIN;
    }
    if (self->batching_sends_ && self->tcp_ && length < k_gather_limit) {
        const auto *bytes = static_cast<const char *>(buffer);
        gathered.insert(gathered.end(), bytes, bytes + length);
        self->outbound_partial_ = false;
        return static_cast<ssize_t>(length);
    }
    if (!gathered.empty() && !self->flush_gathered(MSG_MORE)) {
        self->outbound_partial_ = true;
        return self->socket_errno_ ? -self->socket_errno_ : -EAGAIN;
    }
    if (self->batching_sends_ && self->tcp_) {
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
    if (self->recv_budget_ == 0) {
        self->recv_deferred_ = true;
        return -EAGAIN;
    }
    length = std::min(length, self->recv_budget_);
    for (;;) {
        ssize_t n = ::recv(fd, buffer, length, flags);
        if (n > 0) {
            self->bytes_received_ += static_cast<std::uint64_t>(n);
            self->recv_budget_ -= static_cast<std::size_t>(n);
            // Quick ACKs are not sticky in Linux: re-arm after each small read
            // so the bastion never waits for a delayed ACK (its Nagle + our
            // delayed ACK would add up to 40 ms to small exchanges). Bulk
            // transfers are ACKed promptly anyway and skip the syscall.
            if (n < k_small_read && self->tcp_) {
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

void *SshSession::alloc_callback(std::size_t size, void **abstract)
{
    return static_cast<SshSession *>(*abstract)->heap_.allocate(size);
}

void SshSession::free_callback(void *block, void **abstract)
{
    static_cast<SshSession *>(*abstract)->heap_.release(block);
}

void *SshSession::realloc_callback(void *block, std::size_t size, void **abstract)
{
    return static_cast<SshSession *>(*abstract)->heap_.reallocate(block, size);
}

std::error_code SshSession::begin(const std::string &hostkey_preference, std::string &message)
{
    ensure_libssh2_initialised();
    static std::once_flag logged_cipher;
    std::call_once(logged_cipher, [this] { log_->debug("AES-CTR for libssh2: {}", aes_ctr_implementation()); });
    ssh_ = libssh2_session_init_ex(&SshSession::alloc_callback, &SshSession::free_callback,
                                   &SshSession::realloc_callback, this);
    if (!ssh_) {
        message = "libssh2 could not allocate a session";
        return Errc::handshake_failed;
    }
    asio::error_code ec;
    socket_.non_blocking(true, ec);
    if (tcp_) {
        const int fd = socket_.native_handle();
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
    }

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

// libssh2_keepalive_send treats EAGAIN as success and leaves the half-sent
// packet pointing at its own stack frame: the next send would then fail with
// BAD_USE forever. So it is only called when the whole packet surely fits
// into the socket's send buffer.
bool SshSession::keepalive_fits() const
{
    if (sends_waiting())
        return false;
    const int fd = const_cast<Socket &>(socket_).native_handle();
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


void SshSession::submit(const char *what, std::function<int()> attempt, std::function<void(int)> done, Lane lane)
{
    // A closed session runs nothing more. Dropping the operation also drops
    // what its callbacks hold (often their owner, which holds this session):
    // queued, it would keep them all alive. A forward asked to stop after the
    // bastion vanished does exactly that.
    if (closed_)
        return;
    lanes_[static_cast<int>(lane)].push_back({what, std::move(attempt), std::move(done)});
    wake();
}

void SshSession::open_channel(std::shared_ptr<ChannelStream> stream, const char *what, ChannelOpen open,
                              std::function<void()> after)
{
    // Not a libssh2 code: the stream was closed before its open began.
    constexpr int k_abandoned = 1;
    if (closed_) {
        stream->abort();
        return;
    }
    adopt(stream);
    auto channel = std::make_shared<LIBSSH2_CHANNEL *>(nullptr);
    auto started = std::make_shared<bool>(false);
    submit(
        what,
        [this, raw = stream.get(), open = std::move(open), channel, started]() -> int {
            if (!*started && raw->phase() != ChannelStream::Phase::opening)
                return k_abandoned;
            *started = true;
            return open(*channel);
        },
        [this, stream, channel, after = std::move(after)](int rc) {
            if (*channel)
                stream->attach(*channel);
            else if (rc == k_abandoned)
                stream->open_abandoned();
            else
                stream->open_failed(open_error(rc));
            if (after)
                after();
        },
        Lane::open);
}

// libssh2 1.10 reports the server's reason code only as the text of its
// last error ("Channel open failure (connect failed)").
OpenError SshSession::open_error(int rc) const
{
    if (rc == LIBSSH2_ERROR_TIMEOUT)
        return OpenError::timed_out; // libssh2's own 60 s limit
    if (rc != LIBSSH2_ERROR_CHANNEL_FAILURE)
        return OpenError::other;
    const std::string text = last_error_text();
    if (text.find("administratively prohibited") != std::string::npos)
        return OpenError::prohibited;
    if (text.find("connect failed") != std::string::npos)
        return OpenError::connect_failed;
    if (text.find("resource shortage") != std::string::npos)
        return OpenError::resource_shortage;
    return OpenError::other;
}

void SshSession::open_direct_tcpip(std::shared_ptr<ChannelStream> stream, std::string host, std::uint16_t port,
                                   std::string origin_host, std::uint16_t origin_port, std::function<void()> after)
{
    open_channel(
        std::move(stream), "open direct-tcpip channel",
        [this, host = std::move(host), port, origin_host = std::move(origin_host),
         origin_port](LIBSSH2_CHANNEL *&channel) {
            channel = libssh2_channel_direct_tcpip_ex(ssh_, host.c_str(), port, origin_host.c_str(), origin_port);
            return channel ? 0 : libssh2_session_last_errno(ssh_);
        },
        std::move(after));
}

void SshSession::add_listener(LIBSSH2_LISTENER *listener, std::function<void(LIBSSH2_CHANNEL *)> on_channel)
{
    listeners_.push_back({listener, std::move(on_channel)});
    transport_readable_ = true; // opens may have arrived with the forward's reply
    wake();
}

void SshSession::remove_listener(LIBSSH2_LISTENER *listener)
{
    std::erase_if(listeners_, [listener](const Listener &l) { return l.listener == listener; });
}

void SshSession::adopt(std::shared_ptr<ChannelStream> stream)
{
    stream->bind(*this);
    streams_.push_back(std::move(stream));
    rescan_receive_ = true;
    if (!housekeeping_armed_) {
        housekeeping_armed_ = true;
        schedule_housekeeping();
    }
    wake();
}

// Once a second: idle streams give their buffer memory back.
void SshSession::schedule_housekeeping()
{
    housekeeping_timer_.expires_after(std::chrono::seconds(1));
    housekeeping_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
        if (ec || closed_)
            return;
        for (auto &stream : streams_)
            stream->release_idle_buffers();
        if (gathered_.empty())
            std::vector<char>().swap(gathered_); // an idle session holds no send buffer
        schedule_housekeeping();
    });
}

void SshSession::close_all_streams()
{
    for (auto &stream : streams_)
        stream->begin_close("tunnel stopping");
    wake();
}

std::size_t SshSession::stream_count() const
{
    return static_cast<std::size_t>(
        std::count_if(streams_.begin(), streams_.end(), [](const auto &s) { return !s->is_background(); }));
}

void SshSession::when_no_streams(std::function<void()> then)
{
    when_no_streams_ = std::move(then);
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
// a packet is half-sent), queued session operations, the transport (new
// connections, replies libssh2 makes), incoming data, outgoing data and EOFs,
// channel closes.
void SshSession::service()
{
    service_posted_ = false;
    if (closed_ || failed_ || !ssh_)
        return;
    auto self = shared_from_this(); // callbacks below may drop the last owner
    batching_sends_ = true;
    recv_budget_ = k_recv_budget_per_pass;
    bool go_on = run_pinned() && run_ops() && pump_transport();
    if (go_on) {
        const bool scan = rescan_receive_ || bytes_received_ != bytes_received_at_scan_;
        rescan_receive_ = false;
        bytes_received_at_scan_ = bytes_received_;
        for (std::size_t i = 0; go_on && i < streams_.size(); ++i) {
            ChannelStream &stream = *streams_[i];
            switch (stream.phase()) {
            case ChannelStream::Phase::opening:
            case ChannelStream::Phase::closed:
                continue;
            case ChannelStream::Phase::closing:
                if (stream.channel()) // else its open is still in flight
                    go_on = close_channel(stream);
                continue;
            case ChannelStream::Phase::open:
                break;
            }
            if (scan && stream.wants_receive()) {
                LIBSSH2_CHANNEL *ch = stream.channel();
                if (libssh2_poll_channel_read(ch, 0) || libssh2_channel_eof(ch))
                    go_on = receive(stream);
            }
            if (go_on && stream.phase() == ChannelStream::Phase::open)
                go_on = send(stream);
        }
        // Data that arrived during this pass (reads pull in more) needs
        // another look.
        if (go_on && bytes_received_ != bytes_received_at_scan_)
            wake();
    }
    push_batched_sends();
    recv_budget_ = SIZE_MAX; // calls outside a pass (the handshake's first steps, close) read unbounded
    const bool recv_deferred = std::exchange(recv_deferred_, false);
    if (closed_)
        return;
    if (!failed_ && (peer_closed_ || socket_errno_)) {
        fail(Errc::transport_lost, peer_closed_ ? "the bastion closed the connection"
                                                : std::string("socket error: ") + std::strerror(socket_errno_));
        return;
    }
    sweep_finished();
    if (recv_deferred) { // the socket still holds data: the next pass reads on
        transport_readable_ = true;
        wake();
    }
    arm();
}

bool SshSession::flush_gathered(int flags)
{
    std::size_t sent = 0;
    while (sent < gathered_.size()) {
        const ssize_t n = ::send(socket_.native_handle(), gathered_.data() + sent, gathered_.size() - sent,
                                 flags | MSG_NOSIGNAL);
        if (n >= 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            socket_errno_ = errno;
        break;
    }
    if (flags & MSG_MORE)
        sends_held_ = true;
    gathered_.erase(gathered_.begin(), gathered_.begin() + static_cast<std::ptrdiff_t>(sent));
    return gathered_.empty();
}

// Sends what the pass gathered, and what MSG_MORE sends may have held back:
// setting TCP_NODELAY (already on) makes Linux push pending frames at once.
void SshSession::push_batched_sends()
{
    batching_sends_ = false;
    push_held_sends();
}

void SshSession::push_held_sends()
{
    if (closed_)
        return;
    if (!gathered_.empty())
        flush_gathered(); // what stays waits for writability (arm)
    if (!sends_held_)
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
        socket_.async_wait(asio::socket_base::wait_read, [this, self](const asio::error_code &ec) {
            read_armed_ = false;
            transport_readable_ = true;
            if (!ec)
                service();
        });
    }
    if (sends_waiting() && !write_armed_) {
        write_armed_ = true;
        socket_.async_wait(asio::socket_base::wait_write, [this, self](const asio::error_code &ec) {
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
    if (pin.stream)
        pin.stream->set_pinned(true);
    return false;
}

bool SshSession::run_pinned()
{
    if (pinned_.kind == Pinned::Kind::none)
        return true;
    Pinned pin = pinned_;
    pinned_ = {};
    if (pin.stream)
        pin.stream->set_pinned(false);
    ChannelStream *stream = pin.stream;
    switch (pin.kind) {
    case Pinned::Kind::none:
        return true;
    case Pinned::Kind::op:
        return run_lane(pin.lane);
    case Pinned::Kind::flush:
        transport_readable_ = true; // the read must run even without new data
        return pump_transport();
    case Pinned::Kind::read: {
        ssize_t rc = libssh2_channel_read(stream->channel(), pin.buffer, pin.size);
        if (rc > 0)
            stream->received(static_cast<std::size_t>(rc));
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked(pin);
        if (rc < 0)
            return channel_error(*stream, static_cast<int>(rc), "read");
        return flush_if_partial();
    }
    case Pinned::Kind::write: {
        ssize_t rc = libssh2_channel_write(stream->channel(), pin.buffer, pin.size);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked(pin);
        if (rc < 0)
            return channel_error(*stream, static_cast<int>(rc), "write");
        stream->sent(static_cast<std::size_t>(rc));
        return flush_if_partial();
    }
    case Pinned::Kind::eof: {
        int rc = libssh2_channel_send_eof(stream->channel());
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked(pin);
        if (rc < 0)
            return channel_error(*stream, rc, "send EOF");
        stream->eof_sent();
        return true;
    }
    case Pinned::Kind::close:
        return close_channel(*stream);
    }
    return true;
}

bool SshSession::run_ops()
{
    for (Lane lane : {Lane::session, Lane::open, Lane::anchor})
        if (!run_lane(lane))
            return false;
    return true;
}

// Runs the lane's operations in order until one waits for the bastion.
bool SshSession::run_lane(Lane lane)
{
    auto &ops = lanes_[static_cast<int>(lane)];
    while (!ops.empty()) {
        Op &op = ops.front();
        int rc = op.attempt();
        if (rc == LIBSSH2_ERROR_EAGAIN) {
            Pinned pin{Pinned::Kind::op};
            pin.lane = lane;
            return blocked(pin);
        }
        Op finished = std::move(op);
        ops.pop_front();
        log_->trace("{} finished: {}", finished.what, rc);
        finished.done(rc);
        if (closed_ || failed_)
            return false;
        if (!flush_if_partial())
            return false;
    }
    return true;
}

// Pulls every packet the kernel holds into libssh2. While reading, libssh2
// confirms the bastion's channel opens, answers its requests and re-keys;
// the same read continues a packet of its own that it half-sent (the flush).
// Only when something arrived: the socket reported data, or another call (a
// channel read or write drains the transport too) pulled packets in. A pass
// started by a stream would otherwise just pay for a recv() that finds
// nothing.
bool SshSession::pump_transport()
{
    if (!transport_readable_ && bytes_received_ == bytes_received_at_pump_)
        return true;
    transport_readable_ = false;
    bytes_received_at_pump_ = bytes_received_;
    if (listeners_.empty())
        return read_transport();
    for (std::size_t i = 0; i < listeners_.size(); ++i)
        if (!accept_channels(listeners_[i]))
            return false;
    return true;
}

// forward_accept reads the transport until EAGAIN and pops the listener's
// queue of forwarded connections: each goes to its forward.
bool SshSession::accept_channels(Listener &listener)
{
    for (;;) {
        LIBSSH2_CHANNEL *channel = libssh2_channel_forward_accept(listener.listener);
        bytes_received_at_pump_ = bytes_received_;
        if (channel) {
            // The handler may add or remove listeners: call a copy.
            auto on_channel = listener.on_channel;
            on_channel(channel);
            if (closed_)
                return false;
            continue;
        }
        int err = libssh2_session_last_errno(ssh_);
        if (err == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::flush});
        // forward_accept reports every transport failure as CHANNEL_UNKNOWN.
        fail(Errc::transport_lost, transport_failure("accept", err));
        return false;
    }
}

// Without a listener the transport is read through an open channel (a
// stream's, else the anchor): libssh2_channel_wait_eof only reads (until
// EAGAIN, or that channel's EOF), it never sends, so it is also a flush.
bool SshSession::read_transport()
{
    auto read_through = [this](LIBSSH2_CHANNEL *channel) -> int {
        if (!channel || libssh2_channel_eof(channel))
            return 0; // not a reader: try the next one
        int rc = libssh2_channel_wait_eof(channel);
        bytes_received_at_pump_ = bytes_received_;
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::flush}) ? 1 : -1;
        if (rc < 0) {
            fail(Errc::transport_lost, transport_failure("read", rc));
            return -1;
        }
        return 0; // that channel saw its EOF: read on through the next one
    };
    for (auto &stream : streams_) {
        if (stream->phase() != ChannelStream::Phase::open)
            continue;
        if (int done = read_through(stream->channel()))
            return done > 0;
    }
    if (int done = read_through(anchor_))
        return done > 0;
    return true;
}

std::string SshSession::transport_failure(const char *what, int rc) const
{
    if (peer_closed_)
        return "the bastion closed the connection";
    if (socket_errno_)
        return std::string("socket error: ") + std::strerror(socket_errno_);
    return std::string(what) + " failed (" + std::to_string(rc) + "): " + last_error_text();
}

bool SshSession::receive(ChannelStream &stream)
{
    while (stream.wants_receive()) {
        std::span<char> space = stream.receive_space();
        if (space.empty())
            return true; // backpressure: the window stops the bastion
        ssize_t rc = libssh2_channel_read(stream.channel(), space.data(), space.size());
        if (rc > 0) {
            // A read that sent a WINDOW_ADJUST pushes it now: held (MSG_MORE)
            // until the end of the pass, it would reach the bastion only
            // after this pass has delivered everything libssh2 buffered, a
            // window's worth, so the bastion would stop and restart in
            // bursts (measured: download at a third of ssh -L's).
            push_held_sends();
            stream.received(static_cast<std::size_t>(rc));
            if (!flush_if_partial())
                return false;
            continue;
        }
        if (rc == 0) {
            if (libssh2_channel_eof(stream.channel()))
                stream.received_eof();
            return flush_if_partial();
        }
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::read, &stream, space.data(), space.size()});
        return channel_error(stream, static_cast<int>(rc), "read");
    }
    return true;
}

bool SshSession::send(ChannelStream &stream)
{
    LIBSSH2_CHANNEL *channel = stream.channel();
    std::size_t budget = k_send_budget_per_pass;
    while (budget > 0) {
        std::span<char> data = stream.send_data();
        if (data.empty() || libssh2_channel_window_write(channel) == 0)
            break; // nothing to send, or wait for the bastion's WINDOW_ADJUST
        ssize_t rc = libssh2_channel_write(channel, data.data(), data.size());
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::write, &stream, data.data(), data.size()});
        if (rc < 0)
            return channel_error(stream, static_cast<int>(rc), "write");
        if (rc == 0)
            break;
        stream.sent(static_cast<std::size_t>(rc));
        budget -= std::min(budget, static_cast<std::size_t>(rc));
        if (!flush_if_partial())
            return false;
    }
    if (budget == 0)
        wake(); // more to send: continue after the other channels had their turn
    if (stream.wants_eof()) {
        int rc = libssh2_channel_send_eof(channel);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return blocked({Pinned::Kind::eof, &stream});
        if (rc < 0)
            return channel_error(stream, rc, "send EOF");
        stream.eof_sent();
    }
    return true;
}

// libssh2_channel_close sends EOF (if not yet sent) and CLOSE, then waits for
// the bastion's CLOSE; free() then releases the channel. While waiting the
// call returns EAGAIN with nothing half-sent, so other channels go on.
bool SshSession::close_channel(ChannelStream &stream)
{
    LIBSSH2_CHANNEL *channel = stream.channel();
    int rc = libssh2_channel_close(channel);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return blocked({Pinned::Kind::close, &stream});
    if (rc < 0 && !is_channel_level(rc)) {
        fail(Errc::transport_lost, "channel close failed (" + std::to_string(rc) + "): " + last_error_text());
        return false;
    }
    if (rc == 0)
        report_exit(stream);
    rc = libssh2_channel_free(channel);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return blocked({Pinned::Kind::close, &stream});
    stream.channel_freed();
    return true;
}

// A command's exit status (or signal) arrives before the bastion's CLOSE,
// and libssh2 keeps it in the channel until it is freed: pass it on now.
// No allocation unless a signal ended the command.
void SshSession::report_exit(ChannelStream &stream)
{
    LIBSSH2_CHANNEL *channel = stream.channel();
    char *signal = nullptr;
    std::size_t signal_length = 0;
    libssh2_channel_get_exit_signal(channel, &signal, &signal_length, nullptr, nullptr, nullptr, nullptr);
    std::string signal_name = signal ? std::string(signal, signal_length) : std::string();
    if (signal)
        libssh2_free(ssh_, signal);
    stream.report_exit(libssh2_channel_get_exit_status(channel), signal_name);
}

bool SshSession::channel_error(ChannelStream &stream, int rc, const char *what)
{
    if (!is_channel_level(rc)) {
        fail(Errc::transport_lost, std::string(what) + " failed: " + last_error_text());
        return false;
    }
    log_->debug("channel {} failed ({}); closing that connection", what, last_error_text());
    stream.channel_failed(rc);
    return close_channel(stream);
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
    std::erase_if(streams_, [](const std::shared_ptr<ChannelStream> &stream) { return stream->finished(); });
    if (when_no_streams_ && stream_count() == 0) {
        auto then = std::move(when_no_streams_);
        when_no_streams_ = nullptr;
        asio::post(io_, std::move(then));
    }
}

void SshSession::close()
{
    if (closed_)
        return;
    closed_ = true; // from here our socket callbacks fail at once
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto &stream : streams)
        stream->abort();
    for (auto &ops : lanes_)
        ops.clear();
    anchor_ = nullptr; // freed with the session
    pinned_ = {};
    // The callbacks hold their owners (forwards, the tunnel); dropping them
    // breaks the cycles.
    listeners_.clear();
    when_no_streams_ = nullptr;
    on_failure_ = nullptr;
    if (ssh_) {
        // Frees channels and listeners too; with the callbacks failing it
        // cannot block on the network.
        libssh2_session_free(ssh_);
        ssh_ = nullptr;
        const Libssh2Heap::Leftover left = heap_.release_all();
        if (left.blocks)
            log_->debug("libssh2 left {} blocks ({} bytes) allocated at the session's end; freed them", left.blocks,
                        left.bytes);
    }
    asio::error_code ignored;
    housekeeping_timer_.cancel();
    socket_.close(ignored);
}

} // namespace pytun::detail
