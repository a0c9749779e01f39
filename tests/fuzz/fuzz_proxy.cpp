// SPDX-License-Identifier: MIT
// libFuzzer target: the HTTP CONNECT client handshake fed a proxy's answer in
// random splits (the outcome must equal that of the same bytes fed at once,
// and what follows a 2xx answer must come back whole as early data), and the
// readers of proxy URLs, jump hosts and no_proxy lists (a URL's password
// must never appear in an error or in describe()).
// Input: mode byte, split seed byte, then the answer or the text.
//   mode & 3: 0, 1 HTTP answer; 2 proxy URL and jump host; 3 no_proxy list
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <pytun/route.h>

#include "ssh/proxy.h"

using pytun::detail::HttpConnectHandshake;

namespace {

void check(bool condition)
{
    if (!condition)
        __builtin_trap();
}

struct Outcome {
    HttpConnectHandshake::Step::Kind kind = HttpConnectHandshake::Step::Kind::need_more;
    std::string reason;
    std::string early;
    bool operator==(const Outcome &) const = default;
};

Outcome run(std::string_view answer, std::uint8_t seed, bool split)
{
    constexpr std::string_view secret = "Zq9-proxy-pw";
    HttpConnectHandshake h("bastion.example", 22, "user", std::string(secret));
    check(!h.request().empty());
    Outcome out;
    std::uint32_t state = seed * 2654435761u + 1;
    for (std::size_t at = 0; at < answer.size() || at == 0;) {
        std::size_t n = answer.size() - at;
        if (split) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            n = std::min<std::size_t>(n, 1 + state % 32);
        }
        const auto step = h.feed(answer.substr(at, n));
        at += n;
        out.kind = step.kind;
        out.reason = step.reason;
        out.early += h.take_early_data();
        if (answer.empty())
            break;
    }
    // Our password never shows; the proxy's own words may hold anything.
    check(out.reason.find(secret) == std::string::npos || answer.find(secret) != std::string_view::npos);
    if (out.kind == HttpConnectHandshake::Step::Kind::complete)
        check(answer.ends_with(out.early));
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 2)
        return 0;
    const std::uint8_t mode = data[0] & 3;
    const std::uint8_t seed = data[1];
    const std::string_view text(reinterpret_cast<const char *>(data + 2), size - 2);
    switch (mode) {
    case 0:
    case 1:
        check(run(text, seed, false) == run(text, seed, true));
        break;
    case 2: {
        // The same text as a password inside a URL: it must not leak.
        const std::string secret = "Zq9secret";
        if (text.find(secret) != std::string_view::npos)
            break; // the text may show itself where it is no password
        std::string error;
        for (const std::string url : {std::string(text), "http://u:" + secret + std::string(text),
                                      "socks5://u:" + secret + "@" + std::string(text)}) {
            const auto proxy = pytun::parse_proxy(url, error);
            check(error.find(secret) == std::string::npos);
            if (proxy) {
                check(error.empty());
                check(pytun::describe(*proxy).find(secret) == std::string::npos || proxy->username.find(secret) !=
                                                                                         std::string::npos);
            }
        }
        const auto jump = pytun::parse_jump(text, error);
        if (jump)
            check(!jump->host.empty() && jump->port != 0);
        break;
    }
    case 3:
        (void)pytun::no_proxy_matches(text, "bastion.example", 22);
        (void)pytun::no_proxy_matches(text, "10.1.2.3", 22);
        (void)pytun::no_proxy_matches(text, "fd00::1", 2222);
        break;
    }
    return 0;
}
