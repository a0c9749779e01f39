// SPDX-License-Identifier: MIT
// libFuzzer target: the DNS messages the relay reads from clients and from
// the server's resolver (vpn/dns_message.h). Checks, beyond "no crash":
// - a query the relay answers itself gets a response with the query's ID,
//   QR set, no records, and never larger than a header and a question;
// - a forwarded query's question lies inside it and its UDP size is >= 512;
// - an answer cut for UDP never exceeds the limit, has TC set and no
//   answer or authority records; one that fits is passed unchanged;
// - DNS over TCP split at random gives the same messages as fed at once.
// Input: mode byte, split seed / limit byte, then the message or stream.
//   mode % 3: 0 a client's message, 1 an answer, 2 a TCP stream
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vpn/dns_message.h"

namespace dns = pytun::detail::dns;

namespace {

void check(bool condition)
{
    if (!condition)
        __builtin_trap();
}

// The largest reply made here: a header and a question (a name of 255, type, class).
constexpr std::size_t k_max_own_reply = dns::k_header_size + 255 + 4;

void check_own_reply(std::string_view query, const std::string &reply)
{
    auto h = dns::read_header(reply);
    check(h.has_value());
    check(h->qr);
    check(h->id == dns::message_id(query));
    check(h->ancount == 0 && h->nscount == 0 && h->arcount == 0);
    check(h->qdcount <= 1);
    check(reply.size() <= k_max_own_reply);
}

void client_message(std::string_view m)
{
    const dns::QueryCheck c = dns::check_query(m);
    switch (c.verdict) {
    case dns::QueryCheck::Verdict::drop:
        check(c.reply.empty());
        check(m.size() < dns::k_header_size || (static_cast<unsigned char>(m[2]) & 0x80));
        break;
    case dns::QueryCheck::Verdict::answer:
        check_own_reply(m, c.reply);
        check(!c.why.empty());
        break;
    case dns::QueryCheck::Verdict::forward:
        check(m.size() <= dns::k_max_query);
        check(c.info.question_end > dns::k_header_size && c.info.question_end <= m.size());
        check(c.info.udp_size >= dns::k_classic_udp_size);
        check(c.info.header.qdcount == 1 && !c.info.header.qr);
        // The answer check accepts the query's own question.
        {
            std::string echo(m);
            echo[2] = static_cast<char>(echo[2] | 0x80);
            check(dns::answer_matches(echo, m.substr(dns::k_header_size, c.info.question_end - dns::k_header_size)));
        }
        break;
    }
    if (m.size() >= dns::k_header_size)
        check_own_reply(m, dns::make_reply(m, dns::Rcode::servfail));
}

void answer(std::string_view m, std::size_t limit)
{
    const std::string cut = dns::truncate_for_udp(m, limit);
    const std::size_t effective = std::max(limit, dns::k_classic_udp_size);
    if (m.size() <= effective) {
        check(cut == m);
        return;
    }
    check(cut.size() <= effective);
    auto h = dns::read_header(cut);
    check(h.has_value());
    check(h->tc);
    check(h->ancount == 0 && h->nscount == 0 && h->arcount <= 1 && h->qdcount <= 1);
    check(dns::message_id(cut) == dns::message_id(m));
    (void)dns::answer_matches(m, m.substr(dns::k_header_size, std::min<std::size_t>(m.size() - 12, 40)));
}

void stream(std::string_view bytes, std::uint8_t seed)
{
    dns::FrameReader whole;
    whole.feed(bytes);
    std::vector<std::string> expected;
    while (auto message = whole.next())
        expected.push_back(*message);
    check(whole.buffered() < 2 + dns::k_max_message);

    dns::FrameReader split;
    std::vector<std::string> got;
    std::uint32_t state = seed * 2654435761u + 1;
    for (std::size_t at = 0; at < bytes.size();) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        const std::size_t n = std::min<std::size_t>(1 + state % 64, bytes.size() - at);
        split.feed(bytes.substr(at, n));
        at += n;
        while (auto message = split.next())
            got.push_back(*message);
    }
    check(got == expected);
    check(split.buffered() == whole.buffered());
    std::string again;
    for (const auto &message : expected)
        again += dns::frame(message);
    check(std::string_view(again) == bytes.substr(0, again.size()));
    for (const auto &message : expected)
        client_message(message);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    if (size < 2)
        return 0;
    const std::string_view input(reinterpret_cast<const char *>(data + 2), size - 2);
    switch (data[0] % 3) {
    case 0:
        client_message(input);
        break;
    case 1:
        answer(input, static_cast<std::size_t>(data[1]) * 16);
        break;
    default:
        stream(input, data[1]);
        break;
    }
    return 0;
}
