// SPDX-License-Identifier: MIT
// A channel stream's state machine: every transition of its life is here.
#include "ssh/channel_stream.h"

#include "ssh/session.h"

namespace pytun::detail {

ChannelStream::ChannelStream(SshSession &session, std::uint64_t id) : session_(&session), id_(id) {}

ChannelStream::~ChannelStream() = default;

void ChannelStream::attach(LIBSSH2_CHANNEL *channel)
{
    channel_ = channel;
    // Closed while its open was in flight: stays closing, and the driver
    // closes the channel at once.
    if (phase_ == Phase::opening)
        phase_ = Phase::open;
}

void ChannelStream::open_failed(int rc)
{
    finish(rc);
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
    if (phase_ == Phase::open || phase_ == Phase::opening)
        phase_ = Phase::closing;
}

void ChannelStream::channel_freed()
{
    channel_ = nullptr;
    finish(0);
}

void ChannelStream::abort()
{
    channel_ = nullptr; // libssh2_session_free releases it
    session_ = nullptr;
    finish(0);
}

void ChannelStream::begin_close(const char *why)
{
    if (phase_ == Phase::closing || phase_ == Phase::closed)
        return;
    // An open still in flight completes first; the driver then closes the
    // channel it brings (see attach()).
    phase_ = Phase::closing;
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

spdlog::logger &ChannelStream::log() const
{
    return session_->log(); // only used while the stream is not finished
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

void ChannelStream::finish(int rc)
{
    if (phase_ == Phase::closed)
        return;
    phase_ = Phase::closed;
    release_idle_buffers();
    on_closed(rc);
}

} // namespace pytun::detail
