// SPDX-License-Identifier: MIT
// ChannelStream: one byte stream carried by an SSH channel, as the session's
// driver sees it: the channel, two bounded buffers, and the stream's life as
// one state machine. The driver (ssh/session.cpp) makes every libssh2 call on
// the channel; the stream's other end (a local socket: forward/relay.h) is a
// subclass that fills the upload buffer, empties the download buffer and is
// told when either can move again. Neither side knows what kind of forward
// the stream belongs to, nor who opened the channel.
#pragma once

#include "internal.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <libssh2.h>
#include <spdlog/logger.h>

#include "ssh/ring_buffer.h"

namespace pytun::detail {

class SshSession;

/// Why a channel could not be opened, as far as libssh2 1.10 tells: it keeps
/// the server's reason code but not its text, so "refused" and "unreachable"
/// on the bastion's side are both connect_failed.
enum class OpenError {
    none,
    prohibited,        ///< administratively prohibited: the bastion's policy (permitopen, AllowTcpForwarding)
    connect_failed,    ///< the bastion could not connect to the destination
    resource_shortage, ///< the bastion is out of something (MaxSessions...)
    timed_out,         ///< no answer within the forward's open timeout
    other,             ///< an unknown channel type, an unknown reason, a lost session
};
const char *to_string(OpenError error);

class ChannelStream : public std::enable_shared_from_this<ChannelStream> {
public:
    /// The stream's life: opening -> open -> closing -> closed. While open,
    /// each direction ends on its own (half-close, see End); the channel is
    /// closed when both have ended, on an error, or on request.
    enum class Phase {
        opening, ///< no channel yet: its open is in flight; local bytes are buffered
        open,    ///< the channel carries bytes (both ways, or one after a half-close)
        closing, ///< the driver is to close and free the channel
        closed,  ///< the channel is freed (or was never opened): the stream is finished
    };
    /// The end of one direction's data: the sender's EOF is `pending` until
    /// every buffered byte has gone out, then passed on (`done`).
    enum class End { open, pending, done };

    /// A stream is made before it has a session (its open may wait for one);
    /// the driver binds it when it adopts it.
    explicit ChannelStream(std::shared_ptr<spdlog::logger> log);
    virtual ~ChannelStream();
    ChannelStream(const ChannelStream &) = delete;
    ChannelStream &operator=(const ChannelStream &) = delete;

    /// Unique in the process: "connection #N" in log lines.
    std::uint64_t id() const { return id_; }
    Phase phase() const { return phase_; }
    bool finished() const { return phase_ == Phase::closed; }
    /// Graceful stop or a local error: close the channel when possible.
    void begin_close(const char *why);
    /// A channel pytun opened for itself (a command on the bastion), not
    /// anyone's connection: a graceful stop neither waits for it nor counts
    /// it; it ends with its session.
    virtual bool is_background() const { return false; }
    /// Why the stream closes, for the log ("both directions finished",
    /// "channel error", the reason given to begin_close); "" while open.
    const char *close_reason() const { return close_reason_; }

    // --- the driver's side (ssh/session.cpp only) ------------------------
    void bind(SshSession &session) { session_ = &session; }
    LIBSSH2_CHANNEL *channel() const { return channel_; }
    /// The channel exists now (accepted, or its open succeeded).
    void attach(LIBSSH2_CHANNEL *channel);
    /// The channel could not be opened.
    void open_failed(OpenError error);
    /// The stream was closed before its open began: no channel was asked for.
    void open_abandoned() { finish(OpenError::none); }
    bool wants_receive() const { return phase_ == Phase::open && downstream_ == End::open; }
    /// Room for bytes from the channel; empty while the local end lags.
    std::span<char> receive_space();
    void received(std::size_t n);
    void received_eof();
    /// Bytes from the local end waiting to go into the channel.
    std::span<char> send_data() { return upload_.readable(); }
    void sent(std::size_t n);
    bool wants_eof() const { return phase_ == Phase::open && upstream_ == End::pending && upload_.empty(); }
    void eof_sent();
    /// A libssh2 call on the channel failed: the channel is to be closed.
    void channel_failed(int rc);
    /// The channel is freed: the stream is finished.
    void channel_freed();
    /// The session is going away and frees the channel with itself.
    void abort();
    /// The channel closed cleanly; what the bastion said of the command it
    /// ran (exec channels: ssh/command.h): exit status (0 also when none was
    /// sent: libssh2 cannot tell) and the signal that ended it, if any.
    /// Passed to on_exit once.
    void report_exit(int status, const std::string &signal);
    /// While a libssh2 call is pinned on a pointer into our buffers, they must
    /// not move or be released.
    void set_pinned(bool pinned) { pinned_ = pinned; }
    /// Give buffer memory back if nothing is buffered (called periodically,
    /// so busy streams keep their buffers and idle ones hold none).
    void release_idle_buffers();

protected:
    // --- the local end's side (subclasses) -------------------------------
    /// Room for bytes read locally; empty while the channel lags.
    std::span<char> upload_space();
    void uploaded(std::size_t n);
    /// The local end has no more bytes to send (its EOF).
    void local_eof();
    /// Bytes from the channel waiting to be written locally.
    std::span<char> download_data() const { return download_.readable(); }
    void delivered(std::size_t n);
    /// Everything from the channel is delivered and its EOF is due locally.
    bool download_ended() const { return downstream_ == End::pending && download_.empty(); }
    /// The local end passed the channel's EOF on (shutdown of its write side).
    void local_shut();
    bool upload_ended() const { return upstream_ != End::open; }
    spdlog::logger &log() const { return *log_; }
    /// Ask the driver for a pass (after local progress); nothing before the
    /// stream is bound.
    void wake();

    /// The channel is open (accepted or opened): bytes may flow.
    virtual void on_opened() {}
    /// Bytes or the channel's EOF are ready for the local end.
    virtual void on_download() = 0;
    /// The upload buffer has room again after being full.
    virtual void on_upload_space() = 0;
    /// The stream is finished (channel freed, open failed, or aborted):
    /// release the local end. `error` says why an open failed, else none.
    virtual void on_closed(OpenError error) = 0;
    /// The channel closed cleanly (before on_closed): see report_exit.
    virtual void on_exit(int /*status*/, const std::string & /*signal*/) {}

private:
    void maybe_close();
    void finish(OpenError error);

    SshSession *session_ = nullptr;
    std::shared_ptr<spdlog::logger> log_;
    std::uint64_t id_;
    LIBSSH2_CHANNEL *channel_ = nullptr;
    Phase phase_ = Phase::opening;
    End upstream_ = End::open;   ///< local end -> channel
    End downstream_ = End::open; ///< channel -> local end
    RingBuffer upload_;
    RingBuffer download_;
    bool pinned_ = false;
    const char *close_reason_ = "";
    bool exit_reported_ = false;
};

} // namespace pytun::detail
