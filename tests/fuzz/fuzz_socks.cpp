// SPDX-License-Identifier: MIT
// libFuzzer target: the SOCKS server handshake fed in random splits (and
// checked against the same bytes fed at once), the SOCKS5 client handshake
// fed a proxy's answers, and destination rule parsing (one rule, a rule
// file) and matching.
// Input: mode byte, split seed byte, then the peer's bytes or the rule text.
//   mode & 3: 0 server, 1 server with credentials, 2 client, 3 destination
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "forward/destination.h"
#include "forward/socks.h"

using namespace pytun::detail;

namespace {

void check(bool condition)
{
    if (!condition)
        __builtin_trap();
}

// Chunk sizes of 1-16 bytes from a small generator seeded by the input.
class Splitter {
public:
    explicit Splitter(std::uint8_t seed) : state_(seed * 2654435761u + 1) {}
    std::size_t next()
    {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 17;
        state_ ^= state_ << 5;
        return 1 + state_ % 16;
    }

private:
    std::uint32_t state_;
};

struct ServerResult {
    SocksStep::Kind kind = SocksStep::Kind::need_more;
    std::string sent;
    std::string reason;
    SocksRequest request;
    std::string early;
};

ServerResult serve(std::string_view input, const std::optional<SocksCredentials> &credentials, Splitter *splitter)
{
    SocksServerHandshake server(credentials);
    ServerResult result;
    std::size_t at = 0;
    do {
        const std::size_t n = splitter ? std::min(splitter->next(), input.size() - at) : input.size();
        const SocksStep step = server.feed(input.substr(at, n));
        at += n;
        // Whether the last piece brought an answer depends on the split:
        // both "continue" kinds count as one.
        result.kind = step.kind == SocksStep::Kind::send_and_continue ? SocksStep::Kind::need_more : step.kind;
        result.sent += step.send;
        result.reason = step.reason;
        if (step.kind == SocksStep::Kind::need_more)
            check(step.send.empty());
        if (step.kind == SocksStep::Kind::send_and_continue)
            check(!step.send.empty());
        if (step.kind == SocksStep::Kind::failed)
            break;
    } while (at < input.size());
    if (result.kind == SocksStep::Kind::complete) {
        result.request = server.request();
        result.early = server.take_early_data();
        check(!result.request.host.empty());
        check(input.ends_with(result.early));
        check(server.reply(SocksReply::connection_refused).size() == (result.request.version == 4 ? 8u : 10u));
    }
    if (result.kind == SocksStep::Kind::failed)
        check(!result.reason.empty());
    // Answers are a method choice, an auth status and one reply at most.
    check(result.sent.size() <= 2 + 2 + 10);
    return result;
}

void fuzz_server(std::string_view input, bool with_credentials, std::uint8_t seed)
{
    const std::optional<SocksCredentials> credentials =
        with_credentials ? std::optional(SocksCredentials{"alice", "s3cret"}) : std::nullopt;
    const ServerResult whole = serve(input, credentials, nullptr);
    Splitter splitter(seed);
    const ServerResult split = serve(input, credentials, &splitter);
    // However the bytes arrive, the outcome is the same.
    check(whole.kind == split.kind);
    check(whole.sent == split.sent);
    check(whole.reason == split.reason);
    check(whole.early == split.early);
    check(whole.request.host == split.request.host);
    check(whole.request.port == split.request.port);
    check(whole.request.user == split.request.user);
    check(whole.request.version == split.request.version);
}

void fuzz_client(std::string_view input, std::uint8_t seed)
{
    const std::optional<SocksCredentials> credentials =
        (seed & 1) ? std::optional(SocksCredentials{"alice", "s3cret"}) : std::nullopt;
    Socks5ClientHandshake client((seed & 2) ? "fd00::1" : "bastion.example", 22, credentials);
    check(client.start().kind == SocksStep::Kind::send_and_continue);
    Splitter splitter(seed);
    std::size_t at = 0;
    while (at < input.size()) {
        const std::size_t n = std::min(splitter.next(), input.size() - at);
        const SocksStep step = client.feed(input.substr(at, n));
        at += n;
        if (step.kind == SocksStep::Kind::failed) {
            check(!step.reason.empty());
            check(step.reason.find("s3cret") == std::string::npos);
            return;
        }
    }
    if (client.proxy_reply() == SocksReply::succeeded)
        check(input.ends_with(client.take_early_data()));
}

void fuzz_destination(std::string_view text)
{
    static const std::vector<IpAddress> addresses = {*IpAddress::parse("10.1.2.3"), *IpAddress::parse("fd00::1"),
                                                     *IpAddress::parse("0.0.0.0"), *IpAddress::parse("::")};
    if (auto address = IpAddress::parse(text))
        check(IpAddress::parse(address->to_string()) == address);

    std::string error;
    const auto rule = parse_destination(text, error);
    if (!rule) {
        check(!error.empty());
    } else {
        // The canonical form reads back as the same rule.
        std::string again_error;
        const auto again = parse_destination(rule->to_string(), again_error);
        check(again && *again == *rule);
        for (const auto &address : addresses)
            (void)rule->matches(address, 80);
        (void)rule->matches_name("a.corp.example", 443);
        if (rule->kind == DestinationRule::Kind::name) {
            const std::vector<IpAddress> v4 = {addresses[0]};
            (void)resolve_name_rule(*rule, v4, error);
            (void)resolve_name_rule(*rule, addresses, error);
        }
    }
    DestinationSet set;
    for (const char *known : {"10.0.0.0/8:1-1024", "*.corp.example", "[fd00::/64]:443"})
        set.add(known, error);
    (void)set.matches(text, 443);
    std::vector<std::string> errors;
    (void)set.add_lines(text, "fuzz", errors);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 2)
        return 0;
    const std::uint8_t mode = data[0] & 3;
    const std::uint8_t seed = data[1];
    const std::string_view input(reinterpret_cast<const char *>(data + 2), size - 2);
    switch (mode) {
    case 0: fuzz_server(input, false, seed); break;
    case 1: fuzz_server(input, true, seed); break;
    case 2: fuzz_client(input, seed); break;
    default: fuzz_destination(input); break;
    }
    return 0;
}
