// SPDX-License-Identifier: MIT
// Shared libcurl plumbing for the alert channels.
#include "curl_util.h"

#include <dlfcn.h>

#include <mutex>
#include <type_traits>

namespace pytun::detail {
namespace {

// Polled by curl a few times per second during a transfer: returning non-zero
// aborts it, which is how stop() cuts a send to a dead server short.
int on_progress(void *cancel, curl_off_t, curl_off_t, curl_off_t, curl_off_t)
{
    return static_cast<const std::atomic<bool> *>(cancel)->load() ? 1 : 0;
}

} // namespace

const CurlApi &curl_api()
{
    static const CurlApi api = [] {
        CurlApi a;
        void *lib = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            a.error = std::string("cannot load libcurl.so.4: ") + ::dlerror() + " (install libcurl4)";
            return a;
        }
        // Never dlclose'd: the process may send alerts until it exits.
        auto load = [&](auto &fn, const char *name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
            if (!fn && a.error.empty())
                a.error = std::string("libcurl.so.4 lacks ") + name;
        };
        load(a.global_init, "curl_global_init");
        load(a.easy_init, "curl_easy_init");
        load(a.easy_setopt, "curl_easy_setopt");
        load(a.easy_perform, "curl_easy_perform");
        load(a.easy_getinfo, "curl_easy_getinfo");
        load(a.easy_cleanup, "curl_easy_cleanup");
        load(a.easy_strerror, "curl_easy_strerror");
        load(a.slist_append, "curl_slist_append");
        load(a.slist_free_all, "curl_slist_free_all");
        return a;
    }();
    return api;
}

void curl_global_once()
{
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_api().error.empty())
            curl_api().global_init(CURL_GLOBAL_DEFAULT);
    });
}

CurlEasy::CurlEasy(const std::atomic<bool> &cancel)
{
    curl_global_once();
    if (!curl_api().error.empty())
        return; // ok() is false; the channel reports curl_api().error
    curl_ = curl_api().easy_init();
    if (!curl_)
        return;
    curl_api().easy_setopt(curl_, CURLOPT_VERBOSE, 0L);
    // Signals are not ours to use in a library with threads.
    curl_api().easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_api().easy_setopt(curl_, CURLOPT_ERRORBUFFER, errbuf_);
    curl_api().easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
    curl_api().easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, &on_progress);
    curl_api().easy_setopt(curl_, CURLOPT_XFERINFODATA, const_cast<std::atomic<bool> *>(&cancel));
}

CurlEasy::~CurlEasy()
{
    if (curl_)
        curl_api().easy_cleanup(curl_);
}

std::string CurlEasy::error_text(CURLcode rc) const
{
    if (errbuf_[0] != '\0')
        return errbuf_;
    return curl_api().easy_strerror(rc);
}

long CurlEasy::response_code() const
{
    long code = 0;
    curl_api().easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

long CurlEasy::os_errno() const
{
    long e = 0;
    curl_api().easy_getinfo(curl_, CURLINFO_OS_ERRNO, &e);
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
