// SPDX-License-Identifier: MIT
// Shared libcurl plumbing for the alert channels.
#include "curl_util.h"

#include <mutex>

namespace pytun::detail {
namespace {

// Polled by curl a few times per second during a transfer: returning non-zero
// aborts it, which is how stop() cuts a send to a dead server short.
int on_progress(void *cancel, curl_off_t, curl_off_t, curl_off_t, curl_off_t)
{
    return static_cast<const std::atomic<bool> *>(cancel)->load() ? 1 : 0;
}

} // namespace

void curl_global_once()
{
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

CurlEasy::CurlEasy(const std::atomic<bool> &cancel)
{
    curl_global_once();
    curl_ = curl_easy_init();
    if (!curl_)
        return;
    curl_easy_setopt(curl_, CURLOPT_VERBOSE, 0L);
    // Signals are not ours to use in a library with threads.
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, errbuf_);
    curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, &on_progress);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, const_cast<std::atomic<bool> *>(&cancel));
}

CurlEasy::~CurlEasy()
{
    if (curl_)
        curl_easy_cleanup(curl_);
}

std::string CurlEasy::error_text(CURLcode rc) const
{
    if (errbuf_[0] != '\0')
        return errbuf_;
    return curl_easy_strerror(rc);
}

long CurlEasy::response_code() const
{
    long code = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

long CurlEasy::os_errno() const
{
    long e = 0;
    curl_easy_getinfo(curl_, CURLINFO_OS_ERRNO, &e);
    return e;
}

std::string redact_url(std::string_view url)
{
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos)
        return std::string(url);
    const auto authority = scheme_end + 3;
    const auto authority_end = url.find_first_of("/?#", authority);
    const auto at = url.rfind('@', authority_end == std::string_view::npos ? url.size() : authority_end);
    if (at == std::string_view::npos || at < authority)
        return std::string(url);
    return std::string(url.substr(0, authority)) + "***" + std::string(url.substr(at));
}

std::string scrub(std::string text, const std::vector<std::string> &secrets)
{
    for (const auto &secret : secrets) {
        if (secret.empty())
            continue;
        for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos + 3))
            text.replace(pos, secret.size(), "***");
    }
    return text;
}

std::string host_port(const std::string &host, unsigned port)
{
    if (host.find(':') != std::string::npos && host.front() != '[')
        return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

} // namespace pytun::detail
