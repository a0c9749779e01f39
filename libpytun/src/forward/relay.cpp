// SPDX-License-Identifier: MIT
// One relayed connection: the local socket's I/O (the driver does the
// channel's).
#include "forward/relay.h"

#include <cstring>

#include "log/aggregate.h"
#include "loop/connect.h"

namespace pytun::detail {

Relay::Relay(asio::io_context &io, std::shared_ptr<spdlog::logger> log, std::shared_ptr<TrafficCounters> counters)
    : ChannelStream(std::move(log)), counters_(std::move(counters)), socket_(io), open_timer_(io)
{
    counters_->active.fetch_add(1, std::memory_order_relaxed);
    counters_->total.fetch_add(1, std::memory_order_relaxed);
}

Relay::~Relay()
{
    if (counted_active_)
        counters_->active.fetch_sub(1, std::memory_order_relaxed);
}

void Relay::connect(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout)
{
    dial(host, port, timeout, nullptr);
}

void Relay::dial(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout,
                 std::function<bool(const asio::ip::address &)> allowed)
{
    target_ = host + ":" + std::to_string(port);
    connect_timeout_ = timeout;
    dialing_ = std::make_unique<asio::ip::tcp::socket>(socket_.get_executor());
    connect_with_deadline(
        *dialing_, host, port, timeout,
        [this, self = shared_from_this()](const ConnectOutcome &outcome) {
            if (outcome)
                socket_ = Socket(std::move(*dialing_));
            on_connected(outcome);
        },
        std::move(allowed));
}

void Relay::negotiate(Negotiator negotiator, std::function<std::string(const ConnectOutcome &)> connect_reply,
                      std::chrono::milliseconds connect_timeout)
{
    negotiator_ = std::move(negotiator);
    connect_reply_ = std::move(connect_reply);
    connect_timeout_ = connect_timeout;
    feed_negotiation(); // bytes may have come with the channel
}

void Relay::feed_negotiation()
{
    if (finished() || phase() == Phase::closing)
        return;
    for (std::span<char> data = download_data(); !data.empty() && negotiator_; data = download_data()) {
        Negotiation step = negotiator_(std::string_view(data.data(), data.size()));
        delivered(data.size()); // the negotiator keeps what it still needs
        send_to_channel(step.reply);
        if (step.kind == Negotiation::Kind::refuse) {
            negotiator_ = nullptr;
            counters_->failed.fetch_add(1, std::memory_order_relaxed);
            refuse_channel();
            return;
        }
        if (step.kind == Negotiation::Kind::connect) {
            negotiator_ = nullptr;
            local_first_ = std::move(step.early_data);
            dial(step.host, step.port, connect_timeout_, std::move(step.allowed));
            return;
        }
    }
    if (negotiator_ && download_ended()) // the client gave up before asking
        begin_close("client left during the handshake");
}

std::size_t Relay::queue_upload(std::string_view bytes)
{
    std::size_t queued = 0;
    while (queued < bytes.size()) {
        std::span<char> space = upload_space();
        if (space.empty())
            break;
        const std::size_t n = std::min(space.size(), bytes.size() - queued);
        std::memcpy(space.data(), bytes.data() + queued, n);
        uploaded(n);
        queued += n;
    }
    return queued;
}

void Relay::send_to_channel(std::string_view bytes)
{
    queue_upload(bytes); // a reply of a few bytes: the buffer is empty this early
    wake();
}

// Nothing more goes either way: the reply (already buffered) and an EOF go
// to the channel's client, then the channel closes.
void Relay::refuse_channel()
{
    local_eof();
    local_shut();
}

void Relay::start(Socket socket, std::string_view early_data)
{
    socket_ = std::move(socket);
    // At most a few hundred bytes (what a SOCKS client sent after its
    // request): they fit the empty buffer.
    const std::size_t early = queue_upload(early_data);
    counters_->bytes_from_service.fetch_add(early, std::memory_order_relaxed);
    bytes_out_ += early;
    if (open_timeout_.count() > 0 && phase() == Phase::opening) {
        open_timer_.expires_after(open_timeout_);
        open_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &ec) {
            if (ec || phase() != Phase::opening)
                return;
            // The open stays in flight (libssh2 cannot cancel it); the channel
            // it brings is closed at once.
            counters_->failed.fetch_add(1, std::memory_order_relaxed);
            if (refused_)
                refused_(socket_, OpenError::timed_out);
            refused_ = nullptr;
            close_local();
            begin_close("open timed out");
        });
    }
    begin_relaying();
}

void Relay::on_open(std::string opened, Refused refused, std::chrono::milliseconds timeout)
{
    local_first_ = std::move(opened);
    refused_ = std::move(refused);
    open_timeout_ = timeout;
}

void Relay::on_connected(const ConnectOutcome &outcome)
{
    if (finished() || phase() == Phase::closing) {
        // The channel's client left first. A service that refused or did
        // not answer still failed this connection: count it (a slow loop
        // under a flood must not hide a dead service), but nobody is left
        // to tell.
        if (!outcome && !is_fd_exhaustion(outcome.error))
            counters_->failed.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    const bool negotiated = static_cast<bool>(connect_reply_);
    if (negotiated) { // the channel's client learns the outcome first
        send_to_channel(connect_reply_(outcome));
        connect_reply_ = nullptr;
    }
    if (!outcome) {
        // Out of descriptors is pytun's own problem, not the service's.
        if (is_fd_exhaustion(outcome.error)) {
            FdBudget::instance().note_exhausted();
            if (negotiated)
                refuse_channel();
            else
                refuse(fd_exhaustion_text());
            return;
        }
        counters_->failed.fetch_add(1, std::memory_order_relaxed);
        const std::string why = outcome.failure == ConnectOutcome::Failure::timeout
                                    ? std::string("timed out")
                                    : outcome.describe(connect_timeout_);
        log_aggregated(log(), spdlog::level::warn, "unreachable " + target_ + " " + why,
                       "connection #" + std::to_string(id()) + ": cannot reach " + target_ + " (" + why +
                           "); closing this connection, the tunnel stays up");
        if (negotiated)
            refuse_channel(); // the reply must reach the client before the channel closes
        else
            begin_close("local service unreachable");
        return;
    }
    log().debug("connection #{}: connected to {}", id(), target_);
    begin_relaying();
}

void Relay::begin_relaying()
{
    connected_ = true;
    asio::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket_.non_blocking(true, ignored);
    opened_ = phase() == Phase::open;
    record_setup();
    write_local(); // what the channel delivered meanwhile
    read_local();
}

void Relay::on_opened()
{
    open_timer_.cancel();
    opened_ = true;
    record_setup();
    write_local(); // the "opened" reply, if any
}

// Set up once both ends are: the local socket connected and the channel open.
void Relay::record_setup()
{
    if (setup_recorded_ || !connected_ || !opened_)
        return;
    setup_recorded_ = true;
    counters_->connection_setup.observe(std::chrono::steady_clock::now() - arrived_);
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
        counters_->bytes_from_service.fetch_add(n, std::memory_order_relaxed);
        bytes_out_ += n;
        progress = true;
    }
    if (progress)
        wake();
}

void Relay::write_local()
{
    if (!connected_ || !opened_ || finished() || phase() == Phase::closing)
        return;
    while (!local_first_.empty()) {
        asio::error_code ec;
        std::size_t n = socket_.write_some(asio::buffer(local_first_), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            arm_write();
            return;
        }
        if (ec) {
            begin_close("local socket error");
            return;
        }
        local_first_.erase(0, n);
    }
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
        counters_->bytes_to_service.fetch_add(n, std::memory_order_relaxed);
        bytes_in_ += n;
        delivered(n);
    }
    if (download_ended()) {
        asio::error_code ignored;
        socket_.shutdown(asio::socket_base::shutdown_send, ignored);
        local_shut();
    }
}

void Relay::arm_read()
{
    if (reading_)
        return;
    reading_ = true;
    socket_.async_wait(asio::socket_base::wait_read,
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
    socket_.async_wait(asio::socket_base::wait_write,
                       [this, self = shared_from_this()](const asio::error_code &ec) {
                           writing_ = false;
                           if (!ec)
                               write_local();
                       });
}

void Relay::on_closed(OpenError error)
{
    open_timer_.cancel();
    if (counted_active_) {
        counted_active_ = false;
        counters_->active.fetch_sub(1, std::memory_order_relaxed);
    }
    if (error != OpenError::none) {
        counters_->failed.fetch_add(1, std::memory_order_relaxed);
        log().debug("connection #{}: channel not opened: {}", id(), to_string(error));
        if (refused_ && socket_.is_open())
            refused_(socket_, error);
    } else if (log().should_log(spdlog::level::debug)) {
        const std::chrono::duration<double> lasted = std::chrono::steady_clock::now() - arrived_;
        const char *why = close_reason();
        log().debug("connection #{}: ended after {:.3f} s ({}): {} bytes out, {} bytes in", id(), lasted.count(),
                    *why ? why : "the SSH connection closed", bytes_out_, bytes_in_);
    }
    close_local();
}

void Relay::refuse(const std::string &why)
{
    counters_->refused.fetch_add(1, std::memory_order_relaxed);
    log_aggregated(log(), spdlog::level::warn, "refused " + why,
                   "connection #" + std::to_string(id()) + " refused: " + why);
    begin_close("refused");
}

void Relay::close_local()
{
    asio::error_code ignored;
    socket_.close(ignored);
    if (dialing_)
        dialing_->close(ignored); // ends a connect in progress
    lease_.release();
    connected_ = false;
}

} // namespace pytun::detail
