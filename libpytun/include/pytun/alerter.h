// SPDX-License-Identifier: MIT
// Alerter: turns tunnel events into e-mail and webhook alerts (and those of
// channels the application adds), with a lifecycle (down, still down,
// recovered, flapping), rate limits, and a bounded queue so that sending never
// blocks a tunnel.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <pytun/connector_config.h>
#include <pytun/export.h>
#include <pytun/subscription.h>

namespace pytun {

/// Why sending an alert failed. The CLI maps these to exit codes:
/// success 0, not_configured 2, anything else 1 (see alert_exit_code()).
enum class AlertErrc {
    ok = 0,
    not_configured = 1,      ///< the channel is not configured (no smtp_hostname / http_url)
    invalid_options = 2,     ///< configured, but unusable (no recipient, bad URL...)
    connection_refused = 3,  ///< the server refused the TCP connection (retried)
    cannot_connect = 4,      ///< unreachable network or host (retried)
    resolve_failed = 5,      ///< the host name does not resolve (retried)
    timeout = 6,             ///< no answer in time (retried)
    tls_untrusted = 7,       ///< the server's certificate is not trusted / does not match
    tls_failed = 8,          ///< TLS handshake failed, or STARTTLS not offered
    auth_failed = 9,         ///< the server refused the login or demands one
    sender_refused = 10,     ///< MAIL FROM refused
    recipient_refused = 11,  ///< RCPT TO refused (e.g. 550)
    message_refused = 12,    ///< the message itself was refused after DATA
    http_error = 13,         ///< HTTP 5xx, 408 or 429 (retried)
    http_rejected = 14,      ///< any other non-2xx HTTP status (not retried)
    send_failed = 15,        ///< any other transfer failure (retried)
    cancelled = 16,          ///< aborted by stop()
};

PYTUN_EXPORT const std::error_category &alert_error_category() noexcept;

inline std::error_code make_error_code(AlertErrc e) noexcept
{
    return {static_cast<int>(e), alert_error_category()};
}

/// True when a later attempt may succeed (the alerter retries these).
PYTUN_EXPORT bool alert_error_is_transient(std::error_code ec) noexcept;
/// Exit status for --test_smtp / --test_http: 0 sent, 2 not configured, 1 failed.
PYTUN_EXPORT int alert_exit_code(std::error_code ec) noexcept;

/// What the tunnel manager reports. notify() may be called with the same
/// state repeatedly (every failed reconnect reports `down`): the alerter
/// keeps the state and alerts on changes only.
struct AlertEvent {
    enum class Kind {
        down,                ///< the tunnel is not working; `error` says why
        recovered,           ///< the tunnel works again (after down or degraded)
        degraded,            ///< up, but unhealthy (health check failing)
        service_unreachable, ///< a forwarded connection could not reach `target`
        unauthorized,        ///< the device is not authorized (tunnel_name may be empty)
        test,                ///< a test alert, never rate limited
        took_over,           ///< a standby (TunnelOptions::standby) bound the port: it serves now
        failed_over,         ///< a later bastion of the list serves now; `error` says from which to which
        returned,            ///< the first bastion of the list serves again; `error` says so
    };
    std::string tunnel_name;  ///< empty: the whole connector
    Kind kind = Kind::down;
    std::string error;        ///< the failure in words (Tunnel::last_error_message())
    std::string target;       ///< service_unreachable: "HOST:PORT"
    /// When the state began; default (epoch): the time notify() was called.
    std::chrono::system_clock::time_point since{};
    std::string bastion;               ///< took_over: "HOST:PORT" of the bastion's SSH
    std::uint16_t listen_port = 0;     ///< took_over: the port bound on the bastion
    std::chrono::seconds standby_for{0}; ///< took_over: how long this connector was standby
};

/// One message as a channel receives it: the wording is already made, so a
/// custom channel can send `subject` + `body` (or `message`) as they are.
struct Alert {
    enum class Event {
        down, still_down, recovered, flapping, degraded, service_unreachable, unauthorized, test, took_over,
        failed_over, returned, ///< the serving bastion changed (a failover list)
    };
    Event event = Event::test;
    std::string tunnel_name;        ///< empty: the whole connector
    std::string tunnel_manager_id;
    std::string state;              ///< the tunnel now: "down", "up", "degraded", "unauthorized", "test"
    std::string subject;            ///< e-mail subject ("Connector <tunnel> notification")
    std::string message;            ///< one line ("Connector Down!" for down, as the original)
    std::string body;               ///< plain-text e-mail body (UTF-8, '\n' line ends)
    std::string error;              ///< the last error in words; may be empty
    std::chrono::system_clock::time_point since{}; ///< when the current state began
    std::chrono::system_clock::time_point time{};  ///< when the alert was made
    std::chrono::seconds down_for{0};              ///< recovered: length of the outage
    unsigned downs = 0;             ///< flapping: outages summarised
    unsigned recoveries = 0;        ///< flapping: recoveries summarised
    std::string bastion;            ///< took_over: "HOST:PORT" of the bastion's SSH
    std::uint16_t listen_port = 0;  ///< took_over: the port bound on the bastion
    std::chrono::seconds standby_for{0}; ///< took_over: how long this connector was standby
};

/// "down", "still_down", "recovered", "flapping", "degraded",
/// "service_unreachable", "unauthorized", "test", "took_over" (the webhook's `event`).
PYTUN_EXPORT std::string_view to_string(Alert::Event event) noexcept;

/// A way to deliver alerts. send() runs on the channel's own thread (never
/// two at once for one channel) and may block up to its own timeout; cancel()
/// is called from another thread by Alerter::stop() to cut an in-flight send
/// short. Return an error in alert_error_category() (transient ones are
/// retried) and put the specifics in `detail`, never a password.
class PYTUN_EXPORT AlertChannel {
public:
    virtual ~AlertChannel();
    virtual std::string name() const = 0;
    virtual std::error_code send(const Alert &alert, std::string &detail) = 0;
    virtual void cancel() {}
};

/// Rate limit and retries of one channel.
struct AlertChannelPolicy {
    /// At most one alert per tunnel and message in this window; what is held
    /// back is summarised ("flapping") when the window ends. 0: no limit.
    std::chrono::milliseconds rate_limit{std::chrono::minutes(10)};
    /// Pause before each retry of a transient failure; size() = retries.
    std::vector<std::chrono::milliseconds> retry_delays{std::chrono::seconds(1), std::chrono::seconds(2),
                                                        std::chrono::seconds(4)};
};

/// Everything the alerter needs: the `[pytun]` keys plus tuning that has no
/// configuration key (retries, timeouts, queue size). Made from a
/// ConnectorConfig, the rate limits and the reminder interval are its
/// smtp_rate_limit, http_rate_limit and alert_reminder_interval.
struct PYTUN_EXPORT AlerterOptions {
    ConnectorConfig connector;      ///< tunnel_manager_id, smtp_*, http_*
    AlertChannelPolicy email{};     ///< default: 1 per 10 min per tunnel and message
    AlertChannelPolicy webhook{std::chrono::minutes(1)}; ///< 1 per minute per tunnel and message
    /// "still down" reminders: no more often than this (nor than the channel's rate limit).
    std::chrono::milliseconds reminder_interval{std::chrono::minutes(10)};
    std::chrono::milliseconds smtp_timeout{std::chrono::seconds(30)};
    std::chrono::milliseconds http_timeout{std::chrono::seconds(10)};
    std::size_t queue_capacity = 64;                          ///< per channel
    std::chrono::milliseconds stop_deadline{std::chrono::seconds(2)}; ///< stop() drains this long

    AlerterOptions();
    explicit AlerterOptions(ConnectorConfig config);
};

/// Counters of one channel since construction, for /metrics.
struct AlertChannelStats {
    std::string channel;            ///< name(): "email", "webhook", or a custom name
    std::uint64_t sent = 0;         ///< delivered
    std::uint64_t failed = 0;       ///< given up after the last retry (or a permanent error)
    std::uint64_t retried = 0;      ///< attempts that failed and were retried
    std::uint64_t dropped = 0;      ///< thrown out of a full queue, or left when stop() ended
    std::uint64_t suppressed = 0;   ///< held back by the rate limit (summarised instead)
    std::size_t queued = 0;         ///< waiting now
};

/// Receives events from the tunnel manager (any thread, never blocks) and
/// delivers alerts on the channels: e-mail when smtp_hostname is set, webhook
/// when http_url is set, plus those added with add_channel(). Each channel
/// has its own thread and bounded queue; one more thread makes reminders and
/// flapping summaries. The Alerter owns its channels.
class PYTUN_EXPORT Alerter {
public:
    explicit Alerter(const ConnectorConfig &config);
    explicit Alerter(AlerterOptions options);
    ~Alerter(); ///< stop()s
    Alerter(const Alerter &) = delete;
    Alerter &operator=(const Alerter &) = delete;

    /// Add a channel before start(); it gets the e-mail policy unless one is given.
    void add_channel(std::unique_ptr<AlertChannel> channel);
    void add_channel(std::unique_ptr<AlertChannel> channel, AlertChannelPolicy policy);

    /// Check the options and start the threads. Errors: invalid_options
    /// (details in the log). Events notified before start() are kept.
    std::error_code start();
    /// Deliver what is queued for at most stop_deadline, then cancel
    /// in-flight sends and drop the rest (counted). Never hangs on the network.
    void stop();

    /// Report an event. Never blocks on the network: it updates the lifecycle
    /// state and queues what must be sent. Ignored after stop().
    void notify(const AlertEvent &event);

    /// Per channel, in the order the channels were added.
    std::vector<AlertChannelStats> stats() const;

    /// Send one test alert now on the e-mail / webhook channel, without
    /// retries, bypassing the queue (for --test_smtp / --test_http). Returns
    /// not_configured when the channel is off; `detail` says what happened.
    std::error_code send_test_email(std::string &detail);
    std::error_code send_test_webhook(std::string &detail);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

class TunnelManager;

/// Turns the manager's state changes into alerts: a tunnel that fails or is
/// lost is `down` (every failed retry reports it again; the alerter keeps one
/// outage), a tunnel serving again is `recovered`, an unreachable local
/// service is `degraded`, a standby that bound the port is `took_over`
/// (entering standby alerts nothing). Alerts flow while the Subscription lives; the
/// alerter must outlive it.
PYTUN_EXPORT Subscription forward_alerts(TunnelManager &manager, Alerter &alerter);

} // namespace pytun

template <>
struct std::is_error_code_enum<pytun::AlertErrc> : std::true_type {};
