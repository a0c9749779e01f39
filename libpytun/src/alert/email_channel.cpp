// SPDX-License-Identifier: MIT
// E-mail alerts over SMTP with libcurl: plain, STARTTLS (required) or
// implicit TLS, AUTH only with a login, and precise failure reasons.
#include "channels.h"

#include <cerrno>
#include <cstring>
#include <random>

#include "curl_util.h"
#include "messages.h"

namespace pytun::detail {
namespace {

// Header values come from configuration and tunnel names: a CR or LF would
// let them add headers of their own.
std::string one_line(std::string s)
{
    for (char &c : s)
        if (c == '\r' || c == '\n')
            c = ' ';
    return s;
}

bool is_ascii(const std::string &s)
{
    for (unsigned char c : s)
        if (c >= 0x80)
            return false;
    return true;
}

std::string base64(const std::string &in)
{
    static const char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                           static_cast<unsigned char>(in[i + 2]);
        out += table[(v >> 18) & 63];
        out += table[(v >> 12) & 63];
        out += table[(v >> 6) & 63];
        out += table[v & 63];
    }
    if (i < in.size()) {
        unsigned v = static_cast<unsigned char>(in[i]) << 16;
        if (i + 1 < in.size())
            v |= static_cast<unsigned char>(in[i + 1]) << 8;
        out += table[(v >> 18) & 63];
        out += table[(v >> 12) & 63];
        out += i + 1 < in.size() ? table[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

// RFC 2047 for a subject with non-ASCII tunnel names; mail clients show it decoded.
std::string encode_header(const std::string &value)
{
    return is_ascii(value) ? value : "=?UTF-8?B?" + base64(value) + "?=";
}

std::string crlf(const std::string &text)
{
    std::string out;
    out.reserve(text.size() + text.size() / 20);
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
            out += '\r';
        out += text[i];
    }
    if (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0)
        out += "\r\n";
    return out;
}

std::string from_address(const ConnectorConfig &c)
{
    return c.smtp_from.empty() ? c.smtp_login : c.smtp_from;
}

bool plausible_address(const std::string &a)
{
    const auto at = a.find('@');
    return at != std::string::npos && at > 0 && at + 1 < a.size() &&
           a.find_first_of("\r\n<>, \t") == std::string::npos;
}

struct Upload {
    const std::string *data;
    std::size_t offset = 0;
};

std::size_t read_upload(char *buffer, std::size_t size, std::size_t nitems, void *user)
{
    auto *up = static_cast<Upload *>(user);
    const std::size_t n = std::min(size * nitems, up->data->size() - up->offset);
    std::memcpy(buffer, up->data->data() + up->offset, n);
    up->offset += n;
    return n;
}

class SlistGuard {
public:
    ~SlistGuard() { curl_api().slist_free_all(list); }
    curl_slist *list = nullptr;
};

} // namespace

EmailChannel::EmailChannel(ConnectorConfig config, std::chrono::milliseconds timeout)
    : config_(std::move(config)), timeout_(timeout)
{
}

std::string EmailChannel::url() const
{
    const char *scheme = config_.smtp_security == SmtpSecurity::ssl ? "smtps://" : "smtp://";
    return scheme + host_port(config_.smtp_hostname, config_.smtp_port);
}

std::string EmailChannel::check() const
{
    if (config_.smtp_to.empty())
        return "smtp_to is empty: set it to the address alerts go to";
    for (const auto &to : config_.smtp_to)
        if (!plausible_address(to))
            return "smtp_to: '" + one_line(to) + "' is not an e-mail address";
    if (!plausible_address(from_address(config_)))
        return "smtp_from (or smtp_login when smtp_from is not set) must be an e-mail address";
    return {};
}

std::string EmailChannel::build_message(const Alert &alert) const
{
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    const std::string from = one_line(from_address(config_));
    const auto at = from.find('@');
    const std::string domain = at == std::string::npos ? "pytun.invalid" : from.substr(at + 1);
    char id[40];
    std::snprintf(id, sizeof id, "%016llx.%lld", static_cast<unsigned long long>(rng()),
                  static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             alert.time.time_since_epoch())
                                             .count()));
    std::string to;
    for (const auto &addr : config_.smtp_to)
        to += (to.empty() ? "" : ", ") + one_line(addr);

    std::string m;
    m += "Date: " + rfc5322_date(alert.time) + "\r\n";
    m += "Message-ID: <" + std::string(id) + "@" + domain + ">\r\n";
    m += "From: " + from + "\r\n";
    m += "To: " + to + "\r\n";
    m += "Subject: " + encode_header(one_line(alert.subject)) + "\r\n";
    m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: text/plain; charset=utf-8\r\n";
    m += "Content-Transfer-Encoding: 8bit\r\n";
    m += "\r\n";
    m += crlf(alert.body);
    return m;
}

std::error_code EmailChannel::send(const Alert &alert, std::string &detail)
{
    if (config_.smtp_hostname.empty()) {
        detail = "e-mail alerts are not configured (no smtp_hostname)";
        return AlertErrc::not_configured;
    }
    if (std::string bad = check(); !bad.empty()) {
        detail = bad;
        return AlertErrc::invalid_options;
    }
    const std::string message = build_message(alert);
    Upload upload{&message};
    CurlEasy easy(cancel_);
    if (!easy.ok()) {
        detail = curl_api().error.empty() ? "cannot create a libcurl handle" : curl_api().error;
        return AlertErrc::send_failed;
    }
    CURL *c = easy.get();
    const std::string u = url();
    const std::string mail_from = "<" + one_line(from_address(config_)) + ">";
    SlistGuard rcpt;
    for (const auto &to : config_.smtp_to)
        rcpt.list = curl_api().slist_append(rcpt.list, ("<" + one_line(to) + ">").c_str());
    curl_api().easy_setopt(c, CURLOPT_URL, u.c_str());
    curl_api().easy_setopt(c, CURLOPT_MAIL_FROM, mail_from.c_str());
    curl_api().easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt.list);
    curl_api().easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_api().easy_setopt(c, CURLOPT_READFUNCTION, &read_upload);
    curl_api().easy_setopt(c, CURLOPT_READDATA, &upload);
    curl_api().easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
    // "tls" means STARTTLS is required: never fall back to plain text.
    curl_api().easy_setopt(c, CURLOPT_USE_SSL,
                     config_.smtp_security == SmtpSecurity::starttls ? static_cast<long>(CURLUSESSL_ALL)
                                                                     : static_cast<long>(CURLUSESSL_NONE));
    if (!config_.smtp_login.empty()) {
        curl_api().easy_setopt(c, CURLOPT_USERNAME, config_.smtp_login.c_str());
        curl_api().easy_setopt(c, CURLOPT_PASSWORD, config_.smtp_password.c_str());
    }
    if (!config_.smtp_ca_file.empty())
        curl_api().easy_setopt(c, CURLOPT_CAINFO, config_.smtp_ca_file.c_str());
    curl_api().easy_setopt(c, CURLOPT_SSL_VERIFYPEER, config_.smtp_verify_tls ? 1L : 0L);
    curl_api().easy_setopt(c, CURLOPT_SSL_VERIFYHOST, config_.smtp_verify_tls ? 2L : 0L);
    curl_api().easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout_.count()));
    curl_api().easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_.count()));

    const CURLcode rc = curl_api().easy_perform(c);
    const std::string where = host_port(config_.smtp_hostname, config_.smtp_port);
    const long code = easy.response_code();
    const std::string text = easy.error_text(rc);
    const std::vector<std::string> secrets{config_.smtp_password};
    std::error_code ec;
    switch (rc) {
    case CURLE_OK:
        detail = "e-mail sent via " + u + " to " + std::to_string(config_.smtp_to.size()) + " recipient(s)";
        return {};
    case CURLE_COULDNT_CONNECT:
        if (easy.os_errno() == ECONNREFUSED) {
            detail = "connection refused by " + where + ": is the SMTP server running, are smtp_hostname and "
                     "smtp_port right?";
            ec = AlertErrc::connection_refused;
        } else {
            detail = "cannot connect to " + where + ": " + std::strerror(static_cast<int>(easy.os_errno()));
            ec = AlertErrc::cannot_connect;
        }
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        detail = "smtp_hostname '" + config_.smtp_hostname + "' does not resolve";
        ec = AlertErrc::resolve_failed;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        detail = "no answer from " + where + " within " + std::to_string(timeout_.count()) + " ms";
        ec = AlertErrc::timeout;
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        detail = "TLS failure: the certificate of " + where + " is not trusted (" + text +
                 "); set smtp_ca_file to the CA that signed it, or smtp_verify_tls = false to accept any";
        ec = AlertErrc::tls_untrusted;
        break;
    case CURLE_USE_SSL_FAILED:
        detail = "TLS failure: " + where + " does not offer STARTTLS (smtp_security = tls requires it); use "
                 "smtp_security = ssl for implicit TLS or none";
        ec = AlertErrc::tls_failed;
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        detail = "TLS failure with " + where + ": " + text;
        ec = AlertErrc::tls_failed;
        break;
    case CURLE_LOGIN_DENIED:
        detail = "authentication failed: " + where + " refused login '" + config_.smtp_login + "'" +
                 (code ? " (SMTP " + std::to_string(code) + ")" : std::string()) +
                 "; check smtp_login and smtp_password";
        ec = AlertErrc::auth_failed;
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        detail = "cancelled: the alerter is stopping";
        ec = AlertErrc::cancelled;
        break;
    default:
        // curl reports SMTP command failures as "RCPT failed: 550" and the like.
        if (text.rfind("RCPT failed", 0) == 0) {
            detail = "recipient refused: " + where + " answered " + std::to_string(code) +
                     " to RCPT TO for smtp_to (" + std::to_string(config_.smtp_to.size()) + " address(es))";
            ec = AlertErrc::recipient_refused;
        } else if (text.rfind("MAIL failed", 0) == 0 && code == 530) {
            detail = "authentication failed: " + where + " requires a login (SMTP 530); set smtp_login and "
                     "smtp_password";
            ec = AlertErrc::auth_failed;
        } else if (text.rfind("MAIL failed", 0) == 0) {
            detail = "sender refused: " + where + " answered " + std::to_string(code) + " to MAIL FROM " +
                     mail_from + "; check smtp_from";
            ec = AlertErrc::sender_refused;
        } else if (code >= 400) {
            detail = "message refused: " + where + " answered " + std::to_string(code) + " (" + text + ")";
            // 4xx is the server's "try again later".
            ec = code < 500 ? AlertErrc::send_failed : AlertErrc::message_refused;
        } else {
            detail = "sending to " + where + " failed: " + text;
            ec = AlertErrc::send_failed;
        }
        break;
    }
    detail = scrub(detail, secrets);
    return ec;
}

} // namespace pytun::detail
