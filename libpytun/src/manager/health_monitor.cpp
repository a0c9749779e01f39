// SPDX-License-Identifier: MIT
// HealthMonitor: periodic TCP probes of local services on a thread of its own.
#include <pytun/health.h>

#include <map>
#include <mutex>

#include <asio.hpp>

#include "loop/event_loop.h"
#include "util/fd_budget.h"
#include "util/callback_list.h"

namespace pytun {

// Handlers capture the raw Impl pointer: ~HealthMonitor joins the loop
// thread before Impl goes away, so no handler can run after that.
struct HealthMonitor::Impl {
    Options options;
    detail::EventLoop loop;
    mutable std::mutex mutex; // guards `results`
    std::map<std::string, ServiceHealth> results;
    detail::CallbackList<const std::string &, const ServiceHealth &> on_change;

    // Loop-thread state.
    struct Watch {
        std::string host;
        std::uint16_t port = 0;
        std::chrono::milliseconds interval{0};
        std::shared_ptr<asio::steady_timer> timer;
        std::uint64_t generation = 0;
        bool reported = false; ///< its first result went to the subscribers
    };
    std::map<std::string, Watch> watches;
    std::uint64_t next_generation = 0;

    void probe_async(const std::string &name, std::uint64_t generation);
    void record(const std::string &name, std::uint64_t generation, ServiceHealth health);
};

namespace {

// One connect attempt with a deadline; `done` runs once on the loop thread.
void connect_probe(asio::io_context &io, const std::string &host, std::uint16_t port,
                   std::chrono::milliseconds timeout, std::function<void(ServiceHealth)> done)
{
    struct Probe {
        asio::ip::tcp::socket socket;
        asio::ip::tcp::resolver resolver;
        asio::steady_timer timer;
        std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
        std::function<void(ServiceHealth)> done;
        bool finished = false;
        explicit Probe(asio::io_context &context) : socket(context), resolver(context), timer(context) {}
        void finish(const asio::error_code &ec, const std::string &why = {})
        {
            if (finished)
                return;
            finished = true;
            timer.cancel();
            resolver.cancel();
            asio::error_code ignored;
            socket.close(ignored);
            ServiceHealth health;
            health.reachable = !ec;
            health.connect_time = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - started);
            health.error = ec ? (why.empty() ? ec.message() : why) : std::string();
            if (detail::is_fd_exhaustion(ec)) {
                detail::FdBudget::instance().note_exhausted();
                health.inconclusive = true;
                health.error = detail::fd_exhaustion_text();
            }
            health.checked_at = std::chrono::system_clock::now();
            done(std::move(health));
        }
    };
    auto probe = std::make_shared<Probe>(io);
    probe->done = std::move(done);
    probe->timer.expires_after(timeout);
    probe->timer.async_wait([probe, timeout](const asio::error_code &ec) {
        if (!ec)
            probe->finish(asio::error::timed_out,
                          "no answer within " + std::to_string(timeout.count()) + " ms");
    });
    auto on_connect = [probe](const asio::error_code &ec) { probe->finish(ec); };
    asio::error_code parse_error;
    auto address = asio::ip::make_address(host, parse_error);
    if (!parse_error) {
        probe->socket.async_connect({address, port}, on_connect);
        return;
    }
    probe->resolver.async_resolve(host, std::to_string(port),
                                  [probe, on_connect](const asio::error_code &ec,
                                                      asio::ip::tcp::resolver::results_type results) {
                                      if (ec) {
                                          probe->finish(ec, "cannot resolve: " + ec.message());
                                          return;
                                      }
                                      asio::async_connect(probe->socket, results,
                                                          [on_connect](const asio::error_code &cec,
                                                                       const asio::ip::tcp::endpoint &) {
                                                              on_connect(cec);
                                                          });
                                  });
}

} // namespace

void HealthMonitor::Impl::probe_async(const std::string &name, std::uint64_t generation)
{
    auto it = watches.find(name);
    if (it == watches.end() || it->second.generation != generation)
        return;
    connect_probe(loop.io(), it->second.host, it->second.port, options.timeout,
                  [this, name, generation](ServiceHealth health) { record(name, generation, std::move(health)); });
}

void HealthMonitor::Impl::record(const std::string &name, std::uint64_t generation, ServiceHealth health)
{
    auto it = watches.find(name);
    if (it == watches.end() || it->second.generation != generation)
        return; // unwatched or replaced meanwhile
    bool changed = false;
    if (!health.inconclusive) {
        std::lock_guard lock(mutex);
        auto previous = results.find(name);
        changed = previous == results.end() || previous->second.reachable != health.reachable;
        results[name] = health;
    }
    // A new watch of a name reports its first result even when it equals the
    // last one: whoever replaced the watch (a tunnel restarted on reload) has
    // not heard that result yet.
    if (changed || !it->second.reported)
        on_change.call(name, health);
    it->second.reported = true;
    it->second.timer->expires_after(it->second.interval);
    it->second.timer->async_wait([this, name, generation](const asio::error_code &ec) {
        if (!ec)
            probe_async(name, generation);
    });
}

HealthMonitor::HealthMonitor(Options options) : impl_(std::make_unique<Impl>())
{
    impl_->options = options;
}

HealthMonitor::HealthMonitor() : HealthMonitor(Options{}) {}

HealthMonitor::~HealthMonitor()
{
    impl_->loop.stop();
}

void HealthMonitor::watch(const std::string &name, const std::string &host, std::uint16_t port,
                          std::chrono::milliseconds interval)
{
    Impl *impl = impl_.get();
    asio::post(impl->loop.io(), [impl, name, host, port, interval] {
        auto &watch = impl->watches[name];
        if (watch.timer)
            watch.timer->cancel();
        watch.host = host;
        watch.port = port;
        watch.interval = std::max(interval, std::chrono::milliseconds(100));
        watch.timer = std::make_shared<asio::steady_timer>(impl->loop.io());
        watch.generation = ++impl->next_generation;
        watch.reported = false;
        impl->probe_async(name, watch.generation);
    });
}

void HealthMonitor::unwatch(const std::string &name)
{
    Impl *impl = impl_.get();
    asio::post(impl->loop.io(), [impl, name] {
        auto it = impl->watches.find(name);
        if (it != impl->watches.end()) {
            it->second.timer->cancel();
            impl->watches.erase(it);
        }
        std::lock_guard lock(impl->mutex);
        impl->results.erase(name);
    });
}

std::optional<ServiceHealth> HealthMonitor::service(const std::string &name) const
{
    std::lock_guard lock(impl_->mutex);
    auto it = impl_->results.find(name);
    if (it == impl_->results.end())
        return std::nullopt;
    return it->second;
}

Subscription HealthMonitor::on_change(std::function<void(const std::string &, const ServiceHealth &)> handler)
{
    return impl_->on_change.add(std::move(handler));
}

ServiceHealth HealthMonitor::probe(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout)
{
    asio::io_context io;
    ServiceHealth result;
    connect_probe(io, host, port, timeout, [&result](ServiceHealth health) { result = std::move(health); });
    io.run();
    return result;
}

} // namespace pytun
