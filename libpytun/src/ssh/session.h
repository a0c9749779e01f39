// SPDX-License-Identifier: MIT
// SshSession: one libssh2 session on one event-loop thread, and its operation
// driver. The driver is the only code that calls libssh2 for this session:
// it keeps at most one operation with a half-sent packet (the "pinned" one)
// and retries exactly that call, with exactly its arguments, before anything
// else may send. See docs/architecture.md, "The session engine".
#pragma once

#include "internal.h"

#include <chrono>
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

class Relay;

class SshSession : public std::enable_shared_from_this<SshSession> {
public:
    using Logger = std::shared_ptr<spdlog::logger>;
    /// Completion of a step that can fail with a pytun error and a message.
    using Done = std::function<void(std::error_code, std::string)>;

    SshSession(asio::io_context &io, Logger log);
    ~SshSession();
    SshSession(const SshSession &) = delete;
    SshSession &operator=(const SshSession &) = delete;

    /// Resolve `host` and connect to it, all within `timeout`.
    void connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout, Done done);

    /// Create the libssh2 session on the connected socket (non-blocking, our
    /// socket callbacks, host-key preference). Call once, after connect().
    std::error_code begin(const std::string &hostkey_preference, std::string &message);

    /// Queue a session-level libssh2 operation (handshake, auth, listen,
    /// cancel, disconnect...). `attempt` is called on the loop thread until it
    /// returns something other than LIBSSH2_ERROR_EAGAIN, then `done(rc)`.
    /// Operations run in order, one at a time.
    void submit(const char *what, std::function<int()> attempt, std::function<void(int rc)> done);

    /// Start draining `listener`'s queue of forwarded connections; each new
    /// channel is handed to `on_channel` (which adopts a Relay for it).
    void serve_listener(LIBSSH2_LISTENER *listener, std::function<void(LIBSSH2_CHANNEL *)> on_channel);
    /// Stop accepting. Call it from the operation that cancels the listener:
    /// operations run only when no accept is pinned.
    void stop_listener();

    /// Take a relay into the driver's care: from now on the driver moves its
    /// bytes and closes its channel.
    void adopt(std::shared_ptr<Relay> relay);
    /// Begin closing every relay's channel (graceful stop).
    void close_all_relays();
    std::size_t relay_count() const { return relays_.size(); }

    /// Ask for a driver pass soon (coalesced; never runs inside the caller).
    void wake();
    /// A relay freed receive space: its channel can be read again.
    void note_receive_space() { rescan_receive_ = true; wake(); }

    /// TCP keepalive and TCP_USER_TIMEOUT sized from the health interval, so
    /// the kernel gives up on a silent bastion within keep_alive + 4 s.
    void set_tcp_liveness(std::chrono::seconds keep_alive);
    /// Queue an SSH keepalive (want_reply=0); skipped when it could not be
    /// sent whole (see session.cpp).
    void send_keepalive();
    /// Queue an end-to-end probe: open a "session" channel and close it.
    /// `done(rc)`: 0 or a channel-level refusal mean the bastion answered.
    void probe(std::function<void(int rc)> done);

    /// Called once when the transport fails (not after close()).
    void on_failure(Done handler) { on_failure_ = std::move(handler); }
    /// Free everything now: relays are aborted, the session is freed without
    /// waiting for the network, the socket is closed. Idempotent.
    void close();

    LIBSSH2_SESSION *raw() const { return ssh_; }
    /// The TCP socket's descriptor, for libssh2_session_handshake.
    int socket_fd() { return socket_.native_handle(); }
    asio::io_context &io() { return io_; }
    spdlog::logger &log() { return *log_; }
    /// libssh2's text for its last error on this session.
    std::string last_error_text() const;
    bool closed() const { return closed_; }
    /// The bastion closed the TCP connection or sent SSH_MSG_DISCONNECT.
    bool peer_closed() const { return peer_closed_; }

private:
    struct Op {
        const char *what;
        std::function<int()> attempt;
        std::function<void(int)> done;
    };
    /// The call that left a packet half-sent and must be repeated as it was.
    struct Pinned {
        enum class Kind { none, op, accept, read, write, eof, close } kind = Kind::none;
        Relay *relay = nullptr;
        char *buffer = nullptr;
        std::size_t size = 0;
    };

    static ssize_t send_callback(libssh2_socket_t fd, const void *buffer, std::size_t length, int flags,
                                 void **abstract);
    static ssize_t recv_callback(libssh2_socket_t fd, void *buffer, std::size_t length, int flags,
                                 void **abstract);
    static void disconnect_callback(LIBSSH2_SESSION *session, int reason, const char *message, int message_len,
                                    const char *language, int language_len, void **abstract);

    void service();
    void arm();
    void push_batched_sends();
    /// Each returns false when the pass must stop (a call is pinned or the
    /// session failed).
    bool run_pinned();
    bool run_ops();
    bool accept_channels();
    bool receive(Relay &relay);
    bool send(Relay &relay);
    bool close_channel(Relay &relay);
    /// Classify an EAGAIN: pin the call if it left a packet half-sent.
    bool blocked(Pinned pin);
    /// A channel-level error closes that channel; anything else is fatal.
    bool channel_error(Relay &relay, int rc, const char *what);
    void fail(std::error_code ec, const std::string &message);
    void sweep_finished();
    void schedule_housekeeping();
    bool keepalive_fits() const;

    asio::io_context &io_;
    Logger log_;
    asio::ip::tcp::socket socket_;
    asio::ip::tcp::resolver resolver_;
    asio::steady_timer connect_timer_;
    asio::steady_timer housekeeping_timer_;
    LIBSSH2_SESSION *ssh_ = nullptr;

    std::deque<Op> ops_;
    Pinned pinned_;
    LIBSSH2_LISTENER *listener_ = nullptr;
    std::function<void(LIBSSH2_CHANNEL *)> on_channel_;
    std::vector<std::shared_ptr<Relay>> relays_;
    Done on_failure_;

    // Socket state as seen by our libssh2 send/recv callbacks: exact, unlike
    // libssh2_session_block_directions, which keeps stale bits.
    bool outbound_partial_ = false;
    bool peer_closed_ = false;
    int socket_errno_ = 0;
    std::uint64_t bytes_received_ = 0;
    std::uint64_t bytes_received_at_scan_ = 0;
    std::uint64_t bytes_received_at_accept_ = 0;
    bool rescan_receive_ = false;
    bool transport_readable_ = false; ///< the socket reported data since the last drain
    // Inside a driver pass every send says MSG_MORE, so that the kernel sends
    // full segments and wakes the bastion once per segment, not per packet;
    // the pass ends with push_batched_sends().
    bool batching_sends_ = false;
    bool sends_held_ = false; ///< a MSG_MORE send may have left bytes queued

    bool service_posted_ = false;
    bool read_armed_ = false;
    bool write_armed_ = false;
    bool closed_ = false;
    bool failed_ = false;
};

} // namespace pytun::detail
