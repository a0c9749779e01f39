// SPDX-License-Identifier: MIT
// The tunnel's sessions for channel opens: dispatch, growth, idle reaping.
#include "tunnel/session_pool.h"

#include <algorithm>

#include "ssh/channel_stream.h"
#include "ssh/session.h"
#include "tunnel/run_status.h"

namespace pytun::detail {
namespace {

// After an extra connection failed to set up (a refusing bastion, MaxStartups
// drops), no new one is started for this long.
constexpr std::chrono::seconds k_growth_pause{5};
constexpr std::chrono::seconds k_reap_interval{5};

} // namespace

SessionPool::SessionPool(asio::io_context &io, ConnectionOptions extra, std::shared_ptr<spdlog::logger> log,
                         Limits limits, std::shared_ptr<RunStatus> status)
    : io_(io), extra_(std::move(extra)), log_(std::move(log)), limits_(limits), status_(std::move(status)),
      reap_timer_(io)
{
    extra_.anchor = true; // an idle extra session still reads the transport and answers probes
    // Nobody else bounds an extra connection's set-up (through a jump host
    // too): a stalled one would hold a place among those connecting.
    extra_.setup_timeout = extra_.connect_timeout;
}

SessionPool::~SessionPool()
{
    close();
}

void SessionPool::add_primary(std::shared_ptr<SshConnection> primary)
{
    Member member;
    member.connection = std::move(primary);
    member.ready = true;
    member.extra = false;
    members_.insert(members_.begin(), std::move(member));
    publish();
    keep_warm();
    if (limits_.min_sessions > 1)
        schedule_reap(); // the reaper also restores warm sessions that were lost
}

void SessionPool::open_direct_tcpip(std::shared_ptr<ChannelStream> stream, const std::string &host,
                                    std::uint16_t port, const std::string &origin_host, std::uint16_t origin_port)
{
    if (closed_) {
        stream->begin_close("tunnel stopping");
        return;
    }
    queue_.push_back({std::move(stream), host, port, origin_host, origin_port});
    dispatch();
}

// Each queued open goes to a ready session with no open in flight, the
// tunnel's own first; what is left waits for the next session to free up.
void SessionPool::dispatch()
{
    while (!queue_.empty() && !closed_) {
        if (queue_.front().stream->finished()) { // its client went away while it waited
            queue_.pop_front();
            continue;
        }
        auto free_member = std::find_if(members_.begin(), members_.end(), [](const Member &m) {
            return m.ready && m.connection->session().opens_pending() == 0;
        });
        if (free_member == members_.end())
            break;
        PendingOpen open = std::move(queue_.front());
        queue_.pop_front();
        free_member->idle_since = {};
        free_member->connection->session().open_direct_tcpip(
            std::move(open.stream), std::move(open.host), open.port, std::move(open.origin_host), open.origin_port,
            [weak = weak_from_this()] {
                if (auto self = weak.lock())
                    self->dispatch();
            });
    }
    grow();
}

// While opens wait, start extra connections: as many as are waiting, at most
// max_connecting at once (the bastion's MaxStartups counts connections that
// have not authenticated yet; OpenSSH's default starts refusing at 10).
void SessionPool::grow()
{
    if (closed_ || queue_.empty() || std::chrono::steady_clock::now() < growth_paused_until_)
        return;
    std::size_t connecting = std::count_if(members_.begin(), members_.end(), [](const Member &m) { return !m.ready; });
    const std::size_t wanted = std::min<std::size_t>(queue_.size(), limits_.max_connecting);
    while (connecting < wanted && members_.size() < limits_.max_sessions) {
        start_extra();
        ++connecting;
    }
}

void SessionPool::keep_warm()
{
    if (closed_ || std::chrono::steady_clock::now() < growth_paused_until_)
        return;
    std::size_t connecting = std::count_if(members_.begin(), members_.end(), [](const Member &m) { return !m.ready; });
    while (members_.size() < std::min(limits_.min_sessions, limits_.max_sessions) &&
           connecting < limits_.max_connecting) {
        start_extra();
        ++connecting;
    }
}

void SessionPool::start_extra()
{
    const std::uint64_t id = ++last_member_id_;
    SshConnection::Handlers handlers;
    handlers.ready = [weak = weak_from_this(), id] {
        if (auto self = weak.lock())
            self->on_extra_ready(id);
    };
    handlers.failed = [weak = weak_from_this(), id](std::error_code, const std::string &why) {
        if (auto self = weak.lock())
            self->on_extra_failed(id, why);
    };
    Member member;
    member.id = id;
    member.started = std::chrono::steady_clock::now();
    member.connection = std::make_shared<SshConnection>(io_, extra_, log_, std::move(handlers));
    members_.push_back(member);
    publish();
    log_->debug("opening an extra SSH session for queued channel opens ({} waiting, {} sessions)", queue_.size(),
                members_.size());
    member.connection->start();
    if (members_.size() == 2)
        schedule_reap();
}

void SessionPool::on_extra_ready(std::uint64_t id)
{
    auto it = std::find_if(members_.begin(), members_.end(), [id](const Member &m) { return m.id == id; });
    if (it == members_.end())
        return;
    it->ready = true;
    publish();
    it->connection->start_health_checks();
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                            it->started);
    log_->debug("an extra SSH session is ready after {} ms ({} opens waiting)", took.count(), queue_.size());
    dispatch();
    keep_warm();
}

void SessionPool::on_extra_failed(std::uint64_t id, const std::string &why)
{
    auto it = std::find_if(members_.begin(), members_.end(), [id](const Member &m) { return m.id == id; });
    if (it == members_.end())
        return;
    if (!it->ready) {
        growth_paused_until_ = std::chrono::steady_clock::now() + k_growth_pause;
        log_->info("an extra SSH session could not be set up ({}); the tunnel's own session carries the opens",
                   why);
    } else {
        log_->info("an extra SSH session was lost ({}); its connections are closed", why);
    }
    members_.erase(it);
    publish();
    check_no_streams();
    dispatch();
    keep_warm();
}

std::size_t SessionPool::stream_count() const
{
    std::size_t count = queue_.size();
    for (const auto &m : members_)
        if (m.ready)
            count += m.connection->session().stream_count();
    return count;
}

void SessionPool::close_all_streams()
{
    auto queued = std::move(queue_);
    queue_.clear();
    for (auto &open : queued)
        open.stream->begin_close("tunnel stopping");
    for (auto &m : members_)
        if (m.ready)
            m.connection->session().close_all_streams();
}

void SessionPool::when_no_streams(std::function<void()> then)
{
    no_streams_waiter_ = std::move(then);
    check_no_streams();
}

void SessionPool::check_no_streams()
{
    if (!no_streams_waiter_)
        return;
    if (stream_count() == 0) {
        asio::post(io_, std::move(no_streams_waiter_));
        no_streams_waiter_ = nullptr;
        return;
    }
    for (auto &m : members_)
        if (m.ready && m.connection->session().stream_count() > 0)
            m.connection->session().when_no_streams([weak = weak_from_this()] {
                if (auto self = weak.lock())
                    self->check_no_streams();
            });
}

void SessionPool::schedule_reap()
{
    reap_timer_.expires_after(k_reap_interval);
    reap_timer_.async_wait([weak = weak_from_this()](const asio::error_code &ec) {
        if (auto self = weak.lock(); self && !ec)
            self->reap_idle();
    });
}

// Extra sessions with no stream and no open for idle_timeout close, as long
// as min_sessions stay; warm ones lost meanwhile are replaced.
void SessionPool::reap_idle()
{
    if (closed_)
        return;
    const auto now = std::chrono::steady_clock::now();
    for (auto it = members_.begin(); it != members_.end();) {
        SshSession *session = it->ready ? &it->connection->session() : nullptr;
        if (!it->extra || !session || session->stream_count() > 0 || session->opens_pending() > 0) {
            it->idle_since = {};
            ++it;
            continue;
        }
        if (it->idle_since == std::chrono::steady_clock::time_point{})
            it->idle_since = now;
        if (now - it->idle_since < limits_.idle_timeout || members_.size() <= limits_.min_sessions) {
            ++it;
            continue;
        }
        auto connection = it->connection;
        it = members_.erase(it);
        connection->disconnect([connection] {});
        log_->debug("closed an idle extra SSH session ({} left)", members_.size());
    }
    publish();
    keep_warm();
    if (members_.size() > 1 || limits_.min_sessions > 1)
        schedule_reap();
}

void SessionPool::close()
{
    if (closed_)
        return;
    closed_ = true;
    reap_timer_.cancel();
    auto queued = std::move(queue_);
    queue_.clear();
    for (auto &open : queued)
        open.stream->begin_close("tunnel stopping");
    for (auto &m : members_)
        if (m.extra)
            m.connection->close();
    members_.clear();
    no_streams_waiter_ = nullptr;
    publish();
}

void SessionPool::publish()
{
    if (status_)
        status_->sessions.store(static_cast<unsigned>(std::count_if(members_.begin(), members_.end(),
                                                                    [](const Member &m) { return m.ready; })),
                                std::memory_order_relaxed);
}

} // namespace pytun::detail
