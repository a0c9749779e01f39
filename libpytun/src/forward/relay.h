// SPDX-License-Identifier: MIT
// Relay: a channel stream whose other end is a local TCP socket. It owns the
// socket: either it dials the target itself (a connection the bastion
// forwarded to us) or it is given one already connected (a local client of a
// forward that opens channels). Backpressure both ways: the socket is read
// only while the upload buffer has room, the channel only while the download
// buffer has room (ssh/channel_stream.h).
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <string>

#include <asio.hpp>

#include "forward/traffic.h"
#include "ssh/channel_stream.h"

namespace pytun::detail {

class Relay final : public ChannelStream {
public:
    Relay(SshSession &session, TrafficCounters &counters, std::uint64_t id);
    ~Relay() override;

    /// Connect the local end to host:port within `timeout` (the channel may
    /// deliver bytes meanwhile: they wait in the download buffer).
    void connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout);

private:
    void on_connected(const asio::error_code &ec, const std::string &why);
    void read_local();
    void write_local();
    void arm_read();
    void arm_write();
    void close_local();

    void on_download() override { write_local(); }
    void on_upload_space() override { read_local(); }
    void on_closed(int rc) override;

    TrafficCounters &counters_;
    asio::ip::tcp::socket socket_;
    std::string target_;
    bool counted_active_ = true;
    bool connected_ = false;
    bool reading_ = false; ///< async_wait(read) outstanding
    bool writing_ = false; ///< async_wait(write) outstanding
};

} // namespace pytun::detail
