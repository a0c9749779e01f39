// SPDX-License-Identifier: MIT
// One relayed connection: the local socket's I/O (the driver does the
// channel's).
#include "forward/relay.h"

#include "loop/connect.h"
#include "ssh/session.h"

namespace pytun::detail {

Relay::Relay(SshSession &session, TrafficCounters &counters, std::uint64_t id)
    : ChannelStream(session, id), counters_(counters), socket_(session.io())
{
    counters_.active.fetch_add(1, std::memory_order_relaxed);
    counters_.total.fetch_add(1, std::memory_order_relaxed);
}

Relay::~Relay()
{
    if (counted_active_)
        counters_.active.fetch_sub(1, std::memory_order_relaxed);
}

void Relay::connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout)
{
    target_ = host + ":" + std::to_string(port);
    auto self = shared_from_this();
    connect_with_deadline(socket_, host, port, timeout, [this, self](const ConnectOutcome &outcome) {
        on_connected(outcome.error, outcome.failure == ConnectOutcome::Failure::timeout ? std::string("timed out")
                                                                                         : outcome.error.message());
    });
}

void Relay::on_connected(const asio::error_code &ec, const std::string &why)
{
    if (finished() || phase() == Phase::closing)
        return;
    if (ec) {
        counters_.failed.fetch_add(1, std::memory_order_relaxed);
        log().warn("connection #{}: cannot reach {} ({}); closing this connection, the tunnel stays up", id(),
                   target_, why);
        begin_close("local service unreachable");
        return;
    }
    connected_ = true;
    asio::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket_.non_blocking(true, ignored);
    log().debug("connection #{}: connected to {}", id(), target_);
    write_local(); // what the channel delivered while we were connecting
    read_local();
}

void Relay::read_local()
{
    if (!connected_ || upload_ended() || finished() || phase() == Phase::closing)
        return;
    bool progress = false;
    for (;;) {
        std::span<char> space = upload_space();
        if (space.empty())
            break; // backpressure: resumes from on_upload_space()
        asio::error_code ec;
        std::size_t n = socket_.read_some(asio::buffer(space.data(), space.size()), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            arm_read();
            break;
        }
        if (ec == asio::error::eof) {
            local_eof();
            return;
        }
        if (ec) {
            log().debug("connection #{}: local read failed: {}", id(), ec.message());
            begin_close("local socket error");
            return;
        }
        uploaded(n);
        counters_.bytes_from_service.fetch_add(n, std::memory_order_relaxed);
        progress = true;
    }
    if (progress)
        wake();
}

void Relay::write_local()
{
    if (!connected_ || finished() || phase() == Phase::closing)
        return;
    for (std::span<char> data = download_data(); !data.empty(); data = download_data()) {
        asio::error_code ec;
        std::size_t n = socket_.write_some(asio::buffer(data.data(), data.size()), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            arm_write();
            break;
        }
        if (ec) {
            log().debug("connection #{}: local write failed: {}", id(), ec.message());
            begin_close("local socket error");
            return;
        }
        counters_.bytes_to_service.fetch_add(n, std::memory_order_relaxed);
        delivered(n);
    }
    if (download_ended()) {
        asio::error_code ignored;
        socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        local_shut();
    }
}

void Relay::arm_read()
{
    if (reading_)
        return;
    reading_ = true;
    socket_.async_wait(asio::ip::tcp::socket::wait_read,
                       [this, self = shared_from_this()](const asio::error_code &ec) {
                           reading_ = false;
                           if (!ec)
                               read_local();
                       });
}

void Relay::arm_write()
{
    if (writing_)
        return;
    writing_ = true;
    socket_.async_wait(asio::ip::tcp::socket::wait_write,
                       [this, self = shared_from_this()](const asio::error_code &ec) {
                           writing_ = false;
                           if (!ec)
                               write_local();
                       });
}

void Relay::on_closed(int)
{
    if (counted_active_) {
        counted_active_ = false;
        counters_.active.fetch_sub(1, std::memory_order_relaxed);
    }
    close_local();
}

void Relay::close_local()
{
    asio::error_code ignored;
    socket_.close(ignored); // also ends a connect in progress
    connected_ = false;
}

} // namespace pytun::detail
