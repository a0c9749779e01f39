// SPDX-License-Identifier: MIT
// Unit tests of the SOCKS handshakes (forward/socks.h): every version and
// address type in every split, early data, authentication, hostile input,
// replies byte for byte against RFC 1928/1929 and the SOCKS4(a) notes, and
// the SOCKS5 client against the server.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "forward/socks.h"

using pytun::detail::Socks5ClientHandshake;
using pytun::detail::SocksCredentials;
using pytun::detail::SocksReply;
using pytun::detail::SocksRequest;
using pytun::detail::SocksServerHandshake;
using pytun::detail::SocksStep;
using Kind = SocksStep::Kind;
using Type = SocksRequest::AddressType;

namespace {

std::string b(std::initializer_list<int> values)
{
    std::string out;
    for (int v : values)
        out += static_cast<char>(v);
    return out;
}

std::string with_length(const std::string &s)
{
    return static_cast<char>(s.size()) + s;
}

const std::string k_greeting_none = b({5, 1, 0});
const std::string k_selected_none = b({5, 0});
const std::string k_refused_methods = b({5, 0xff});
// CONNECT 10.0.0.1:389
const std::string k_request_ipv4 = b({5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0x85});
// CONNECT [fd00::1]:443
const std::string k_request_ipv6 = b({5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb});
// CONNECT ldap.corp.example:636
const std::string k_request_domain = b({5, 1, 0, 3}) + with_length("ldap.corp.example") + b({0x02, 0x7c});
const SocksCredentials k_alice{"alice", "s3cret"};

std::string socks5_reply_bytes(int code)
{
    return b({5, code, 0, 1, 0, 0, 0, 0, 0, 0});
}

struct Outcome {
    Kind kind = Kind::need_more;
    std::string sent;   ///< every step's `send`, in order
    std::string reason; ///< of the last step
    int steps = 0;
};

// Feeds `input` in pieces of `chunk` bytes (0: all at once) until it is
// all fed or the handshake failed; what follows `complete` is early data.
template <typename Handshake>
Outcome feed(Handshake &handshake, const std::string &input, std::size_t chunk)
{
    Outcome out;
    std::size_t at = 0;
    do {
        const std::size_t n = chunk == 0 ? input.size() : std::min(chunk, input.size() - at);
        const bool was_complete = out.kind == Kind::complete;
        const SocksStep step = handshake.feed(std::string_view(input).substr(at, n));
        at += n;
        if (was_complete)
            CHECK((step.kind == Kind::complete && step.send.empty()));
        ++out.steps;
        out.kind = step.kind;
        out.sent += step.send;
        out.reason = step.reason;
        if (step.kind == Kind::need_more)
            CHECK(step.send.empty());
        if (step.kind == Kind::send_and_continue)
            CHECK_FALSE(step.send.empty());
        if (step.kind == Kind::failed)
            break;
    } while (at < input.size());
    return out;
}

constexpr std::size_t k_splits[] = {0, 1, 2, 3, 5, 7, 64};

// Runs a whole client transcript through a fresh server in every split and
// checks that the result is the same.
struct ServerRun {
    Outcome outcome;
    SocksRequest request;
    std::string early;
};

ServerRun serve(const std::string &input, const std::optional<SocksCredentials> &credentials = std::nullopt)
{
    ServerRun first;
    for (std::size_t chunk : k_splits) {
        SocksServerHandshake server(credentials);
        ServerRun run;
        run.outcome = feed(server, input, chunk);
        run.request = server.request();
        run.early = server.take_early_data();
        INFO("chunk size ", chunk);
        if (chunk == 0) {
            first = run;
            continue;
        }
        CHECK(run.outcome.kind == first.outcome.kind);
        CHECK(run.outcome.sent == first.outcome.sent);
        CHECK(run.outcome.reason == first.outcome.reason);
        CHECK(run.early == first.early);
        CHECK(run.request.host == first.request.host);
        CHECK(run.request.port == first.request.port);
        CHECK(run.request.user == first.request.user);
    }
    return first;
}

} // namespace

TEST_CASE("SOCKS5 CONNECT: IPv4, IPv6 and domain names, in every split")
{
    auto run = serve(k_greeting_none + k_request_ipv4);
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.outcome.sent == k_selected_none);
    CHECK(run.request.version == 5);
    CHECK(run.request.address_type == Type::ipv4);
    CHECK(run.request.host == "10.0.0.1");
    CHECK(run.request.port == 389);
    CHECK(run.request.user.empty());
    CHECK(run.early.empty());

    run = serve(k_greeting_none + k_request_ipv6);
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.address_type == Type::ipv6);
    CHECK(run.request.host == "fd00::1");
    CHECK(run.request.port == 443);

    run = serve(k_greeting_none + k_request_domain);
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.address_type == Type::domain);
    CHECK(run.request.host == "ldap.corp.example");
    CHECK(run.request.port == 636);

    // A domain of the maximum length, and port 65535.
    const std::string longest(255, 'a');
    run = serve(k_greeting_none + b({5, 1, 0, 3}) + with_length(longest) + b({0xff, 0xff}));
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.host == longest);
    CHECK(run.request.port == 65535);
}

TEST_CASE("SOCKS5: answers come as the messages complete, one byte at a time")
{
    SocksServerHandshake server;
    CHECK(server.feed(b({5})).kind == Kind::need_more);
    CHECK(server.feed(b({2})).kind == Kind::need_more);
    CHECK(server.feed(b({1})).kind == Kind::need_more); // methods: 0x01 (GSSAPI) ...
    auto step = server.feed(b({0}));                    // ... and 0x00
    CHECK(step.kind == Kind::send_and_continue);
    CHECK(step.send == k_selected_none);
    for (std::size_t i = 0; i + 1 < k_request_ipv4.size(); ++i)
        CHECK(server.feed(k_request_ipv4.substr(i, 1)).kind == Kind::need_more);
    step = server.feed(k_request_ipv4.substr(k_request_ipv4.size() - 1));
    CHECK(step.kind == Kind::complete);
    CHECK(step.send.empty());
    CHECK(server.request().host == "10.0.0.1");
}

TEST_CASE("early data after the request is handed back, also when fed later")
{
    const std::string early = b({'S', 'S', 'H', 0, 1, 2, 0xff}) + std::string(3000, 'x');
    for (const std::string &request :
         {k_greeting_none + k_request_domain, b({4, 1, 0, 80, 10, 0, 0, 1}) + "bob" + b({0}),
          b({4, 1, 0, 80, 0, 0, 0, 9, 0}) + "intranet.example" + b({0})}) {
        auto run = serve(request + early);
        CHECK(run.outcome.kind == Kind::complete);
        CHECK(run.early == early);
    }

    SocksServerHandshake server;
    auto step = server.feed(k_greeting_none + k_request_ipv4 + "GET ");
    CHECK(step.kind == Kind::complete);
    CHECK(step.send == k_selected_none);
    CHECK(server.feed("/ HTTP/1.0\r\n").kind == Kind::complete);
    CHECK(server.take_early_data() == "GET / HTTP/1.0\r\n");
    CHECK(server.take_early_data().empty());
}

TEST_CASE("SOCKS5 method negotiation: the one acceptable method, else 0xFF")
{
    // Without credentials, 0x00 is chosen among several.
    auto run = serve(b({5, 3, 1, 2, 0}) + k_request_ipv4);
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.outcome.sent == k_selected_none);

    // A client offering only user/password to a forward without credentials.
    run = serve(b({5, 1, 2}) + k_request_ipv4);
    CHECK(run.outcome.kind == Kind::failed);
    CHECK(run.outcome.sent == k_refused_methods);
    CHECK(run.outcome.reason.find("offers no method") != std::string::npos);

    // A client offering only "no authentication" to a forward with credentials.
    run = serve(b({5, 1, 0}) + k_request_ipv4, k_alice);
    CHECK(run.outcome.kind == Kind::failed);
    CHECK(run.outcome.sent == k_refused_methods);
    CHECK(run.outcome.reason.find("requires") != std::string::npos);

    // An empty methods list.
    run = serve(b({5, 0}));
    CHECK(run.outcome.kind == Kind::failed);
    CHECK(run.outcome.sent == k_refused_methods);
    CHECK(run.outcome.reason == "SOCKS5 greeting offers no authentication method");
}

TEST_CASE("RFC 1929: the right user and password pass, anything else is refused and closed")
{
    const std::string greeting = b({5, 2, 0, 2});
    const auto auth = [](const std::string &user, const std::string &password) {
        return b({1}) + with_length(user) + with_length(password);
    };

    auto run = serve(greeting + auth("alice", "s3cret") + k_request_domain + "early", k_alice);
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.outcome.sent == b({5, 2}) + b({1, 0}));
    CHECK(run.request.user == "alice");
    CHECK(run.request.host == "ldap.corp.example");
    CHECK(run.early == "early");

    for (const auto &[user, password] : std::vector<std::pair<std::string, std::string>>{{"alice", "wrong!"},
                                                                                         {"alice", "s3cre"},
                                                                                         {"alice", "s3cret!"},
                                                                                         {"alicE", "s3cret"},
                                                                                         {"", "s3cret"},
                                                                                         {"alice", ""},
                                                                                         {"bob", "s3cret"}}) {
        INFO(user, ":", password);
        run = serve(greeting + auth(user, password) + k_request_ipv4, k_alice);
        CHECK(run.outcome.kind == Kind::failed);
        CHECK(run.outcome.sent == b({5, 2}) + b({1, 1})); // RFC 1929 failure status
        CHECK(run.outcome.reason.find("wrong user name or password") != std::string::npos);
        CHECK(run.outcome.reason.find("s3cre") == std::string::npos); // never the password
    }

    // A subnegotiation version other than 1.
    run = serve(greeting + b({5, 5}) + "alice" + b({6}) + "s3cret", k_alice);
    CHECK(run.outcome.kind == Kind::failed);
    CHECK(run.outcome.sent == b({5, 2}) + b({1, 1}));

    // The reason escapes what the client sent as a user name.
    run = serve(greeting + auth("a\nb", "x"), k_alice);
    CHECK(run.outcome.reason == "wrong user name or password (user 'a\\nb')");

    // After a failure nothing more is read.
    SocksServerHandshake server(k_alice);
    CHECK(server.feed(greeting + auth("alice", "nope")).kind == Kind::failed);
    const auto again = server.feed(auth("alice", "s3cret") + k_request_ipv4);
    CHECK(again.kind == Kind::failed);
    CHECK(again.send.empty());
}

TEST_CASE("SOCKS5 refusals: commands, address types, malformed requests")
{
    struct Case {
        std::string request;
        int reply;
        const char *reason;
    };
    const std::vector<Case> cases = {
        {b({5, 2, 0, 1, 10, 0, 0, 1, 0, 80}), 0x07, "SOCKS5 BIND is not supported (only CONNECT)"},
        {b({5, 3, 0, 1, 10, 0, 0, 1, 0, 80}), 0x07, "SOCKS5 UDP ASSOCIATE is not supported (only CONNECT)"},
        {b({5, 9, 0, 1}), 0x07, "SOCKS5 command 0x09 is not supported (only CONNECT)"},
        {b({5, 1, 0, 2, 1, 2, 3, 4, 0, 80}), 0x08, "SOCKS5 request with unknown address type 0x02"},
        {b({5, 1, 0, 0xff}), 0x08, "SOCKS5 request with unknown address type 0xff"},
        {b({5, 1, 0, 3, 0, 0, 80}), 0x01, "SOCKS5 request with an empty domain name"},
        {b({5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80}), 0x01,
         "SOCKS5 domain name with control characters or spaces: 'a\\x00b'"},
        {b({5, 1, 0, 3, 4, 'a', '\r', '\n', 'b', 0, 80}), 0x01,
         "SOCKS5 domain name with control characters or spaces: 'a\\r\\nb'"},
        {b({5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 80}), 0x01, "SOCKS5 domain name with control characters or spaces: 'a b'"},
        {b({5, 1, 0, 3, 3, 'a', 0x7f, 'b', 0, 80}), 0x01,
         "SOCKS5 domain name with control characters or spaces: 'a\\x7fb'"},
        {b({4, 1, 0, 1, 10, 0, 0, 1, 0, 80}), 0x01, "SOCKS5 request with version 0x04"},
        {b({5, 1, 1, 1, 10, 0, 0, 1, 0, 80}), 0x01, "SOCKS5 request with a reserved byte not 0"},
    };
    for (const Case &c : cases) {
        INFO(c.reason);
        const auto run = serve(k_greeting_none + c.request);
        CHECK(run.outcome.kind == Kind::failed);
        CHECK(run.outcome.sent == k_selected_none + socks5_reply_bytes(c.reply));
        CHECK(run.outcome.reason == c.reason);
    }
}

TEST_CASE("not SOCKS at all: no reply, closed")
{
    for (const std::string &junk : {std::string("GET / HTTP/1.1\r\n\r\n"), b({0}), b({0x16, 3, 1}), b({6, 1, 0})}) {
        const auto run = serve(junk);
        CHECK(run.outcome.kind == Kind::failed);
        CHECK(run.outcome.sent.empty());
        CHECK(run.outcome.reason.starts_with("not a SOCKS request (first byte 0x"));
    }
    CHECK(serve("GET /").outcome.reason == "not a SOCKS request (first byte 0x47)");
}

TEST_CASE("SOCKS4 and SOCKS4a CONNECT")
{
    auto run = serve(b({4, 1, 0x01, 0x85, 10, 0, 0, 1}) + "bob" + b({0}));
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.outcome.sent.empty());
    CHECK(run.request.version == 4);
    CHECK(run.request.address_type == Type::ipv4);
    CHECK(run.request.host == "10.0.0.1");
    CHECK(run.request.port == 389);
    CHECK(run.request.user == "bob");

    // Empty user id.
    run = serve(b({4, 1, 0, 22, 192, 168, 1, 7, 0}));
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.host == "192.168.1.7");
    CHECK(run.request.user.empty());

    // SOCKS4a: 0.0.0.x with x != 0, the host name after the user id.
    run = serve(b({4, 1, 0x01, 0xbb, 0, 0, 0, 1}) + "bob" + b({0}) + "intranet.example" + b({0}));
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.version == 4);
    CHECK(run.request.address_type == Type::domain);
    CHECK(run.request.host == "intranet.example");
    CHECK(run.request.port == 443);
    CHECK(run.request.user == "bob");

    // 0.0.0.0 is a plain SOCKS4 address, not 4a.
    run = serve(b({4, 1, 0, 80, 0, 0, 0, 0, 0}) + "not.a.host" + b({0}));
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.host == "0.0.0.0");
    CHECK(run.early == "not.a.host" + b({0}));

    // Fields of the maximum length (255 bytes before the NUL).
    const std::string user(255, 'u'), host(255, 'h');
    run = serve(b({4, 1, 0, 80, 0, 0, 0, 7}) + user + b({0}) + host + b({0}));
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.request.user == user);
    CHECK(run.request.host == host);
}

TEST_CASE("SOCKS4 refusals: 0x5B for BIND, unknown commands, bad or unbounded fields, required auth")
{
    const std::string rejected = b({0, 0x5b, 0, 0, 0, 0, 0, 0});
    struct Case {
        std::string request;
        const char *reason;
        std::optional<SocksCredentials> credentials = std::nullopt;
    };
    const std::vector<Case> cases = {
        {b({4, 2, 0, 80, 10, 0, 0, 1, 0}), "SOCKS4 BIND is not supported (only CONNECT)"},
        {b({4, 7, 0, 80, 10, 0, 0, 1, 0}), "SOCKS4 command 0x07 is not supported (only CONNECT)"},
        {b({4, 1, 0, 80, 10, 0, 0, 1, 0}),
         "SOCKS4 cannot authenticate and this forward requires a user name and password (use SOCKS5)", k_alice},
        {b({4, 1, 0, 80, 10, 0, 0, 1}) + std::string(256, 'u') + b({0}), "SOCKS4 user id longer than 255 bytes"},
        {b({4, 1, 0, 80, 0, 0, 0, 1, 0}) + std::string(256, 'h') + b({0}), "SOCKS4 host name longer than 255 bytes"},
        {b({4, 1, 0, 80, 0, 0, 0, 1, 0, 0}), "SOCKS4a request with an empty host name"},
        {b({4, 1, 0, 80, 0, 0, 0, 1, 0}) + "a\x1b[2Jb" + b({0}),
         "SOCKS4 host name with control characters or spaces: 'a\\x1b[2Jb'"},
        {b({4, 1, 0, 80, 10, 0, 0, 1}) + "bo b" + b({0}), "SOCKS4 user id with control characters or spaces: 'bo b'"},
    };
    for (const Case &c : cases) {
        INFO(c.reason);
        const auto run = serve(c.request, c.credentials);
        CHECK(run.outcome.kind == Kind::failed);
        CHECK(run.outcome.sent == rejected);
        CHECK(run.outcome.reason == c.reason);
    }
}

TEST_CASE("bounded buffering: a field without its NUL fails at the bound, not later")
{
    SocksServerHandshake server;
    CHECK(server.feed(b({4, 1, 0, 80, 10, 0, 0, 1})).kind == Kind::need_more);
    for (int i = 0; i < 255; ++i)
        REQUIRE(server.feed("u").kind == Kind::need_more);
    const auto step = server.feed("u"); // the 256th byte without a NUL
    CHECK(step.kind == Kind::failed);
    CHECK(step.send == b({0, 0x5b, 0, 0, 0, 0, 0, 0}));
    CHECK(server.feed(std::string(100000, 'u')).kind == Kind::failed);

    // A flood of junk after a valid start is refused at the first bad byte.
    SocksServerHandshake flooded;
    const auto flood = flooded.feed(k_greeting_none + std::string(100000, '\x09'));
    CHECK(flood.kind == Kind::failed);
    CHECK(flood.send == k_selected_none + socks5_reply_bytes(0x01));
}

TEST_CASE("the largest legitimate SOCKS5 exchange (1032 bytes) completes")
{
    std::string greeting = b({5, 255});
    for (int method = 1; method <= 255; ++method)
        greeting += static_cast<char>(method); // 0x02 last but one
    const SocksCredentials longest{std::string(255, 'u'), std::string(255, 'p')};
    const std::string auth = b({1}) + with_length(longest.user) + with_length(longest.password);
    const std::string request = b({5, 1, 0, 3}) + with_length(std::string(255, 'h')) + b({0, 80});
    REQUIRE(greeting.size() + auth.size() + request.size() == 1032);
    const auto run = serve(greeting + auth + request, longest);
    CHECK(run.outcome.kind == Kind::complete);
    CHECK(run.outcome.sent == b({5, 2, 1, 0}));
    CHECK(run.request.user == longest.user);
}

TEST_CASE("replies, byte for byte, in the request's own version")
{
    SocksServerHandshake v5;
    REQUIRE(v5.feed(k_greeting_none + k_request_ipv4).kind == Kind::complete);
    SocksServerHandshake v4;
    REQUIRE(v4.feed(b({4, 1, 0, 80, 10, 0, 0, 1, 0})).kind == Kind::complete);
    const std::vector<std::pair<SocksReply, int>> codes = {
        {SocksReply::succeeded, 0x00},
        {SocksReply::general_failure, 0x01},
        {SocksReply::not_allowed, 0x02},
        {SocksReply::network_unreachable, 0x03},
        {SocksReply::host_unreachable, 0x04},
        {SocksReply::connection_refused, 0x05},
        {SocksReply::ttl_expired, 0x06},
        {SocksReply::command_not_supported, 0x07},
        {SocksReply::address_type_not_supported, 0x08},
    };
    for (const auto &[reply, code] : codes) {
        INFO(code);
        // RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT (0.0.0.0:0).
        CHECK(v5.reply(reply) == b({5, code, 0, 1, 0, 0, 0, 0, 0, 0}));
        // SOCKS4: VN=0, CD 90 granted / 91 rejected, DSTPORT, DSTIP.
        CHECK(v4.reply(reply) == b({0, code == 0 ? 0x5a : 0x5b, 0, 0, 0, 0, 0, 0}));
    }
    CHECK(std::string(pytun::detail::socks_reply_text(SocksReply::connection_refused)) == "connection refused");
    CHECK(std::string(pytun::detail::socks_reply_text(SocksReply::not_allowed)) == "connection not allowed by ruleset");
    CHECK(std::string(pytun::detail::socks_reply_text(static_cast<SocksReply>(0x42))) == "unknown reply");
}

// ---- the client's side ------------------------------------------------------

TEST_CASE("SOCKS5 client: no authentication, a host name, early data after the reply")
{
    Socks5ClientHandshake client("bastion.example", 22);
    auto step = client.start();
    CHECK(step.kind == Kind::send_and_continue);
    CHECK(step.send == b({5, 1, 0}));

    step = client.feed(b({5, 0}));
    CHECK(step.kind == Kind::send_and_continue);
    CHECK(step.send == b({5, 1, 0, 3}) + with_length("bastion.example") + b({0, 22}));

    // The reply with a domain BND.ADDR, byte at a time, then the bastion's banner.
    const std::string reply = b({5, 0, 0, 3}) + with_length("proxy.example") + b({0x1f, 0x90});
    const auto outcome = feed(client, reply + "SSH-2.0-OpenSSH_9.2\r\n", 1);
    CHECK(outcome.kind == Kind::complete);
    CHECK(outcome.sent.empty());
    CHECK(client.proxy_reply() == SocksReply::succeeded);
    CHECK(client.feed("more").kind == Kind::complete);
    CHECK(client.take_early_data() == "SSH-2.0-OpenSSH_9.2\r\nmore");
}

TEST_CASE("SOCKS5 client: IP literals are sent as IPv4 and IPv6 addresses")
{
    Socks5ClientHandshake v4("198.18.0.7", 2222);
    v4.start();
    CHECK(v4.feed(b({5, 0})).send == b({5, 1, 0, 1, 198, 18, 0, 7, 0x08, 0xae}));

    Socks5ClientHandshake v6("fd00::1", 22);
    v6.start();
    CHECK(v6.feed(b({5, 0})).send == b({5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22}));
    const auto step = v6.feed(b({5, 0, 0, 4}) + std::string(16, '\0') + b({0, 0}));
    CHECK(step.kind == Kind::complete);
    CHECK(v6.take_early_data().empty());
}

TEST_CASE("SOCKS5 client: user name and password")
{
    Socks5ClientHandshake client("bastion.example", 22, k_alice);
    CHECK(client.start().send == b({5, 2, 0, 2}));
    auto step = client.feed(b({5, 2}));
    CHECK(step.kind == Kind::send_and_continue);
    CHECK(step.send == b({1, 5}) + "alice" + b({6}) + "s3cret");
    step = client.feed(b({1, 0}));
    CHECK(step.kind == Kind::send_and_continue);
    CHECK(step.send == b({5, 1, 0, 3}) + with_length("bastion.example") + b({0, 22}));
    CHECK(client.feed(socks5_reply_bytes(0)).kind == Kind::complete);

    // A proxy that needs no authentication may pick 0x00 though we offer both.
    Socks5ClientHandshake lenient("bastion.example", 22, k_alice);
    lenient.start();
    CHECK(lenient.feed(b({5, 0})).send.starts_with(b({5, 1, 0, 3})));

    Socks5ClientHandshake refused("bastion.example", 22, k_alice);
    refused.start();
    refused.feed(b({5, 2}));
    step = refused.feed(b({1, 1}));
    CHECK(step.kind == Kind::failed);
    CHECK(step.send.empty());
    CHECK(step.reason == "the SOCKS5 proxy refused our user name or password");
}

TEST_CASE("SOCKS5 client: refusals and malformed answers fail with a reason")
{
    struct Case {
        std::vector<std::string> answers; ///< one per round trip
        std::string reason;
        bool credentials = false;
    };
    const std::vector<Case> cases = {
        {{b({5, 0xff})},
         "the SOCKS5 proxy accepts none of our authentication methods (does it need a user name and password?)"},
        {{b({5, 0xff})}, "the SOCKS5 proxy accepts none of our authentication methods", true},
        {{b({5, 2})}, "the SOCKS5 proxy chose authentication method 0x02, which we did not offer"},
        {{"HTTP/1.1 400 Bad Request\r\n"}, "not a SOCKS5 proxy (it answered 0x48)"},
        {{b({5, 2}), b({5, 0})}, "the SOCKS5 proxy answered user name/password with version 0x05", true},
        {{b({5, 0}), b({5, 5})},
         "the SOCKS5 proxy could not connect to bastion.example:22: connection refused (reply 0x05)"},
        {{b({5, 0}), b({5, 0x42, 0, 1})},
         "the SOCKS5 proxy could not connect to bastion.example:22: unknown reply (reply 0x42)"},
        {{b({5, 0}), b({4, 0})}, "the SOCKS5 proxy answered CONNECT with version 0x04"},
        {{b({5, 0}), b({5, 0, 0, 9, 0})}, "the SOCKS5 proxy's reply has unknown address type 0x09"},
        {{b({5, 0}), b({5, 0, 1, 1, 0})}, "the SOCKS5 proxy's reply has a reserved byte not 0"},
        // Bytes before our next request could have been read are a protocol error.
        {{b({5, 0, 5})}, "the SOCKS peer sent data before it could have read our answer (1 bytes too early)"},
        {{b({5, 2}), b({1, 0}) + socks5_reply_bytes(0)},
         "the SOCKS peer sent data before it could have read our answer (10 bytes too early)",
         true},
    };
    for (const Case &c : cases) {
        INFO(c.reason);
        // One byte at a time cannot show bytes arriving early.
        const bool early_bytes = c.reason.find("too early") != std::string::npos;
        for (std::size_t chunk : {0, 1}) {
            if (chunk == 1 && early_bytes)
                continue;
            Socks5ClientHandshake client("bastion.example", 22, c.credentials ? std::optional(k_alice) : std::nullopt);
            REQUIRE(client.start().kind == Kind::send_and_continue);
            Outcome outcome;
            for (const auto &answer : c.answers)
                outcome = feed(client, answer, chunk);
            CHECK(outcome.kind == Kind::failed);
            CHECK(outcome.reason == c.reason);
            CHECK(outcome.reason.find("s3cret") == std::string::npos);
        }
    }
    Socks5ClientHandshake client("bastion.example", 22);
    client.start();
    client.feed(b({5, 0}));
    client.feed(b({5, 4}));
    CHECK(client.proxy_reply() == SocksReply::host_unreachable);
}

TEST_CASE("SOCKS5 client: what cannot be encoded fails at start")
{
    const std::string too_long(256, 'a');
    for (const auto &[host, credentials] : std::vector<std::pair<std::string, std::optional<SocksCredentials>>>{
             {"", std::nullopt},
             {too_long, std::nullopt},
             {"bad host", std::nullopt},
             {"bad\nhost", std::nullopt},
             {"bastion.example", SocksCredentials{"", "x"}},
             {"bastion.example", SocksCredentials{"alice", ""}},
             {"bastion.example", SocksCredentials{"alice", too_long}}}) {
        INFO(host);
        Socks5ClientHandshake client(host, 22, credentials);
        const auto step = client.start();
        CHECK(step.kind == Kind::failed);
        CHECK(step.send.empty());
        CHECK_FALSE(step.reason.empty());
        CHECK(client.feed(b({5, 0})).kind == Kind::failed);
    }
    Socks5ClientHandshake not_started("bastion.example", 22);
    CHECK(not_started.feed(b({5, 0})).kind == Kind::failed);
}

TEST_CASE("the client and the server agree, with and without credentials")
{
    for (const auto &credentials : {std::optional<SocksCredentials>{}, std::optional(k_alice)}) {
        for (const std::string host : {"ldap.corp.example", "10.1.2.3", "fd00::7"}) {
            INFO(host);
            SocksServerHandshake server(credentials);
            Socks5ClientHandshake client(host, 636, credentials);
            auto to_server = client.start();
            SocksStep to_client;
            // Each side answers the other until the server has the request.
            while (true) {
                REQUIRE(to_server.kind == Kind::send_and_continue);
                to_client = server.feed(to_server.send);
                if (to_client.kind == Kind::complete)
                    break;
                REQUIRE(to_client.kind == Kind::send_and_continue);
                to_server = client.feed(to_client.send);
            }
            CHECK(server.request().host == host);
            CHECK(server.request().port == 636);
            CHECK(server.request().user == (credentials ? "alice" : ""));
            const auto done = client.feed(server.reply(SocksReply::succeeded) + "hello");
            CHECK(done.kind == Kind::complete);
            CHECK(client.take_early_data() == "hello");
        }
    }
}
