// SPDX-License-Identifier: MIT
// Relay: one forwarded connection, an SSH channel on one side and a local TCP
// socket on the other. The relay owns the socket and the two buffers; the
// session's driver owns every libssh2 call on the channel and asks the relay
// for bytes to send and for room to receive. Backpressure both ways: the
// local socket is read only while the upload buffer has room, the channel
// only while the download buffer has room.
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <asio.hpp>
#include <libssh2.h>

#include "forward/ring_buffer.h"
#include "util/histogram.h"

namespace pytun::detail {

class SshSession;

/// Counters shared by a tunnel's relays; read from any thread.
struct RelayCounters {
    std::atomic<std::uint64_t> active{0};
    std::atomic<std::uint64_t> total{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> bytes_to_service{0};
    std::atomic<std::uint64_t> bytes_from_service{0};
    AtomicSetupTimeHistogram connection_setup;   ///< channel arrival -> local connect done
};

class Relay : public std::enable_shared_from_this<Relay> {
public:
    Relay(SshSession &session, LIBSSH2_CHANNEL *channel, RelayCounters &counters, std::uint64_t id);
    ~Relay();
    Relay(const Relay &) = delete;
    Relay &operator=(const Relay &) = delete;

    /// Connect the local side to host:port within `timeout`.
    void connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout);

    // --- called by the session's driver only --------------------------------
    LIBSSH2_CHANNEL *channel() const { return channel_; }
    /// Room for bytes from the channel; empty while the local side lags.
    std::span<char> receive_space();
    void received(std::size_t n);
    void received_eof();
    /// Bytes from the local side waiting to go into the channel.
    std::span<char> send_data() { return upload_.readable(); }
    void sent(std::size_t n);
    bool wants_eof() const { return local_eof_ && upload_.empty() && !eof_sent_ && !closing_; }
    void eof_sent() { eof_sent_ = true; maybe_finish(); }
    bool wants_receive() const { return !channel_eof_ && !closing_; }
    bool closing() const { return closing_; }
    /// The channel is freed: close the local side, the relay is done.
    void channel_freed();
    /// A libssh2 call on the channel failed: close the channel and the socket.
    void channel_failed(int rc);
    /// While a libssh2 call is pinned on a pointer into our buffers, they must
    /// not move or be released.
    void set_pinned(bool pinned) { pinned_ = pinned; }
    bool finished() const { return channel_ == nullptr; }
    /// Give buffer memory back if nothing is buffered (called periodically,
    /// so busy connections keep their buffers and idle ones hold none).
    void release_idle_buffers();
    /// The session is going away: forget the channel (libssh2 frees it with
    /// the session) and close the socket.
    void abort();
    /// Graceful stop: close the channel when possible.
    void begin_close(const char *why);

private:
    void on_connected(const asio::error_code &ec);
    void read_local();
    void write_local();
    void arm_read();
    void arm_write();
    void maybe_finish();
    void close_local();

    SshSession *session_;
    LIBSSH2_CHANNEL *channel_;
    RelayCounters &counters_;
    std::uint64_t id_;
    asio::ip::tcp::socket socket_;
    asio::ip::tcp::resolver resolver_;
    asio::steady_timer timer_;
    std::string target_;
    std::chrono::steady_clock::time_point arrived_ = std::chrono::steady_clock::now();

    RingBuffer upload_;    ///< local -> channel
    RingBuffer download_;  ///< channel -> local

    bool connected_ = false;
    bool local_eof_ = false;      ///< read EOF from the local socket
    bool eof_sent_ = false;       ///< channel EOF sent to the bastion
    bool channel_eof_ = false;    ///< channel EOF received from the bastion
    bool local_shut_ = false;     ///< shutdown(SHUT_WR) done on the local socket
    bool closing_ = false;        ///< the driver is to close the channel
    bool reading_ = false;        ///< async_wait(read) outstanding
    bool writing_ = false;        ///< async_wait(write) outstanding
    bool pinned_ = false;
};

} // namespace pytun::detail
