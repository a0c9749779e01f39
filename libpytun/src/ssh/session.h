// SPDX-License-Identifier: MIT
// SshSession: one libssh2 session on one event-loop thread, and its operation
// driver. The driver is the only code that calls libssh2 for this session:
// it keeps at most one operation with a half-sent packet (the "pinned" one)
// and retries exactly that call, with exactly its arguments, before anything
// else may send. It moves bytes for channel streams (ssh/channel_stream.h)
// from any source: channels the bastion opens through a listener, and
// channels opened by us. It knows nothing of forward kinds.
// See docs/architecture.md, "The session engine".
#pragma once

#include "internal.h"
#include "ssh/libssh2_heap.h"

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <asio.hpp>
#include <libssh2.h>
#include <spdlog/logger.h>

namespace pytun::detail {

class ChannelStream;
enum class OpenError;

class SshSession : public std::enable_shared_from_this<SshSession> {
public:
    using Logger = std::shared_ptr<spdlog::logger>;
    /// The transport: a TCP socket to the bastion (or to a proxy that
    /// connected it), or a local stream socket whose other end is relayed
    /// into a jump host's channel (tunnel/jump.h).
    using Socket = asio::generic::stream_protocol::socket;
    /// Completion of a step that can fail with a pytun error and a message.
    using Done = std::function<void(std::error_code, std::string)>;

    /// Takes a connected stream socket that leads to the bastion's sshd.
    SshSession(Socket socket, Logger log);
    ~SshSession();
    SshSession(const SshSession &) = delete;
    SshSession &operator=(const SshSession &) = delete;

    /// Create the libssh2 session on the socket (non-blocking, our socket
    /// callbacks, host-key preference). Call once, first.
    std::error_code begin(const std::string &hostkey_preference, std::string &message);

    /// Which libssh2 state an operation uses, and so what it must wait for.
    /// libssh2 1.10 keeps the state of a session-level request (handshake,
    /// authentication, tcpip-forward, disconnect) and that of a channel open
    /// in the session, one of each at a time, and a channel request's state
    /// in its channel. Operations of one lane run in order, one at a time;
    /// the lanes interleave (never while a packet is half-sent), so an open
    /// the bastion is slow to answer does not hold up a keepalive or a probe.
    enum class Lane { session, open, anchor };

    /// Queue a libssh2 operation. `attempt` is called on the loop thread
    /// until it returns something other than LIBSSH2_ERROR_EAGAIN, then
    /// `done(rc)`.
    void submit(const char *what, std::function<int()> attempt, std::function<void(int rc)> done,
                Lane lane = Lane::session);

    /// Open a channel for `stream` (which is opening): `open` makes the
    /// libssh2 calls (direct-tcpip; a session channel and its exec request)
    /// and is repeated, with the same arguments, until it sets `channel`
    /// and returns 0, or returns an error (LIBSSH2_ERROR_EAGAIN: not done
    /// yet). The stream is adopted now (its local bytes wait in its buffer)
    /// and gets the channel (attach) or the error (open_failed). Opens run in
    /// the open lane, one in flight per session; a stream closed before its
    /// open began gets none.
    /// `after` runs once the open is over, either way.
    using ChannelOpen = std::function<int(LIBSSH2_CHANNEL *&channel)>;
    void open_channel(std::shared_ptr<ChannelStream> stream, const char *what, ChannelOpen open,
                      std::function<void()> after = nullptr);
    /// open_channel for a direct-tcpip channel to host:port.
    void open_direct_tcpip(std::shared_ptr<ChannelStream> stream, std::string host, std::uint16_t port,
                           std::string origin_host, std::uint16_t origin_port, std::function<void()> after);
    /// Opens queued or in flight.
    std::size_t opens_pending() const { return lanes_[static_cast<int>(Lane::open)].size(); }

    /// A channel kept open for the session's life (an idle "session"
    /// channel): libssh2 1.10 reads the transport only through a listener or
    /// a channel, and a connection with neither must still answer the
    /// bastion's keepalives and re-keys. Freed with the session.
    void set_anchor(LIBSSH2_CHANNEL *anchor) { anchor_ = anchor; }
    LIBSSH2_CHANNEL *anchor() const { return anchor_; }

    /// Drain `listener`'s queue of forwarded connections; each new channel is
    /// handed to `on_channel`, which adopts a stream for it. Several
    /// listeners may be served at once.
    void add_listener(LIBSSH2_LISTENER *listener, std::function<void(LIBSSH2_CHANNEL *)> on_channel);
    /// Stop accepting from `listener`. Call it from the operation that
    /// cancels the listener: operations run only when nothing is pinned.
    void remove_listener(LIBSSH2_LISTENER *listener);

    /// Take a stream into the driver's care: from now on the driver moves its
    /// bytes and closes its channel.
    void adopt(std::shared_ptr<ChannelStream> stream);
    /// Begin closing every stream's channel (graceful stop).
    void close_all_streams();
    /// Streams that carry connections: background ones (commands pytun
    /// runs for itself, ChannelStream::is_background) are not counted.
    std::size_t stream_count() const;
    /// `then` runs (posted, on the loop thread) once stream_count() is 0;
    /// at the next pass if it is 0 now. One waiter at a time.
    void when_no_streams(std::function<void()> then);

    /// Ask for a driver pass soon (coalesced; never runs inside the caller).
    void wake();
    /// A stream freed receive space: its channel can be read again.
    void note_receive_space()
    {
        rescan_receive_ = true;
        wake();
    }

    /// Queue an SSH keepalive (want_reply=0); skipped when it could not be
    /// sent whole (see session.cpp).
    void send_keepalive();

    /// Called once when the transport fails (not after close()).
    void on_failure(Done handler) { on_failure_ = std::move(handler); }
    /// Free everything now: streams are aborted, the session is freed without
    /// waiting for the network, the socket is closed. Idempotent.
    void close();

    LIBSSH2_SESSION *raw() const { return ssh_; }
    /// The socket's descriptor (libssh2_session_handshake, socket options).
    int socket_fd() { return socket_.native_handle(); }
    /// Whether the socket is TCP (it carries TCP's options and liveness).
    bool is_tcp() const { return tcp_; }
    asio::io_context &io() { return io_; }
    spdlog::logger &log() { return *log_; }
    const Logger &logger() const { return log_; }
    /// libssh2's text for its last error on this session.
    std::string last_error_text() const;
    bool closed() const { return closed_; }
    /// Blocks libssh2 holds now from this session's heap.
    std::size_t libssh2_blocks() const { return heap_.outstanding(); }
    /// The bastion closed the TCP connection or sent SSH_MSG_DISCONNECT.
    bool peer_closed() const { return peer_closed_; }

private:
    struct Op {
        const char *what;
        std::function<int()> attempt;
        std::function<void(int)> done;
    };
    struct Listener {
        LIBSSH2_LISTENER *listener;
        std::function<void(LIBSSH2_CHANNEL *)> on_channel;
    };
    /// The call that left a packet half-sent and must be repeated as it was.
    /// `flush`: libssh2 half-sent a packet of its own (a reply it made while
    /// reading); any call that reads the transport continues it.
    struct Pinned {
        enum class Kind { none, op, flush, read, write, eof, close } kind = Kind::none;
        ChannelStream *stream = nullptr;
        char *buffer = nullptr;
        std::size_t size = 0;
        Lane lane = Lane::session; ///< of a pinned op
    };

    static ssize_t send_callback(libssh2_socket_t fd, const void *buffer, std::size_t length, int flags,
                                 void **abstract);
    static ssize_t recv_callback(libssh2_socket_t fd, void *buffer, std::size_t length, int flags,
                                 void **abstract);
    static void disconnect_callback(LIBSSH2_SESSION *session, int reason, const char *message, int message_len,
                                    const char *language, int language_len, void **abstract);
    static void *alloc_callback(std::size_t size, void **abstract);
    static void free_callback(void *block, void **abstract);
    static void *realloc_callback(void *block, std::size_t size, void **abstract);

    void service();
    void arm();
    void push_batched_sends();
    void push_held_sends();
    /// Each returns false when the pass must stop (a call is pinned or the
    /// session failed).
    bool run_pinned();
    bool run_ops();
    bool run_lane(Lane lane);
    bool pump_transport();
    bool accept_channels(Listener &listener);
    bool read_transport();
    bool receive(ChannelStream &stream);
    bool send(ChannelStream &stream);
    bool close_channel(ChannelStream &stream);
    void report_exit(ChannelStream &stream);
    /// Classify an EAGAIN: pin the call if it left a packet half-sent.
    bool blocked(Pinned pin);
    /// After a call that succeeded: libssh2 may have half-sent a packet of
    /// its own while reading; then a transport read must come next.
    bool flush_if_partial() { return outbound_partial_ ? blocked({Pinned::Kind::flush}) : true; }
    /// A channel-level error closes that channel; anything else is fatal.
    bool channel_error(ChannelStream &stream, int rc, const char *what);
    void fail(std::error_code ec, const std::string &message);
    std::string transport_failure(const char *what, int rc) const;
    OpenError open_error(int rc) const;
    void sweep_finished();
    void schedule_housekeeping();
    bool keepalive_fits() const;
    /// Gathered bytes wait for the socket (see gathered_).
    bool sends_waiting() const { return outbound_partial_ || !gathered_.empty(); }

    asio::io_context &io_;
    Logger log_;
    Socket socket_;
    bool tcp_;
    asio::steady_timer housekeeping_timer_;
    Libssh2Heap heap_; ///< before ssh_: outlives the session it serves
    LIBSSH2_SESSION *ssh_ = nullptr;

    std::array<std::deque<Op>, 3> lanes_; ///< by Lane
    Pinned pinned_;
    std::vector<Listener> listeners_;
    LIBSSH2_CHANNEL *anchor_ = nullptr;
    std::vector<std::shared_ptr<ChannelStream>> streams_;
    std::function<void()> when_no_streams_;
    Done on_failure_;

    // Socket state as seen by our libssh2 send/recv callbacks: exact, unlike
    // libssh2_session_block_directions, which keeps stale bits.
    bool outbound_partial_ = false;
    bool peer_closed_ = false;
    int socket_errno_ = 0;
    std::uint64_t bytes_received_ = 0;
    std::size_t recv_budget_ = SIZE_MAX; ///< left to read in this pass
    bool recv_deferred_ = false;        ///< a read was cut short by the budget
    std::uint64_t bytes_received_at_scan_ = 0;
    std::uint64_t bytes_received_at_pump_ = 0;
    bool rescan_receive_ = false;
    bool transport_readable_ = false; ///< the socket reported data since the last drain
    // Inside a driver pass every send says MSG_MORE, so that the kernel sends
    // full segments and wakes the bastion once per segment, not per packet;
    // the pass ends with push_batched_sends().
    bool batching_sends_ = false;
    bool sends_held_ = false; ///< a MSG_MORE send may have left bytes queued
    // A pass's packets, gathered so that they reach the socket in one send:
    // one libssh2 packet per send made GSO packets of about 20 KiB and
    // twice the ACKs (docs/benchmarks.md). Sent at the end of the pass, or
    // when full; bytes the socket did not take wait here for writability,
    // before anything libssh2 sends next.
    std::vector<char> gathered_;
    /// Send what is gathered; false if some of it is still waiting.
    bool flush_gathered(int flags = 0);

    bool housekeeping_armed_ = false;
    bool service_posted_ = false;
    bool read_armed_ = false;
    bool write_armed_ = false;
    bool closed_ = false;
    bool failed_ = false;
};

} // namespace pytun::detail
