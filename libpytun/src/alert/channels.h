// SPDX-License-Identifier: MIT
// The built-in alert channels: e-mail over SMTP and a JSON webhook, both on
// libcurl.
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <string>

#include <pytun/alerter.h>

namespace pytun::detail {

/// Sends each alert as a plain-text UTF-8 e-mail to every smtp_to address.
class EmailChannel final : public AlertChannel {
public:
    EmailChannel(ConnectorConfig config, std::chrono::milliseconds timeout);
    std::string name() const override { return "email"; }
    std::error_code send(const Alert &alert, std::string &detail) override;
    void cancel() override { cancel_ = true; }
    void reset_cancel() { cancel_ = false; }

    /// The RFC 5322 message (CRLF line ends), exposed for tests.
    std::string build_message(const Alert &alert) const;
    /// smtp://host:port or smtps://host:port
    std::string url() const;
    /// "" when usable, else what is wrong.
    std::string check() const;

private:
    ConnectorConfig config_;
    std::chrono::milliseconds timeout_;
    std::atomic<bool> cancel_{false};
};

/// POSTs each alert as JSON to http_url with basic auth.
class WebhookChannel final : public AlertChannel {
public:
    WebhookChannel(ConnectorConfig config, std::chrono::milliseconds timeout);
    std::string name() const override { return "webhook"; }
    std::error_code send(const Alert &alert, std::string &detail) override;
    void cancel() override { cancel_ = true; }
    void reset_cancel() { cancel_ = false; }

    /// The JSON body, exposed for tests.
    static std::string build_body(const Alert &alert);
    std::string check() const;

private:
    ConnectorConfig config_;
    std::chrono::milliseconds timeout_;
    std::atomic<bool> cancel_{false};
};


} // namespace pytun::detail
