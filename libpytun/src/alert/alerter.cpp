// SPDX-License-Identifier: MIT
// Alerter: lifecycle of each tunnel's alerts, per-channel rate limits and
// flapping summaries, bounded queues and the threads that deliver them.
#include <pytun/alerter.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "channels.h"
#include "curl_util.h"
#include "log.h"
#include "messages.h"

namespace pytun {
namespace {

using Steady = std::chrono::steady_clock;
using SysClock = std::chrono::system_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

// What the operator has heard about one tunnel on one channel.
struct Lane {
    // Rate-limit key -> when an alert with it was last queued.
    std::map<std::string, Steady::time_point> last_admitted;
    // Transitions held back by the rate limit, for the next flapping summary.
    unsigned held_downs = 0;
    unsigned held_recoveries = 0;
    std::optional<Steady::time_point> summary_due;
    bool told_down = false;             // the last word on this channel was "down"
    Steady::time_point reminder_basis{}; // when it was said
};

// The tunnel as the manager last reported it.
struct Tracked {
    bool down = false;
    bool degraded = false;
    SysClock::time_point since{};
    std::string error;
};

struct Slot {
    std::unique_ptr<AlertChannel> channel;
    detail::EmailChannel *email = nullptr;     // built-in channels need their cancel flag reset
    detail::WebhookChannel *webhook = nullptr;
    AlertChannelPolicy policy;
    std::map<std::string, Lane> lanes;
    std::deque<Alert> queue;
    std::condition_variable cv;
    std::thread thread;
    AlertChannelStats stats;
    bool overflowing = false; // warn once per overflow episode, not per dropped alert
};

bool is_lifecycle(Alert::Event e)
{
    return e == Alert::Event::down || e == Alert::Event::recovered;
}

// Lower is dropped first when a queue is full: reminders repeat what was
// already said, down/recovered change what the operator believes.
int keep_priority(Alert::Event e)
{
    switch (e) {
    case Alert::Event::still_down: return 0;
    case Alert::Event::degraded:
    case Alert::Event::service_unreachable: return 1;
    default: return 2;
    }
}

} // namespace

struct Alerter::Impl {
    AlerterOptions options;
    std::shared_ptr<spdlog::logger> log = detail::make_logger("pytun");
    std::vector<std::string> secrets;

    mutable std::mutex mutex;
    std::condition_variable timer_cv;
    std::condition_variable done_cv;
    std::vector<std::unique_ptr<Slot>> slots;
    std::map<std::string, Tracked> tunnels;
    bool running = false;
    bool stopping = false;
    bool hard_stop = false; // the drain deadline passed
    bool stopped = false;
    std::size_t workers_running = 0;
    std::thread timer;

    explicit Impl(AlerterOptions o) : options(std::move(o))
    {
        const ConnectorConfig &c = options.connector;
        secrets = {c.smtp_password, c.http_password};
        if (!c.smtp_hostname.empty()) {
            auto ch = std::make_unique<detail::EmailChannel>(c, options.smtp_timeout);
            auto slot = std::make_unique<Slot>();
            slot->email = ch.get();
            slot->channel = std::move(ch);
            slot->policy = options.email;
            slots.push_back(std::move(slot));
        }
        if (!c.http_url.empty()) {
            auto ch = std::make_unique<detail::WebhookChannel>(c, options.http_timeout);
            auto slot = std::make_unique<Slot>();
            slot->webhook = ch.get();
            slot->channel = std::move(ch);
            slot->policy = options.webhook;
            slots.push_back(std::move(slot));
        }
        for (auto &slot : slots)
            slot->stats.channel = slot->channel->name();
    }

    std::string clean(std::string text) const { return detail::scrub(std::move(text), secrets); }

    Alert make(Alert::Event event, const std::string &tunnel, SysClock::time_point since, std::string error)
    {
        Alert a;
        a.event = event;
        a.tunnel_name = tunnel;
        a.tunnel_manager_id = options.connector.tunnel_manager_id;
        a.since = since;
        a.time = SysClock::now();
        a.error = std::move(error);
        return a;
    }

    // --- under `mutex` ------------------------------------------------------

    void push(Slot &slot, Alert alert)
    {
        if (slot.queue.size() >= std::max<std::size_t>(options.queue_capacity, 1)) {
            auto victim = slot.queue.begin();
            for (auto it = slot.queue.begin(); it != slot.queue.end(); ++it)
                if (keep_priority(it->event) < keep_priority(victim->event))
                    victim = it;
            log->debug("alert queue of {} full: dropping {} for '{}'", slot.stats.channel,
                       to_string(victim->event), victim->tunnel_name);
            if (!slot.overflowing)
                log->warn("alert queue of {} is full ({} alerts): the channel is too slow, dropping the oldest "
                          "reminders first",
                          slot.stats.channel, slot.queue.size());
            slot.overflowing = true;
            slot.queue.erase(victim);
            ++slot.stats.dropped;
        }
        slot.queue.push_back(std::move(alert));
        slot.cv.notify_one();
    }

    // Apply the channel's rate limit; what is held back is counted for the
    // flapping summary.
    void admit(Slot &slot, const Alert &alert, Steady::time_point now)
    {
        if (alert.event == Alert::Event::test) {
            push(slot, alert);
            return;
        }
        Lane &lane = slot.lanes[alert.tunnel_name];
        // The original limited per tunnel and message: for one-off alerts the
        // text is part of the key, lifecycle alerts are keyed by event only.
        std::string key(to_string(alert.event));
        if (!is_lifecycle(alert.event))
            key += "\n" + alert.message;
        const milliseconds window = slot.policy.rate_limit;
        auto it = lane.last_admitted.find(key);
        if (window.count() > 0 && it != lane.last_admitted.end() && now - it->second < window) {
            ++slot.stats.suppressed;
            if (alert.event == Alert::Event::down)
                ++lane.held_downs;
            else if (alert.event == Alert::Event::recovered)
                ++lane.held_recoveries;
            if (is_lifecycle(alert.event) && !lane.summary_due) {
                lane.summary_due = it->second + window;
                timer_cv.notify_all();
            }
            log->debug("{} alert '{}' for '{}' held back by the rate limit", slot.stats.channel,
                       to_string(alert.event), alert.tunnel_name);
            return;
        }
        lane.last_admitted[key] = now;
        if (alert.event == Alert::Event::down) {
            lane.told_down = true;
            lane.reminder_basis = now;
            timer_cv.notify_all();
        } else if (alert.event == Alert::Event::recovered) {
            lane.told_down = false;
        }
        push(slot, alert);
    }

    void emit(Alert alert)
    {
        detail::word_alert(alert);
        const auto now = Steady::now();
        for (auto &slot : slots)
            admit(*slot, alert, now);
    }

    // Flapping summaries and reminders that are due; returns when to look again.
    Steady::time_point tick(Steady::time_point now)
    {
        Steady::time_point next = now + std::chrono::hours(1);
        for (auto &slot_ptr : slots) {
            Slot &slot = *slot_ptr;
            const milliseconds window = slot.policy.rate_limit;
            for (auto &[name, lane] : slot.lanes) {
                const Tracked &t = tunnels[name];
                if (lane.summary_due && now >= *lane.summary_due) {
                    auto it = lane.last_admitted.find("flapping");
                    if (it != lane.last_admitted.end() && now - it->second < window) {
                        lane.summary_due = it->second + window;
                    } else {
                        Alert a = make(Alert::Event::flapping, name, t.since, t.down ? t.error : std::string());
                        a.state = t.down ? "down" : "up";
                        a.downs = lane.held_downs;
                        a.recoveries = lane.held_recoveries;
                        detail::word_alert(a);
                        lane.last_admitted["flapping"] = now;
                        lane.held_downs = lane.held_recoveries = 0;
                        lane.summary_due.reset();
                        lane.told_down = t.down;
                        lane.reminder_basis = now;
                        push(slot, std::move(a));
                    }
                }
                if (lane.summary_due)
                    next = std::min(next, *lane.summary_due);
                if (t.down && lane.told_down && options.reminder_interval.count() > 0) {
                    const auto interval = std::max(options.reminder_interval, window);
                    if (now >= lane.reminder_basis + interval) {
                        Alert a = make(Alert::Event::still_down, name, t.since, t.error);
                        detail::word_alert(a);
                        lane.last_admitted["still_down"] = now;
                        lane.reminder_basis = now;
                        push(slot, std::move(a));
                    }
                    next = std::min(next, lane.reminder_basis + interval);
                }
            }
        }
        return next;
    }

    // --- threads ------------------------------------------------------------

    void timer_loop()
    {
        std::unique_lock lock(mutex);
        while (!stopping) {
            const auto next = tick(Steady::now());
            timer_cv.wait_until(lock, next);
        }
    }

    void deliver(Slot &slot, const Alert &alert)
    {
        const std::size_t attempts = 1 + slot.policy.retry_delays.size();
        for (std::size_t i = 0; i < attempts; ++i) {
            std::string detail;
            std::error_code ec;
            try {
                ec = slot.channel->send(alert, detail);
            } catch (const std::exception &e) {
                // A custom channel's exception must not end the thread.
                ec = AlertErrc::send_failed;
                detail = std::string("the channel threw: ") + e.what();
            } catch (...) {
                ec = AlertErrc::send_failed;
                detail = "the channel threw";
            }
            detail = clean(detail);
            std::unique_lock lock(mutex);
            if (!ec) {
                ++slot.stats.sent;
                log->info("{} alert '{}' for '{}' sent: {}", slot.stats.channel, to_string(alert.event),
                          alert.tunnel_name, detail);
                return;
            }
            if (ec == AlertErrc::cancelled || hard_stop) {
                ++slot.stats.dropped;
                log->warn("{} alert '{}' for '{}' dropped: stopping ({})", slot.stats.channel,
                          to_string(alert.event), alert.tunnel_name, detail);
                return;
            }
            if (!alert_error_is_transient(ec) || i + 1 == attempts) {
                ++slot.stats.failed;
                log->error("{} alert '{}' for '{}' dropped after {} attempt(s): {}", slot.stats.channel,
                           to_string(alert.event), alert.tunnel_name, i + 1, detail);
                return;
            }
            ++slot.stats.retried;
            const milliseconds delay = slot.policy.retry_delays[i];
            log->warn("{} alert '{}' for '{}' failed (attempt {} of {}), retrying in {} ms: {}", slot.stats.channel,
                      to_string(alert.event), alert.tunnel_name, i + 1, attempts, delay.count(), detail);
            slot.cv.wait_for(lock, delay, [&] { return hard_stop; });
        }
    }

    void worker_loop(Slot &slot)
    {
        std::unique_lock lock(mutex);
        for (;;) {
            slot.cv.wait(lock, [&] { return !slot.queue.empty() || stopping; });
            if (hard_stop || slot.queue.empty())
                break;
            Alert alert = std::move(slot.queue.front());
            slot.queue.pop_front();
            if (slot.queue.empty())
                slot.overflowing = false;
            lock.unlock();
            deliver(slot, alert);
            lock.lock();
        }
        if (!slot.queue.empty()) {
            log->warn("{}: {} alert(s) not sent before stop", slot.stats.channel, slot.queue.size());
            slot.stats.dropped += slot.queue.size();
            slot.queue.clear();
        }
        --workers_running;
        done_cv.notify_all();
    }

    void start_worker(Slot &slot)
    {
        if (slot.email)
            slot.email->reset_cancel();
        if (slot.webhook)
            slot.webhook->reset_cancel();
        ++workers_running;
        slot.thread = std::thread([this, &slot] { worker_loop(slot); });
    }
};

Alerter::Alerter(const ConnectorConfig &config) : Alerter(AlerterOptions(config)) {}

Alerter::Alerter(AlerterOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Alerter::~Alerter()
{
    stop();
}

void Alerter::add_channel(std::unique_ptr<AlertChannel> channel)
{
    add_channel(std::move(channel), impl_->options.email);
}

void Alerter::add_channel(std::unique_ptr<AlertChannel> channel, AlertChannelPolicy policy)
{
    if (!channel)
        return;
    std::lock_guard lock(impl_->mutex);
    auto slot = std::make_unique<Slot>();
    slot->stats.channel = channel->name();
    slot->channel = std::move(channel);
    slot->policy = std::move(policy);
    impl_->slots.push_back(std::move(slot));
    if (impl_->running)
        impl_->start_worker(*impl_->slots.back());
}

/// \brief Check the configuration of the built-in channels and start the
/// threads. \return AlertErrc::invalid_options when a channel is unusable.
std::error_code Alerter::start()
{
    Impl &d = *impl_;
    std::lock_guard lock(d.mutex);
    if (d.running)
        return {};
    const ConnectorConfig &c = d.options.connector;
    for (auto &slot : d.slots) {
        std::string bad = slot->email ? slot->email->check() : slot->webhook ? slot->webhook->check() : "";
        if (!bad.empty()) {
            d.log->error("{} alerts: {}", slot->stats.channel, d.clean(bad));
            return AlertErrc::invalid_options;
        }
    }
    std::string recipients;
    for (const auto &to : c.smtp_to)
        recipients += (recipients.empty() ? "" : ", ") + to;
    for (auto &slot : d.slots) {
        if (slot->email) {
            d.log->info("e-mail alerts to {} via {} ({}){}", recipients, slot->email->url(),
                        c.smtp_security == SmtpSecurity::none       ? "no TLS"
                        : c.smtp_security == SmtpSecurity::starttls ? "STARTTLS required"
                                                                    : "implicit TLS",
                        c.smtp_login.empty() ? std::string(", no login") : ", login " + c.smtp_login);
            if (!c.smtp_verify_tls && c.smtp_security != SmtpSecurity::none)
                d.log->warn("smtp_verify_tls = false: the SMTP server's certificate is not checked, anyone on the "
                            "path can read alerts and the SMTP password");
        } else if (slot->webhook) {
            d.log->info("webhook alerts to {}", detail::redact_url(c.http_url));
        } else {
            d.log->info("alert channel '{}' added", slot->stats.channel);
        }
    }
    d.stopping = d.hard_stop = d.stopped = false;
    d.running = true;
    for (auto &slot : d.slots)
        d.start_worker(*slot);
    d.timer = std::thread([&d] { d.timer_loop(); });
    return {};
}

void Alerter::stop()
{
    Impl &d = *impl_;
    std::unique_lock lock(d.mutex);
    if (!d.running) {
        d.stopped = true;
        return;
    }
    d.stopping = true;
    d.stopped = true;
    d.timer_cv.notify_all();
    for (auto &slot : d.slots)
        slot->cv.notify_all();
    // Drain what can be sent in time, then cut in-flight sends short.
    const bool drained = d.done_cv.wait_for(lock, d.options.stop_deadline, [&] { return d.workers_running == 0; });
    if (!drained) {
        d.hard_stop = true;
        for (auto &slot : d.slots) {
            slot->channel->cancel();
            slot->cv.notify_all();
        }
    }
    lock.unlock();
    if (d.timer.joinable())
        d.timer.join();
    for (auto &slot : d.slots)
        if (slot->thread.joinable())
            slot->thread.join();
    lock.lock();
    d.running = false;
}

void Alerter::notify(const AlertEvent &event)
{
    Impl &d = *impl_;
    std::lock_guard lock(d.mutex);
    if (d.stopped)
        return;
    const auto now = SysClock::now();
    const auto since = event.since == SysClock::time_point{} ? now : event.since;
    Tracked &t = d.tunnels[event.tunnel_name];
    switch (event.kind) {
    case AlertEvent::Kind::down:
        if (t.down) {
            // Every failed reconnect reports down again: one alert per outage.
            t.error = event.error;
            return;
        }
        t.down = true;
        t.degraded = false;
        t.since = since;
        t.error = event.error;
        d.log->debug("alert: '{}' is down: {}", event.tunnel_name, event.error);
        d.emit(d.make(Alert::Event::down, event.tunnel_name, since, event.error));
        return;
    case AlertEvent::Kind::recovered: {
        if (!t.down && !t.degraded)
            return;
        Alert a = d.make(Alert::Event::recovered, event.tunnel_name, since, {});
        a.down_for = duration_cast<seconds>(since - t.since);
        t.down = t.degraded = false;
        t.since = since;
        t.error.clear();
        d.log->debug("alert: '{}' recovered after {} s", event.tunnel_name, a.down_for.count());
        d.emit(std::move(a));
        return;
    }
    case AlertEvent::Kind::degraded:
        if (t.down || t.degraded)
            return;
        t.degraded = true;
        t.since = since;
        t.error = event.error;
        d.emit(d.make(Alert::Event::degraded, event.tunnel_name, since, event.error));
        return;
    case AlertEvent::Kind::service_unreachable:
        // The original's wording, which operators may have filters for.
        d.emit(d.make(Alert::Event::service_unreachable, event.tunnel_name, since,
                      "Failed to Establish connection to " + event.target + " with error: " + event.error));
        return;
    case AlertEvent::Kind::unauthorized:
        d.emit(d.make(Alert::Event::unauthorized, event.tunnel_name, since, event.error));
        return;
    case AlertEvent::Kind::test:
        d.emit(d.make(Alert::Event::test, event.tunnel_name, since, event.error));
        return;
    case AlertEvent::Kind::took_over: {
        // Not a lifecycle change: a standby was never reported down.
        Alert a = d.make(Alert::Event::took_over, event.tunnel_name, since, {});
        a.bastion = event.bastion;
        a.listen_port = event.listen_port;
        a.standby_for = event.standby_for;
        d.emit(std::move(a));
        return;
    }
    case AlertEvent::Kind::failed_over:
        d.emit(d.make(Alert::Event::failed_over, event.tunnel_name, since, event.error));
        return;
    case AlertEvent::Kind::returned:
        d.emit(d.make(Alert::Event::returned, event.tunnel_name, since, event.error));
        return;
    }
}

std::vector<AlertChannelStats> Alerter::stats() const
{
    std::lock_guard lock(impl_->mutex);
    std::vector<AlertChannelStats> out;
    for (const auto &slot : impl_->slots) {
        out.push_back(slot->stats);
        out.back().queued = slot->queue.size();
    }
    return out;
}

std::error_code Alerter::send_test_email(std::string &detail)
{
    Impl &d = *impl_;
    if (d.options.connector.smtp_hostname.empty()) {
        detail = "e-mail alerts are not configured: set smtp_hostname";
        return AlertErrc::not_configured;
    }
    detail::EmailChannel channel(d.options.connector, d.options.smtp_timeout);
    Alert a = d.make(Alert::Event::test, {}, SysClock::now(), {});
    detail::word_alert(a);
    std::error_code ec = channel.send(a, detail);
    detail = d.clean(detail);
    if (ec)
        d.log->error("test e-mail failed: {}", detail);
    else
        d.log->info("test e-mail: {}", detail);
    return ec;
}

std::error_code Alerter::send_test_webhook(std::string &detail)
{
    Impl &d = *impl_;
    if (d.options.connector.http_url.empty()) {
        detail = "webhook alerts are not configured: set http_url";
        return AlertErrc::not_configured;
    }
    detail::WebhookChannel channel(d.options.connector, d.options.http_timeout);
    Alert a = d.make(Alert::Event::test, {}, SysClock::now(), {});
    detail::word_alert(a);
    std::error_code ec = channel.send(a, detail);
    detail = d.clean(detail);
    if (ec)
        d.log->error("test webhook failed: {}", detail);
    else
        d.log->info("test webhook: {}", detail);
    return ec;
}

} // namespace pytun
