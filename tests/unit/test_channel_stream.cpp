// SPDX-License-Identifier: MIT
// Unit tests of a channel stream's life (ssh/channel_stream.h) without a
// network: open -> relay -> half-close -> close, and the ways it ends early.
// The driver's calls are made by hand, as ssh/session.cpp makes them.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "ssh/channel_stream.h"
#include "ssh/session.h"

using pytun::detail::ChannelStream;
using pytun::detail::OpenError;
using Phase = ChannelStream::Phase;

namespace {

// A local end that records what the stream told it and lets the test act
// as the local socket.
class TestStream final : public ChannelStream {
public:
    using ChannelStream::ChannelStream;
    int opened = 0, downloads = 0, upload_spaces = 0, closes = 0;
    OpenError closed_with = OpenError::other;

    std::size_t read_local(const std::string &bytes)
    {
        auto space = upload_space();
        const std::size_t n = std::min(space.size(), bytes.size());
        if (n) // an empty span may have no storage behind it
            std::memcpy(space.data(), bytes.data(), n);
        uploaded(n);
        return n;
    }
    std::string write_local()
    {
        std::string out;
        for (auto data = download_data(); !data.empty(); data = download_data()) {
            out.append(data.data(), data.size());
            delivered(data.size());
        }
        return out;
    }
    using ChannelStream::download_ended;
    using ChannelStream::local_eof;
    using ChannelStream::local_shut;
    using ChannelStream::upload_ended;

private:
    void on_opened() override { ++opened; }
    void on_download() override { ++downloads; }
    void on_upload_space() override { ++upload_spaces; }
    void on_closed(OpenError error) override
    {
        ++closes;
        closed_with = error;
    }
};

// A session with no libssh2 session behind it: wake() posts passes that do
// nothing, which is all a stream needs from it here.
struct Fixture {
    asio::io_context io;
    std::shared_ptr<spdlog::logger> log =
        std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
    std::shared_ptr<pytun::detail::SshSession> session =
        std::make_shared<pytun::detail::SshSession>(asio::ip::tcp::socket(io), log);
    // Any non-null pointer: the stream only stores and returns it.
    LIBSSH2_CHANNEL *fake_channel = reinterpret_cast<LIBSSH2_CHANNEL *>(&io);

    /// A stream the driver has adopted (as open_channel and accepts do).
    std::shared_ptr<TestStream> stream()
    {
        auto s = std::make_shared<TestStream>(log);
        session->adopt(s);
        return s;
    }
};

} // namespace

TEST_CASE("a stream relays both ways, half-closes each direction, then asks for its channel to be closed")
{
    Fixture f;
    auto s = f.stream();
    CHECK(s->phase() == Phase::opening);
    CHECK_FALSE(s->wants_receive());
    // Local bytes wait in the buffer while the channel is being opened.
    CHECK(s->read_local("hello") == 5);
    s->attach(f.fake_channel);
    CHECK(s->phase() == Phase::open);
    CHECK(s->opened == 1);
    CHECK(std::string(s->send_data().data(), s->send_data().size()) == "hello");
    s->sent(5);
    CHECK(s->send_data().empty());

    // Bytes from the channel: the local end is told, then delivers them.
    auto space = s->receive_space();
    REQUIRE(space.size() >= 3);
    std::memcpy(space.data(), "abc", 3);
    s->received(3);
    CHECK(s->downloads == 1);
    CHECK(s->write_local() == "abc");

    // Local EOF: the channel EOF is due only once the upload buffer is empty.
    s->read_local("tail");
    s->local_eof();
    CHECK(s->upload_ended());
    CHECK_FALSE(s->wants_eof());
    s->sent(4);
    CHECK(s->wants_eof());
    s->eof_sent();
    CHECK_FALSE(s->wants_eof());
    CHECK(s->phase() == Phase::open); // the other direction still flows

    // Channel EOF: the local end shuts down its write side after the last byte.
    std::memcpy(s->receive_space().data(), "z", 1);
    s->received(1);
    s->received_eof();
    CHECK_FALSE(s->wants_receive());
    CHECK_FALSE(s->download_ended()); // "z" is not delivered yet
    CHECK(s->write_local() == "z");
    CHECK(s->download_ended());
    s->local_shut();
    CHECK(s->phase() == Phase::closing);
    CHECK(s->closes == 0);

    s->channel_freed();
    CHECK(s->phase() == Phase::closed);
    CHECK(s->finished());
    CHECK(s->closes == 1);
    CHECK(s->closed_with == OpenError::none);
    s->abort(); // the session going away afterwards changes nothing
    CHECK(s->closes == 1);
}

TEST_CASE("a full upload buffer stops local reads until the channel takes bytes")
{
    Fixture f;
    auto s = f.stream();
    s->attach(f.fake_channel);
    std::string big(pytun::detail::RingBuffer::k_capacity, 'x');
    CHECK(s->read_local(big) == big.size());
    CHECK(s->read_local("more") == 0); // backpressure
    s->sent(10);
    CHECK(s->upload_spaces == 1);
    s->sent(10);
    CHECK(s->upload_spaces == 1); // only the full -> not full edge wakes the local end
}

TEST_CASE("a stream closed while its open is in flight closes the channel the open brings")
{
    Fixture f;
    auto s = f.stream();
    s->begin_close("client went away");
    CHECK(s->phase() == Phase::closing);
    CHECK(s->channel() == nullptr); // nothing for the driver to close yet
    s->attach(f.fake_channel);
    CHECK(s->phase() == Phase::closing); // not open: the driver closes it at once
    CHECK(s->opened == 0);
    CHECK_FALSE(s->wants_receive());
    s->channel_freed();
    CHECK(s->finished());
    CHECK(s->closes == 1);
}

TEST_CASE("a refused open finishes the stream with the error")
{
    Fixture f;
    auto s = f.stream();
    s->read_local("lost");
    s->open_failed(OpenError::connect_failed);
    CHECK(s->finished());
    CHECK(s->closes == 1);
    CHECK(s->closed_with == OpenError::connect_failed);
    CHECK(s->read_local("more") == 0);
}

TEST_CASE("a channel error or an aborted session end the stream once")
{
    Fixture f;
    auto failed = f.stream();
    failed->attach(f.fake_channel);
    failed->channel_failed(LIBSSH2_ERROR_CHANNEL_CLOSED);
    CHECK(failed->phase() == Phase::closing);
    CHECK(failed->receive_space().empty());
    failed->channel_freed();
    CHECK(failed->closes == 1);

    auto aborted = f.stream();
    CHECK(aborted->id() > failed->id());
    aborted->attach(f.fake_channel);
    aborted->abort();
    CHECK(aborted->finished());
    CHECK(aborted->channel() == nullptr);
    CHECK(aborted->closes == 1);
    aborted->begin_close("late");
    CHECK(aborted->closes == 1);
}

TEST_CASE("a stream closed before any session took it ends at once, without an open")
{
    Fixture f;
    auto s = std::make_shared<TestStream>(f.log); // queued for a session, not adopted yet
    s->read_local("queued");
    s->begin_close("client went away");
    CHECK(s->finished());
    CHECK(s->closes == 1);
    CHECK(s->closed_with == OpenError::none);
}
