// SPDX-License-Identifier: MIT
// pytun::Tunnel: a TunnelRun on an event-loop thread of its own.
#include <pytun/tunnel.h>

#include <condition_variable>
#include <mutex>

#include <pytun/error.h>

#include "forward/forward.h"
#include "log.h"
#include "loop/event_loop.h"
#include "tunnel/run_status.h"
#include "tunnel/tunnel_run.h"

namespace pytun {

namespace {
// stop() closes open connections at once (no grace period: that is the
// manager's business) and forces the end after this long.
constexpr std::chrono::milliseconds k_stop_limit{900};
} // namespace

struct Tunnel::Impl {
    TunnelOptions options;
    std::shared_ptr<spdlog::logger> log;
    std::shared_ptr<detail::RunStatus> run;

    mutable std::mutex mutex;
    std::condition_variable changed;
    TunnelState state = TunnelState::stopped;
    std::error_code error;
    std::string message;
    std::uint16_t port = 0;
    bool running = false; ///< the loop thread exists and has not ended the tunnel

    std::unique_ptr<detail::EventLoop> loop;
    std::shared_ptr<detail::TunnelRun> tunnel;
    /// What forwards keep (the VPN capture): a Tunnel does not restart, so
    /// it lasts one run and is closed when the tunnel is stopped.
    std::shared_ptr<detail::ForwardKeeps> keeps;

    void join()
    {
        if (loop)
            loop->stop();
        tunnel.reset();
        if (keeps) // the loop no longer runs: closing here races nothing
            keeps->close();
        keeps.reset();
        loop.reset(); // destroys what is still queued, on this thread
    }
};

Tunnel::Tunnel(TunnelOptions options) : impl_(std::make_unique<Impl>())
{
    if (options.name.empty())
        options.name = options.username + "@" + options.server_host + ":" + std::to_string(options.server_port);
    impl_->options = std::move(options);
    impl_->log = detail::make_logger(impl_->options.name);
}

Tunnel::~Tunnel()
{
    stop();
}

std::error_code Tunnel::start()
{
    Impl &d = *impl_;
    std::unique_lock lock(d.mutex);
    if (d.running)
        return d.state == TunnelState::up ? std::error_code{} : std::error_code(Errc::invalid_options);
    lock.unlock();
    d.join(); // a previous run that failed
    lock.lock();

    std::string message;
    if (auto ec = detail::TunnelRun::check_options(d.options, message)) {
        d.state = TunnelState::failed;
        d.error = ec;
        d.message = message;
        return ec;
    }
    d.state = TunnelState::connecting;
    d.error = {};
    d.message.clear();
    d.port = 0;
    d.running = true;
    d.run = std::make_shared<detail::RunStatus>(all_forwards(d.options));
    d.loop = std::make_unique<detail::EventLoop>();

    detail::TunnelRun::Handlers handlers;
    handlers.up = [&d](std::uint16_t port) {
        std::lock_guard guard(d.mutex);
        d.state = TunnelState::up;
        d.port = port;
        d.changed.notify_all();
    };
    handlers.ended = [&d](std::error_code ec, const std::string &why) {
        std::lock_guard guard(d.mutex);
        d.state = ec == Errc::stopped ? TunnelState::stopped : TunnelState::failed;
        d.error = ec;
        d.message = ec == Errc::stopped ? std::string() : why;
        d.running = false;
        d.changed.notify_all();
    };
    d.keeps = std::make_shared<detail::ForwardKeeps>(all_forwards(d.options).size());
    d.tunnel = std::make_shared<detail::TunnelRun>(d.loop->io(), d.options, d.log, d.run, d.keeps,
                                                   std::move(handlers));
    asio::post(d.loop->io(), [tunnel = d.tunnel] { tunnel->start(); });
    d.changed.wait(lock, [&d] { return d.state != TunnelState::connecting; });
    return d.state == TunnelState::up ? std::error_code{} : d.error;
}

void Tunnel::stop()
{
    Impl &d = *impl_;
    if (!d.loop)
        return;
    {
        std::unique_lock lock(d.mutex);
        if (d.running) {
            auto stopped = std::make_shared<bool>(false);
            asio::post(d.loop->io(), [&d, stopped] {
                d.tunnel->stop(std::chrono::milliseconds(0), [&d, stopped] {
                    std::lock_guard guard(d.mutex);
                    *stopped = true;
                    d.changed.notify_all();
                });
            });
            d.changed.wait_for(lock, k_stop_limit, [&] { return *stopped; });
        }
        d.running = false;
        if (d.state != TunnelState::failed) {
            d.state = TunnelState::stopped;
            d.error = Errc::stopped;
        }
        d.changed.notify_all();
    }
    d.join();
}

std::error_code Tunnel::wait()
{
    std::unique_lock lock(impl_->mutex);
    impl_->changed.wait(lock, [this] { return !impl_->running; });
    return impl_->error;
}

bool Tunnel::wait_for(std::chrono::milliseconds timeout, std::error_code &reason)
{
    std::unique_lock lock(impl_->mutex);
    if (!impl_->changed.wait_for(lock, timeout, [this] { return !impl_->running; }))
        return false;
    reason = impl_->error;
    return true;
}

TunnelState Tunnel::state() const
{
    std::lock_guard lock(impl_->mutex);
    return impl_->state;
}

std::uint16_t Tunnel::listen_port() const
{
    std::lock_guard lock(impl_->mutex);
    return impl_->port;
}

std::error_code Tunnel::last_error() const
{
    std::lock_guard lock(impl_->mutex);
    return impl_->error;
}

std::string Tunnel::last_error_message() const
{
    std::lock_guard lock(impl_->mutex);
    if (!impl_->error)
        return {};
    if (impl_->message.empty())
        return impl_->error.message();
    return impl_->message + " (" + impl_->error.message() + ")";
}

TunnelStats Tunnel::stats() const
{
    std::lock_guard lock(impl_->mutex);
    return impl_->run ? impl_->run->total() : TunnelStats{};
}

std::vector<ForwardStatus> Tunnel::forwards() const
{
    std::lock_guard lock(impl_->mutex);
    return impl_->run ? impl_->run->forwards() : std::vector<ForwardStatus>{};
}

const TunnelOptions &Tunnel::options() const
{
    return impl_->options;
}

} // namespace pytun
