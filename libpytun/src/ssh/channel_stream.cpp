// SPDX-License-Identifier: MIT
// A channel stream's state machine: every transition of its life is here.
#include "ssh/channel_stream.h"

#include <atomic>

#include "ssh/session.h"

namespace pytun::detail {
namespace {
std::atomic<std::uint64_t> last_stream_id{0};
} // namespace

ChannelStream::ChannelStream(std::shared_ptr<spdlog::logger> log)
    : log_(std::move(log)), id_(last_stream_id.fetch_add(1, std::memory_order_relaxed) + 1)
{
}

ChannelStream::~ChannelStream() = default;

void ChannelStream::attach(LIBSSH2_CHANNEL *channel)
{
    channel_ = channel;
    // Closed while its open was in flight: stays closing, and the driver
    // closes the channel at once.
    if (phase_ == Phase::opening) {
        phase_ = Phase::open;
        on_opened();
    }
}

void ChannelStream::open_failed(OpenError error)
{
    finish(error);
}

const char *to_string(OpenError error)
{
    switch (error) {
    case OpenError::none: return "no error";
    case OpenError::prohibited: return "administratively prohibited by the bastion";
    case OpenError::connect_failed: return "the bastion could not connect (refused or unreachable)";
    case OpenError::resource_shortage: return "the bastion is short of resources";
    case OpenError::timed_out: return "no answer from the bastion in time";
    case OpenError::other: return "the channel could not be opened";
    }
    return "unknown";
}

std::span<char> ChannelStream::receive_space()
{
    if (phase_ != Phase::open)
        return {};
    return download_.writable();
}

void ChannelStream::received(std::size_t n)
{
    download_.commit(n);
    on_download();
}

void ChannelStream::received_eof()
{
    if (downstream_ == End::open)
        downstream_ = End::pending;
    on_download(); // the local end shuts its write side once the buffer is flushed
}

void ChannelStream::sent(std::size_t n)
{
    const bool was_full = upload_.full();
    upload_.consume(n);
    if (was_full)
        on_upload_space();
}

void ChannelStream::eof_sent()
{
    upstream_ = End::done;
    maybe_close();
}

void ChannelStream::channel_failed(int rc)
{
    log().debug("connection #{}: channel error {}", id_, rc);
    if (phase_ == Phase::open || phase_ == Phase::opening) {
        phase_ = Phase::closing;
        close_reason_ = "channel error";
    }
}

void ChannelStream::channel_freed()
{
    channel_ = nullptr;
    finish(OpenError::none);
}

void ChannelStream::abort()
{
    channel_ = nullptr; // libssh2_session_free releases it
    session_ = nullptr;
    finish(OpenError::none);
}

void ChannelStream::report_exit(int status, const std::string &signal)
{
    if (exit_reported_)
        return; // the driver may close a channel in several attempts
    exit_reported_ = true;
    on_exit(status, signal);
}

void ChannelStream::begin_close(const char *why)
{
    if (phase_ == Phase::closing || phase_ == Phase::closed)
        return;
    if (!session_) { // still waiting for a session: no open was asked for
        finish(OpenError::none);
        return;
    }
    // An open still in flight completes first; the driver then closes the
    // channel it brings (see attach()).
    phase_ = Phase::closing;
    close_reason_ = why;
    log().trace("connection #{}: closing ({})", id_, why);
    wake();
}

void ChannelStream::release_idle_buffers()
{
    if (pinned_)
        return;
    upload_.release_if_empty();
    download_.release_if_empty();
}

std::span<char> ChannelStream::upload_space()
{
    if (phase_ == Phase::closing || phase_ == Phase::closed || upstream_ != End::open)
        return {};
    return upload_.writable();
}

void ChannelStream::uploaded(std::size_t n)
{
    upload_.commit(n);
}

void ChannelStream::local_eof()
{
    if (upstream_ == End::open)
        upstream_ = End::pending;
    wake();
}

void ChannelStream::delivered(std::size_t n)
{
    download_.consume(n);
    if (session_)
        session_->note_receive_space();
}

void ChannelStream::local_shut()
{
    downstream_ = End::done;
    maybe_close();
}

void ChannelStream::wake()
{
    if (session_)
        session_->wake();
}

void ChannelStream::maybe_close()
{
    if (upstream_ == End::done && downstream_ == End::done)
        begin_close("both directions finished");
}

void ChannelStream::finish(OpenError error)
{
    if (phase_ == Phase::closed)
        return;
    phase_ = Phase::closed;
    release_idle_buffers();
    on_closed(error);
}

} // namespace pytun::detail
