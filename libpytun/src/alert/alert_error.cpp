// SPDX-License-Identifier: MIT
// The "pytun.alert" error category and small public helpers of alerter.h.
#include <pytun/alerter.h>

namespace pytun {
namespace {

class AlertCategory final : public std::error_category {
public:
    const char *name() const noexcept override { return "pytun.alert"; }

    std::string message(int code) const override
    {
        switch (static_cast<AlertErrc>(code)) {
        case AlertErrc::ok: return "success";
        case AlertErrc::not_configured: return "this alert channel is not configured";
        case AlertErrc::invalid_options: return "the alert settings are not usable: fix the smtp_* / http_* keys";
        case AlertErrc::connection_refused: return "connection refused: is the server running, are host and port right?";
        case AlertErrc::cannot_connect: return "cannot connect to the server: check the address and the network";
        case AlertErrc::resolve_failed: return "the server's host name does not resolve";
        case AlertErrc::timeout: return "the server did not answer in time";
        case AlertErrc::tls_untrusted:
            return "TLS failure: the server's certificate is not trusted; set smtp_ca_file to its CA";
        case AlertErrc::tls_failed: return "TLS failure: the handshake failed or the server does not offer TLS";
        case AlertErrc::auth_failed: return "authentication failed: check the login and password";
        case AlertErrc::sender_refused: return "the server refused the sender address: check smtp_from";
        case AlertErrc::recipient_refused: return "the server refused a recipient: check smtp_to";
        case AlertErrc::message_refused: return "the server refused the message";
        case AlertErrc::http_error: return "the webhook answered with a server error (retried)";
        case AlertErrc::http_rejected: return "the webhook rejected the request (non-2xx status)";
        case AlertErrc::send_failed: return "sending the alert failed";
        case AlertErrc::cancelled: return "cancelled: the alerter is stopping";
        }
        return "unknown alert error " + std::to_string(code);
    }
};

} // namespace

const std::error_category &alert_error_category() noexcept
{
    static const AlertCategory category;
    return category;
}

/// \brief Whether a later attempt may succeed: the server was unreachable or
/// answered "try later". Errors of other categories (a custom channel's) are
/// treated as transient.
bool alert_error_is_transient(std::error_code ec) noexcept
{
    if (!ec)
        return false;
    if (ec.category() != alert_error_category())
        return true;
    switch (static_cast<AlertErrc>(ec.value())) {
    case AlertErrc::connection_refused:
    case AlertErrc::cannot_connect:
    case AlertErrc::resolve_failed:
    case AlertErrc::timeout:
    case AlertErrc::http_error:
    case AlertErrc::send_failed:
        return true;
    default:
        return false;
    }
}

int alert_exit_code(std::error_code ec) noexcept
{
    if (!ec)
        return 0;
    return ec == make_error_code(AlertErrc::not_configured) ? 2 : 1;
}

std::string_view to_string(Alert::Event event) noexcept
{
    switch (event) {
    case Alert::Event::down: return "down";
    case Alert::Event::still_down: return "still_down";
    case Alert::Event::recovered: return "recovered";
    case Alert::Event::flapping: return "flapping";
    case Alert::Event::degraded: return "degraded";
    case Alert::Event::service_unreachable: return "service_unreachable";
    case Alert::Event::unauthorized: return "unauthorized";
    case Alert::Event::test: return "test";
    case Alert::Event::took_over: return "took_over";
    case Alert::Event::failed_over: return "failed_over";
    case Alert::Event::returned: return "returned";
    }
    return "unknown";
}

AlertChannel::~AlertChannel() = default;

AlerterOptions::AlerterOptions() = default;

AlerterOptions::AlerterOptions(ConnectorConfig config) : connector(std::move(config))
{
    email.rate_limit = connector.smtp_rate_limit;
    webhook.rate_limit = connector.http_rate_limit;
    reminder_interval = connector.alert_reminder_interval;
}

} // namespace pytun
