// SPDX-License-Identifier: MIT
// Relay: a channel stream whose other end is a local stream socket. It owns
// the socket: either it dials the target itself over TCP (a connection the
// bastion forwarded to us) or it is given one already connected (a local
// client of a forward that opens channels, or the far end of a socketpair
// whose near end carries an SSH session through a jump host: tunnel/jump.h).
// Backpressure both ways: the socket is read
// only while the upload buffer has room, the channel only while the download
// buffer has room (ssh/channel_stream.h).
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <asio.hpp>

#include "forward/traffic.h"
#include "loop/connect.h"
#include "ssh/channel_stream.h"
#include "util/fd_budget.h"

namespace pytun::detail {

class Relay final : public ChannelStream {
public:
    /// TCP, or a local (AF_UNIX) socket: the relay only reads, writes and waits.
    using Socket = asio::generic::stream_protocol::socket;

    /// `io` is the loop of the session the stream will be bound to.
    Relay(asio::io_context &io, std::shared_ptr<spdlog::logger> log, std::shared_ptr<TrafficCounters> counters);
    ~Relay() override;

    /// The descriptor the local socket uses or will use (util/fd_budget.h);
    /// given back when the socket closes.
    void hold(FdLease lease) { lease_ = std::move(lease); }
    /// Turn the connection away (the connection cap, the descriptor
    /// reserve): `why` is logged, aggregated; the channel or client is closed.
    void refuse(const std::string &why);

    /// Connect the local end to host:port within `timeout` (the channel may
    /// deliver bytes meanwhile: they wait in the download buffer).
    void connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout);
    /// What the channel's client asked for, before the relay connects
    /// locally: the bastion's clients of a reverse SOCKS forward speak SOCKS
    /// first.
    struct Negotiation {
        enum class Kind { need_more, connect, refuse };
        Kind kind = Kind::need_more;
        std::string reply;       ///< for the channel's client, now
        std::string host;        ///< connect: the local target
        std::uint16_t port = 0;
        std::function<bool(const asio::ip::address &)> allowed; ///< connect: addresses it may use (all if empty)
        std::string early_data;  ///< connect: what the client sent after its request
    };
    using Negotiator = std::function<Negotiation(std::string_view from_channel)>;
    /// Bytes from the channel go to `negotiator` until it says whom to
    /// connect to (then `connect_reply(outcome)` gives the bytes for the
    /// channel's client once the connect is over, either way) or refuses.
    void negotiate(Negotiator negotiator, std::function<std::string(const ConnectOutcome &)> connect_reply,
                   std::chrono::milliseconds connect_timeout);

    /// The local end is a connected socket (a client of this forward);
    /// `early_data` is what it sent before the relay took over (it goes out
    /// first). Local bytes wait in the buffer until the channel is open.
    void start(Socket socket, std::string_view early_data = {});

    /// What the local end is told of the channel's open: `opened` bytes are
    /// written to it before anything from the channel (e.g. a SOCKS
    /// success reply); `refused(socket, why)` runs when the open failed or
    /// took longer than `timeout`, before the socket is closed (e.g. a SOCKS
    /// error reply, or a reset). Call before start().
    using Refused = std::function<void(Socket &, OpenError)>;
    void on_open(std::string opened, Refused refused, std::chrono::milliseconds timeout);

private:
    void dial(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout,
              std::function<bool(const asio::ip::address &)> allowed);
    void on_connected(const ConnectOutcome &outcome);
    void feed_negotiation();
    /// Copies `bytes` into the upload buffer as far as it has room; how many.
    std::size_t queue_upload(std::string_view bytes);
    void send_to_channel(std::string_view bytes);
    void refuse_channel();
    void begin_relaying();
    void record_setup();
    void read_local();
    void write_local();
    void arm_read();
    void arm_write();
    void close_local();

    void on_opened() override;
    void on_download() override { negotiator_ ? feed_negotiation() : write_local(); }
    void on_upload_space() override { read_local(); }
    void on_closed(OpenError error) override;

    std::shared_ptr<TrafficCounters> counters_;
    Socket socket_;
    std::unique_ptr<asio::ip::tcp::socket> dialing_; ///< dial(): connecting; socket_ once connected
    std::string target_;
    std::string local_first_; ///< written to the local end before channel bytes
    Refused refused_;
    std::chrono::milliseconds open_timeout_{0};
    Negotiator negotiator_;
    std::function<std::string(const ConnectOutcome &)> connect_reply_;
    std::chrono::milliseconds connect_timeout_{0};
    asio::steady_timer open_timer_;
    FdLease lease_;
    bool counted_active_ = true;
    /// When the connection arrived (a channel from the bastion, or a local
    /// client): its set-up time runs until both ends are connected.
    std::chrono::steady_clock::time_point arrived_ = std::chrono::steady_clock::now();
    bool setup_recorded_ = false;
    std::uint64_t bytes_out_ = 0; ///< local end -> channel, for the closing log line
    std::uint64_t bytes_in_ = 0;  ///< channel -> local end
    bool connected_ = false;
    bool opened_ = false;  ///< the channel has been open (what we write goes through)
    bool reading_ = false; ///< async_wait(read) outstanding
    bool writing_ = false; ///< async_wait(write) outstanding
};

} // namespace pytun::detail
