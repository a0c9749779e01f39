// SPDX-License-Identifier: MIT
// SessionPool: the SSH sessions a tunnel opens channels on. libssh2 1.10
// keeps one channel open in flight per session, so at round-trip time r, N
// connections arriving together would wait up to N x r on one session. The
// pool dispatches each open to a session whose open lane is free, starts
// extra connections to the same bastion while opens wait (a few at a time, to
// stay under the bastion's MaxStartups), and closes them when they have been
// idle for a while, except the min_sessions kept warm so that a burst does
// not wait for set-ups. The tunnel's own connection is always the first choice.
// All calls on the tunnel's loop thread.
#pragma once

#include "internal.h"

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>
#include <spdlog/logger.h>

#include "forward/forward.h"
#include "ssh/connection.h"

namespace pytun::detail {

class RunStatus;

class SessionPool final : public ChannelOpener, public std::enable_shared_from_this<SessionPool> {
public:
    struct Limits {
        unsigned max_sessions = 8;   ///< the tunnel's own connection included
        unsigned min_sessions = 1;   ///< kept open while idle, the tunnel's own included
        /// Extra connections being set up at once: enough to grow to
        /// max_sessions in one wave (a second wave would wait a whole set-up,
        /// 8 round trips and sshd's start, behind the first), still under
        /// OpenSSH's default MaxStartups 10.
        unsigned max_connecting = 8;
        std::chrono::milliseconds idle_timeout{30000}; ///< an extra session with nothing to do closes then
    };

    /// `extra` describes the extra connections (the tunnel's own, with an
    /// anchor channel).
    SessionPool(asio::io_context &io, ConnectionOptions extra, std::shared_ptr<spdlog::logger> log, Limits limits,
                std::shared_ptr<RunStatus> status);
    ~SessionPool() override;

    /// The tunnel's own connection, ready.
    void add_primary(std::shared_ptr<SshConnection> primary);
    void open_direct_tcpip(std::shared_ptr<ChannelStream> stream, const std::string &host, std::uint16_t port,
                           const std::string &origin_host, std::uint16_t origin_port) override;

    /// Streams on every session, and opens not yet given to one.
    std::size_t stream_count() const;
    /// Begin closing every stream (graceful stop); queued opens are dropped.
    void close_all_streams();
    /// `then` runs (posted) once no stream is left on any session.
    void when_no_streams(std::function<void()> then);
    /// Free every extra connection now and drop queued opens (the tunnel's
    /// own connection is its owner's to close).
    void close();

private:
    struct Member {
        std::uint64_t id = 0; ///< 0: the tunnel's own
        std::shared_ptr<SshConnection> connection;
        bool ready = false;
        bool extra = true;
        std::chrono::steady_clock::time_point started{}; ///< when its connection began
        std::chrono::steady_clock::time_point idle_since{};
    };
    struct PendingOpen {
        std::shared_ptr<ChannelStream> stream;
        std::string host;
        std::uint16_t port;
        std::string origin_host;
        std::uint16_t origin_port;
    };

    void dispatch();
    void grow();
    /// Start extra connections until min_sessions are open or connecting.
    void keep_warm();
    void start_extra();
    void on_extra_ready(std::uint64_t id);
    void on_extra_failed(std::uint64_t id, const std::string &why);
    void check_no_streams();
    void schedule_reap();
    void reap_idle();
    void publish();

    asio::io_context &io_;
    ConnectionOptions extra_;
    std::shared_ptr<spdlog::logger> log_;
    Limits limits_;
    std::shared_ptr<RunStatus> status_;
    std::vector<Member> members_;
    std::deque<PendingOpen> queue_;
    std::function<void()> no_streams_waiter_;
    asio::steady_timer reap_timer_;
    std::chrono::steady_clock::time_point growth_paused_until_{};
    std::uint64_t last_member_id_ = 0;
    bool closed_ = false;
};

} // namespace pytun::detail
