// SPDX-License-Identifier: MIT
// Unit tests of vpn/dns_message.h: what the DNS relay forwards and what it
// answers itself (byte for byte), EDNS0 sizes, ID rewriting, answer checks,
// truncation for UDP and DNS-over-TCP framing in every split.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dns_builder.h"
#include "vpn/dns_message.h"

namespace dns = pytun::detail::dns;
namespace build = pytun::test::dns;
using Verdict = dns::QueryCheck::Verdict;

namespace {

std::string bytes(std::initializer_list<int> values)
{
    std::string out;
    for (int v : values)
        out += static_cast<char>(v);
    return out;
}

dns::Header header_of(const std::string &m)
{
    auto h = dns::read_header(m);
    REQUIRE(h);
    return *h;
}

void check_refused(const std::string &query, dns::Rcode rcode, bool with_question)
{
    auto c = dns::check_query(query);
    CHECK(c.verdict == Verdict::answer);
    CHECK_FALSE(c.why.empty());
    auto h = header_of(c.reply);
    CHECK(h.id == dns::message_id(query));
    CHECK(h.qr);
    CHECK(h.rcode == static_cast<unsigned>(rcode));
    CHECK(h.qdcount == (with_question ? 1 : 0));
    CHECK(h.ancount + h.nscount + h.arcount == 0);
}

} // namespace

TEST_CASE("a plain query is forwarded with what the relay needs")
{
    const std::string q = build::query("www.Example.com", 28, 0xbeef);
    auto c = dns::check_query(q);
    REQUIRE(c.verdict == Verdict::forward);
    CHECK(c.info.header.id == 0xbeef);
    CHECK(c.info.header.rd);
    CHECK(c.info.name == "www.Example.com.");
    CHECK(c.info.qtype == 28);
    CHECK(c.info.qclass == 1);
    CHECK(c.info.question_end == q.size());
    CHECK_FALSE(c.info.edns);
    CHECK(c.info.udp_size == 512);
}

TEST_CASE("EDNS0: the advertised UDP size, never below 512")
{
    auto c = dns::check_query(build::query("example.com", 1, 1, 1232));
    REQUIRE(c.verdict == Verdict::forward);
    CHECK(c.info.edns);
    CHECK(c.info.udp_size == 1232);
    CHECK(c.info.question_end == 12 + build::question("example.com").size());
    c = dns::check_query(build::query("example.com", 1, 1, 100));
    REQUIRE(c.verdict == Verdict::forward);
    CHECK(c.info.udp_size == 512);
    // With a cookie option, as dig sends it.
    build::Header h;
    h.ar = 1;
    const std::string cookie = bytes({0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8});
    c = dns::check_query(h.bytes() + build::question("example.com") + build::opt_record(4096, cookie));
    REQUIRE(c.verdict == Verdict::forward);
    CHECK(c.info.udp_size == 4096);
    // The root as the name.
    c = dns::check_query(h.bytes() + std::string(1, '\0') + bytes({0, 2, 0, 1}) + build::opt_record(1400));
    REQUIRE(c.verdict == Verdict::forward);
    CHECK(c.info.name == ".");
}

TEST_CASE("messages not worth an answer are dropped")
{
    for (std::size_t n = 0; n < 12; ++n) {
        auto c = dns::check_query(std::string(n, '\x01'));
        CHECK(c.verdict == Verdict::drop);
        CHECK(c.why.find("shorter than a DNS header") != std::string::npos);
        CHECK(dns::make_reply(std::string(n, '\x01'), dns::Rcode::servfail).empty());
    }
    auto c = dns::check_query(build::answer("example.com", 1));
    CHECK(c.verdict == Verdict::drop);
    CHECK(c.why == "a response, not a query");
}

TEST_CASE("malformed and unwanted queries are answered here, byte for byte")
{
    const std::string q = build::question("example.com");
    SUBCASE("opcode STATUS: NOTIMP, with the question")
    {
        build::Header h;
        h.flags = 2 << 11;
        check_refused(h.bytes() + q, dns::Rcode::notimp, true);
        auto reply = dns::check_query(h.bytes() + q).reply;
        CHECK((static_cast<unsigned char>(reply[2]) >> 3 & 0x0f) == 2); // the opcode is echoed
    }
    SUBCASE("no question, two questions")
    {
        build::Header h;
        h.qd = 0;
        check_refused(h.bytes(), dns::Rcode::formerr, false);
        h.qd = 2;
        check_refused(h.bytes() + q + q, dns::Rcode::formerr, false);
    }
    SUBCASE("a label of 64 bytes, a name of 256")
    {
        // RFC 1035 §2.3.4: labels of at most 63 bytes, names of at most 255
        // on the wire (length bytes and the root's included): a name written
        // with N characters and no trailing dot takes N + 2.
        build::Header h;
        check_refused(h.bytes() + build::question(std::string(64, 'a') + ".com"), dns::Rcode::formerr, false);
        CHECK(dns::check_query(h.bytes() + build::question(std::string(63, 'a') + ".com")).verdict ==
              Verdict::forward);
        std::string long_name;
        while (long_name.size() < 250)
            long_name += std::string(9, 'x') + ".";
        long_name += "abcd"; // 254 characters: wire length 256
        REQUIRE(build::wire_name(long_name).size() == 256);
        check_refused(h.bytes() + build::question(long_name), dns::Rcode::formerr, false);
        long_name.pop_back(); // wire length 255: the longest name
        REQUIRE(build::wire_name(long_name).size() == 255);
        CHECK(dns::check_query(h.bytes() + build::question(long_name)).verdict == Verdict::forward);
    }
    SUBCASE("a compression pointer in the question")
    {
        build::Header h;
        check_refused(h.bytes() + bytes({0xc0, 0x0c, 0, 1, 0, 1}), dns::Rcode::formerr, false);
    }
    SUBCASE("reserved label types")
    {
        build::Header h;
        check_refused(h.bytes() + bytes({0x41, 'a', 0, 0, 1, 0, 1}), dns::Rcode::formerr, false);
    }
    SUBCASE("the message ends inside the question")
    {
        build::Header h;
        const std::string whole = h.bytes() + q;
        for (std::size_t n = 12; n < whole.size(); ++n)
            check_refused(whole.substr(0, n), dns::Rcode::formerr, false);
    }
    SUBCASE("a record promised but cut, two OPT records, an OPT among the answers")
    {
        build::Header h;
        h.ar = 1;
        check_refused(h.bytes() + q, dns::Rcode::formerr, true);
        check_refused(h.bytes() + q + build::opt_record(1232).substr(0, 8), dns::Rcode::formerr, true);
        h.ar = 2;
        check_refused(h.bytes() + q + build::opt_record(1232) + build::opt_record(512), dns::Rcode::formerr, true);
        h.ar = 0;
        h.an = 1;
        check_refused(h.bytes() + q + build::opt_record(1232), dns::Rcode::formerr, true);
        h.an = 0;
        h.ar = 1;
        std::string named_opt = build::opt_record(1232);
        named_opt = build::wire_name("x") + named_opt.substr(1);
        check_refused(h.bytes() + q + named_opt, dns::Rcode::formerr, true);
    }
    SUBCASE("oversized: more than 4096 bytes")
    {
        build::Header h;
        h.ar = 1;
        std::string big = h.bytes() + q + build::opt_record(1232, std::string(4096, 'z'));
        check_refused(big, dns::Rcode::formerr, true);
        check_refused(std::string(65535, '\0'), dns::Rcode::formerr, false);
    }
    SUBCASE("zone transfers: REFUSED")
    {
        check_refused(build::query("example.com", dns::k_type_axfr), dns::Rcode::refused, true);
        check_refused(build::query("example.com", dns::k_type_ixfr), dns::Rcode::refused, true);
    }
}

TEST_CASE("make_reply: SERVFAIL for a query, byte for byte")
{
    const std::string q = build::query("lan.pytun.test", 1, 0xabcd, 1232);
    const std::string expected = bytes({0xab, 0xcd, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0}) +
                                 build::question("lan.pytun.test");
    CHECK(dns::make_reply(q, dns::Rcode::servfail) == expected);
    build::Header h;
    h.flags = 0; // RD clear
    CHECK(dns::make_reply(h.bytes() + build::question("a"), dns::Rcode::refused) ==
          bytes({0x12, 0x34, 0x80, 0x85, 0, 1, 0, 0, 0, 0, 0, 0}) + build::question("a"));
}

TEST_CASE("IDs are read and rewritten in place")
{
    std::string q = build::query("example.com", 1, 0x0102);
    CHECK(dns::message_id(q) == 0x0102);
    dns::set_message_id(q, 0xfffe);
    CHECK(dns::message_id(q) == 0xfffe);
    CHECK(dns::check_query(q).verdict == Verdict::forward);
    std::string tiny = "x";
    dns::set_message_id(tiny, 7);
    CHECK(tiny == "x");
    CHECK(dns::message_id(tiny) == 0);
}

TEST_CASE("answer_matches: the query's own question, in any case")
{
    const std::string q = build::query("Lan.Pytun.Test");
    const std::string question = q.substr(12);
    CHECK(dns::answer_matches(build::answer("lan.pytun.test", 2), question));
    CHECK(dns::answer_matches(build::answer("LAN.PYTUN.TEST", 0, 1, 0, 3), question));
    CHECK_FALSE(dns::answer_matches(build::answer("lan.pytun.tesu", 2), question));
    CHECK_FALSE(dns::answer_matches(build::query("lan.pytun.test"), question)); // not a response
    build::Header h;
    h.flags = 0x8182;
    h.qd = 0;
    CHECK(dns::answer_matches(h.bytes(), question)); // SERVFAIL without a question
    h.qd = 1;
    CHECK_FALSE(dns::answer_matches(h.bytes() + build::question("lan.pytun.test", 28), question));
    CHECK_FALSE(dns::answer_matches("short", question));
}

TEST_CASE("truncate_for_udp: TC, the question and OPT only, never over the limit")
{
    const std::string small = build::answer("big.pytun.test", 10, 7, 1232);
    CHECK(dns::truncate_for_udp(small, 512) == small);

    const std::string big = build::answer("big.pytun.test", 100, 7, 1232); // 12 + 20 + 1600 + 11
    REQUIRE(big.size() > 1232);
    CHECK(dns::truncate_for_udp(big, 4096) == big);
    for (std::size_t limit : {0, 100, 512, 1232}) {
        const std::string cut = dns::truncate_for_udp(big, limit);
        CAPTURE(limit);
        CHECK(cut.size() <= std::max<std::size_t>(limit, 512));
        auto h = header_of(cut);
        CHECK(h.tc);
        CHECK(h.qr);
        CHECK(h.id == 7);
        CHECK(h.qdcount == 1);
        CHECK(h.ancount == 0);
        CHECK(h.nscount == 0);
        CHECK(h.arcount == 1);
        CHECK(cut == big.substr(0, 2) + bytes({0x83, 0x80, 0, 1, 0, 0, 0, 0, 0, 1}) +
                          build::question("big.pytun.test") + build::opt_record(1232));
    }
    // Without EDNS: the question alone.
    const std::string plain = build::answer("big.pytun.test", 100, 8);
    const std::string cut = dns::truncate_for_udp(plain, 512);
    CHECK(cut == bytes({0, 8, 0x83, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}) + build::question("big.pytun.test"));
    // Records that do not parse: the question is kept, nothing else.
    std::string broken = plain;
    broken[12 + build::question("big.pytun.test").size()] = 0x7f;
    const std::string broken_cut = dns::truncate_for_udp(broken, 512);
    CHECK(header_of(broken_cut).tc);
    CHECK(header_of(broken_cut).arcount == 0);
    CHECK(broken_cut.size() == 12 + build::question("big.pytun.test").size());
    // A question that does not parse: the header alone.
    std::string no_question = plain;
    no_question[12] = static_cast<char>(0xc0);
    CHECK(dns::truncate_for_udp(no_question, 512).size() == 12);
    // A huge OPT record is left out rather than exceed the limit.
    build::Header h;
    h.flags = 0x8180;
    h.ar = 1;
    const std::string fat = h.bytes() + build::question("x") + build::opt_record(1232, std::string(2000, 'o'));
    const std::string fat_cut = dns::truncate_for_udp(fat, 1232);
    CHECK(fat_cut.size() == 12 + build::question("x").size());
    CHECK(header_of(fat_cut).arcount == 0);
}

TEST_CASE("frames: a 2-byte length; the reader gives whole messages whatever the split")
{
    const std::vector<std::string> messages = {build::query("a.example"), std::string(), std::string(70000 % 65536, 'm'),
                                               build::answer("b.example", 3)};
    std::string stream;
    for (const auto &m : messages)
        stream += dns::frame(m);
    CHECK(dns::frame("abc") == bytes({0, 3, 'a', 'b', 'c'}));
    for (std::size_t step : {1, 2, 3, 7, 100, 4464, 65536, 1 << 20}) {
        CAPTURE(step);
        dns::FrameReader reader;
        std::vector<std::string> got;
        for (std::size_t at = 0; at < stream.size(); at += step) {
            reader.feed(std::string_view(stream).substr(at, step));
            while (auto m = reader.next())
                got.push_back(*m);
        }
        CHECK(got == messages);
        CHECK(reader.buffered() == 0);
    }
    dns::FrameReader reader;
    reader.feed(bytes({0xff, 0xff, 1, 2, 3}));
    CHECK_FALSE(reader.next());
    CHECK(reader.buffered() == 5);
    reader.feed(std::string(65532, 'x'));
    auto m = reader.next();
    REQUIRE(m);
    CHECK(m->size() == 65535);
    CHECK(reader.buffered() == 0);
}

TEST_CASE("rcode names")
{
    CHECK(dns::rcode_name(0) == "NOERROR");
    CHECK(dns::rcode_name(3) == "NXDOMAIN");
    CHECK(dns::rcode_name(5) == "REFUSED");
    CHECK(dns::rcode_name(9) == "RCODE9");
}
