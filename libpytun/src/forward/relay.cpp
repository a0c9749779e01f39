// SPDX-License-Identifier: MIT
// One forwarded connection: local socket I/O and the relay's half of the
// channel life cycle (the driver does the libssh2 half).
#include "forward/relay.h"

#include <pytun/error.h>

#include "ssh/session.h"

namespace pytun::detail {

Relay::Relay(SshSession &session, LIBSSH2_CHANNEL *channel, RelayCounters &counters, std::uint64_t id)
    : session_(&session), channel_(channel), counters_(counters), id_(id), socket_(session.io()),
      resolver_(session.io()), timer_(session.io())
{
    counters_.active.fetch_add(1, std::memory_order_relaxed);
    counters_.total.fetch_add(1, std::memory_order_relaxed);
}

Relay::~Relay()
{
    if (channel_)
        counters_.active.fetch_sub(1, std::memory_order_relaxed);
}

void Relay::connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout)
{
    target_ = host + ":" + std::to_string(port);
    auto self = shared_from_this();
    timer_.expires_after(timeout);
    timer_.async_wait([this, self](const asio::error_code &ec) {
        if (ec || connected_)
            return;
        resolver_.cancel();
        asio::error_code ignored;
        socket_.cancel(ignored);
        socket_.close(ignored); // the pending connect completes with operation_aborted
    });
    asio::error_code parse_error;
    auto address = asio::ip::make_address(host, parse_error);
    if (!parse_error) {
        socket_.async_connect({address, port}, [this, self](const asio::error_code &ec) { on_connected(ec); });
        return;
    }
    resolver_.async_resolve(host, std::to_string(port),
                            [this, self](const asio::error_code &ec,
                                         asio::ip::tcp::resolver::results_type results) {
                                if (ec) {
                                    on_connected(ec);
                                    return;
                                }
                                asio::async_connect(socket_, results,
                                                    [this, self](const asio::error_code &cec,
                                                                 const asio::ip::tcp::endpoint &) {
                                                        on_connected(cec);
                                                    });
                            });
}

void Relay::on_connected(const asio::error_code &ec)
{
    timer_.cancel();
    if (!session_ || closing_)
        return;
    if (ec) {
        counters_.failed.fetch_add(1, std::memory_order_relaxed);
        std::string why = ec == asio::error::operation_aborted ? std::string("timed out") : ec.message();
        session_->log().warn("connection #{}: cannot reach {} ({}); closing this connection, the tunnel stays up",
                             id_, target_, why);
        begin_close("local service unreachable");
        return;
    }
    connected_ = true;
    counters_.connection_setup.observe(std::chrono::steady_clock::now() - arrived_);
    asio::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket_.non_blocking(true, ignored);
    session_->log().debug("connection #{}: connected to {}", id_, target_);
    write_local(); // what the channel delivered while we were connecting
    read_local();
}

std::span<char> Relay::receive_space()
{
    if (closing_)
        return {};
    return download_.writable();
}

void Relay::received(std::size_t n)
{
    download_.commit(n);
    write_local();
}

void Relay::received_eof()
{
    channel_eof_ = true;
    write_local(); // shuts the local write side down once the buffer is flushed
}

void Relay::sent(std::size_t n)
{
    const bool was_full = upload_.full();
    upload_.consume(n);
    if (was_full)
        read_local();
}

void Relay::read_local()
{
    if (!connected_ || local_eof_ || closing_ || !session_)
        return;
    bool progress = false;
    for (;;) {
        std::span<char> space = upload_.writable();
        if (space.empty())
            break; // backpressure: resumes from sent()
        asio::error_code ec;
        std::size_t n = socket_.read_some(asio::buffer(space.data(), space.size()), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            arm_read();
            break;
        }
        if (ec == asio::error::eof) {
            local_eof_ = true;
            progress = true;
            break;
        }
        if (ec) {
            session_->log().debug("connection #{}: local read failed: {}", id_, ec.message());
            begin_close("local socket error");
            return;
        }
        upload_.commit(n);
        counters_.bytes_from_service.fetch_add(n, std::memory_order_relaxed);
        progress = true;
    }
    if (progress)
        session_->wake();
}

void Relay::write_local()
{
    if (!connected_ || !session_ || closing_)
        return;
    bool freed = false;
    while (!download_.empty()) {
        std::span<char> data = download_.readable();
        asio::error_code ec;
        std::size_t n = socket_.write_some(asio::buffer(data.data(), data.size()), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            arm_write();
            break;
        }
        if (ec) {
            session_->log().debug("connection #{}: local write failed: {}", id_, ec.message());
            begin_close("local socket error");
            return;
        }
        download_.consume(n);
        counters_.bytes_to_service.fetch_add(n, std::memory_order_relaxed);
        freed = true;
    }
    if (freed)
        session_->note_receive_space();
    if (download_.empty() && channel_eof_ && !local_shut_) {
        asio::error_code ignored;
        socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        local_shut_ = true;
        maybe_finish();
    }
}

void Relay::arm_read()
{
    if (reading_)
        return;
    reading_ = true;
    socket_.async_wait(asio::ip::tcp::socket::wait_read, [this, self = shared_from_this()](const asio::error_code &ec) {
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
    socket_.async_wait(asio::ip::tcp::socket::wait_write, [this, self = shared_from_this()](const asio::error_code &ec) {
        writing_ = false;
        if (!ec)
            write_local();
    });
}

void Relay::maybe_finish()
{
    if (local_eof_ && eof_sent_ && channel_eof_ && local_shut_)
        begin_close("both directions finished");
}

void Relay::begin_close(const char *why)
{
    if (closing_ || !channel_)
        return;
    closing_ = true;
    if (session_) {
        session_->log().trace("connection #{}: closing ({})", id_, why);
        session_->wake();
    }
}

void Relay::channel_failed(int rc)
{
    if (session_)
        session_->log().debug("connection #{}: channel error {}", id_, rc);
    closing_ = true;
}

void Relay::channel_freed()
{
    if (!channel_)
        return;
    channel_ = nullptr;
    counters_.active.fetch_sub(1, std::memory_order_relaxed);
    close_local();
}

void Relay::abort()
{
    if (channel_) {
        channel_ = nullptr; // libssh2_session_free releases it
        counters_.active.fetch_sub(1, std::memory_order_relaxed);
    }
    session_ = nullptr;
    close_local();
}

void Relay::release_idle_buffers()
{
    if (pinned_)
        return;
    upload_.release_if_empty();
    download_.release_if_empty();
}

void Relay::close_local()
{
    asio::error_code ignored;
    timer_.cancel();
    resolver_.cancel();
    socket_.close(ignored);
    connected_ = false;
    release_idle_buffers();
}

} // namespace pytun::detail
