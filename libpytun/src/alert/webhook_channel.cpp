// SPDX-License-Identifier: MIT
// Webhook alerts: POST a JSON body to http_url with basic auth, via libcurl.
#include "channels.h"

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "curl_util.h"
#include "messages.h"

namespace pytun::detail {
namespace {

std::size_t discard(char *, std::size_t size, std::size_t nitems, void *)
{
    return size * nitems; // the receiver's answer is not used, only its status
}

} // namespace

WebhookChannel::WebhookChannel(ConnectorConfig config, std::chrono::milliseconds timeout)
    : config_(std::move(config)), timeout_(timeout)
{
}

std::string WebhookChannel::check() const
{
    const std::string &u = config_.http_url;
    if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0)
        return "http_url must start with http:// or https://";
    return {};
}

std::string WebhookChannel::build_body(const Alert &a)
{
    // The first three fields are the original connector's; receivers written
    // for it keep working.
    nlohmann::ordered_json j = {
        {"tunnel_name", a.tunnel_name},
        {"message", a.message},
        {"tunnel_manager_id", a.tunnel_manager_id},
        {"event", std::string(to_string(a.event))},
        {"state", a.state},
        {"since", iso8601_utc(a.since)},
        {"error", a.error},
        {"time", iso8601_utc(a.time)},
    };
    if (a.event == Alert::Event::recovered)
        j["down_seconds"] = a.down_for.count();
    if (a.event == Alert::Event::took_over) {
        j["bastion"] = a.bastion;
        j["port"] = a.listen_port;
        j["standby_seconds"] = a.standby_for.count();
    }
    if (a.event == Alert::Event::flapping) {
        j["downs"] = a.downs;
        j["recoveries"] = a.recoveries;
    }
    // Invalid UTF-8 in an error text must not make the alert unsendable.
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::error_code WebhookChannel::send(const Alert &alert, std::string &detail)
{
    if (config_.http_url.empty()) {
        detail = "webhook alerts are not configured (no http_url)";
        return AlertErrc::not_configured;
    }
    if (std::string bad = check(); !bad.empty()) {
        detail = bad;
        return AlertErrc::invalid_options;
    }
    const std::string body = build_body(alert);
    CurlEasy easy(cancel_);
    if (!easy.ok()) {
        detail = curl_api().error.empty() ? "cannot create a libcurl handle" : curl_api().error;
        return AlertErrc::send_failed;
    }
    CURL *c = easy.get();
    curl_slist *headers = curl_api().slist_append(nullptr, "Content-Type: application/json");
    headers = curl_api().slist_append(headers, "Expect:"); // no 100-continue round trip
    curl_api().easy_setopt(c, CURLOPT_URL, config_.http_url.c_str());
    curl_api().easy_setopt(c, CURLOPT_POST, 1L);
    curl_api().easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_api().easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_api().easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_api().easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_api().easy_setopt(c, CURLOPT_WRITEFUNCTION, &discard);
    if (!config_.http_user.empty() || !config_.http_password.empty()) {
        curl_api().easy_setopt(c, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
        curl_api().easy_setopt(c, CURLOPT_USERNAME, config_.http_user.c_str());
        curl_api().easy_setopt(c, CURLOPT_PASSWORD, config_.http_password.c_str());
    }
    curl_api().easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_.count()));
    curl_api().easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_.count()));

    const CURLcode rc = curl_api().easy_perform(c);
    curl_api().slist_free_all(headers);
    const std::string where = redact_url(config_.http_url);
    const std::string text = easy.error_text(rc);
    const long status = easy.response_code();
    std::error_code ec;
    switch (rc) {
    case CURLE_OK:
        if (status >= 200 && status < 300) {
            detail = "webhook accepted by " + where + " (HTTP " + std::to_string(status) + ")";
            return {};
        }
        detail = "HTTP status " + std::to_string(status) + " from " + where +
                 (status == 401 || status == 403 ? ": check http_user and http_password" : std::string());
        ec = (status >= 500 || status == 408 || status == 429) ? AlertErrc::http_error : AlertErrc::http_rejected;
        break;
    case CURLE_COULDNT_CONNECT:
        if (easy.os_errno() == ECONNREFUSED) {
            detail = "connection refused by " + where + ": is the receiver running, is http_url right?";
            ec = AlertErrc::connection_refused;
        } else {
            detail = "cannot connect to " + where + ": " + std::strerror(static_cast<int>(easy.os_errno()));
            ec = AlertErrc::cannot_connect;
        }
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        detail = "the host of " + where + " does not resolve";
        ec = AlertErrc::resolve_failed;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        detail = "no answer from " + where + " within " + std::to_string(timeout_.count()) + " ms";
        ec = AlertErrc::timeout;
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        detail = "TLS failure: the certificate of " + where + " is not trusted (" + text + ")";
        ec = AlertErrc::tls_untrusted;
        break;
    case CURLE_SSL_CONNECT_ERROR:
        detail = "TLS failure with " + where + ": " + text;
        ec = AlertErrc::tls_failed;
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        detail = "cancelled: the alerter is stopping";
        ec = AlertErrc::cancelled;
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        detail = "http_url is not usable: " + text;
        ec = AlertErrc::invalid_options;
        break;
    default:
        detail = "POST to " + where + " failed: " + text;
        ec = AlertErrc::send_failed;
        break;
    }
    // curl's own texts may quote the URL, credentials included.
    detail = scrub(detail, {config_.http_password, config_.http_url == where ? std::string() : config_.http_url});
    return ec;
}

} // namespace pytun::detail
