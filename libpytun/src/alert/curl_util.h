// SPDX-License-Identifier: MIT
// Shared libcurl plumbing for the alert channels: global init, an RAII easy
// handle that can be cancelled from another thread, and secret redaction.
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <curl/curl.h>

namespace pytun::detail {

/// libcurl's entry points, resolved from libcurl.so.4 when the first alert
/// channel needs them: a connector that sends no alerts never loads curl and
/// its dependencies (TLS, Kerberos, LDAP, ...: about 4 MiB resident).
struct CurlApi {
    decltype(&::curl_global_init) global_init = nullptr;
    decltype(&::curl_easy_init) easy_init = nullptr;
    decltype(&::curl_easy_setopt) easy_setopt = nullptr;
    decltype(&::curl_easy_perform) easy_perform = nullptr;
    decltype(&::curl_easy_getinfo) easy_getinfo = nullptr;
    decltype(&::curl_easy_cleanup) easy_cleanup = nullptr;
    decltype(&::curl_easy_strerror) easy_strerror = nullptr;
    decltype(&::curl_slist_append) slist_append = nullptr;
    decltype(&::curl_slist_free_all) slist_free_all = nullptr;
    std::string error; ///< why loading failed; empty when loaded
};
PYTUN_CONNECTOR_USES const CurlApi &curl_api();

/// curl_global_init once per process (it is not thread-safe to race it).
void curl_global_once();

/// One transfer's handle. Verbose output is forced off: curl's trace would
/// print AUTH lines and Authorization headers.
class CurlEasy {
public:
    explicit CurlEasy(const std::atomic<bool> &cancel);
    ~CurlEasy();
    CurlEasy(const CurlEasy &) = delete;
    CurlEasy &operator=(const CurlEasy &) = delete;

    CURL *get() const { return curl_; }
    bool ok() const { return curl_ != nullptr; }
    /// Error text of the last perform() (CURLOPT_ERRORBUFFER), or curl's generic one.
    std::string error_text(CURLcode rc) const;
    long response_code() const;
    long os_errno() const;

private:
    CURL *curl_ = nullptr;
    char errbuf_[CURL_ERROR_SIZE] = {};
};

/// "scheme://user:pass@host/..." -> "scheme://***@host/...".
std::string redact_url(std::string_view url);
/// Replace every occurrence of each non-empty secret by "***".
std::string scrub(std::string text, const std::vector<std::string> &secrets);
/// "host:port", with brackets for an IPv6 literal.
std::string host_port(const std::string &host, unsigned port);

} // namespace pytun::detail
