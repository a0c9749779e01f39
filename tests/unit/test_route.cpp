// SPDX-License-Identifier: MIT
// Unit tests of how a tunnel reaches its bastion: proxy URLs, jump hosts,
// no_proxy lists, the HTTP CONNECT client handshake (every split, interim
// answers, refusals, hostile answers) and the proxy and jump keys of the
// configuration, with the proxy's password in no message.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <pytun/config.h>
#include <pytun/route.h>
#include <pytun/tunnel.h>
#include <pytun/version.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ssh/proxy.h"

namespace fs = std::filesystem;
using pytun::JumpHost;
using pytun::ProxyOptions;
using pytun::detail::HttpConnectHandshake;
using Step = HttpConnectHandshake::Step;

namespace {

constexpr const char *k_secret = "s3cr3t-PW";

ProxyOptions proxy_ok(const std::string &url)
{
    std::string error;
    auto p = pytun::parse_proxy(url, error);
    INFO(url << ": " << error);
    REQUIRE(p.has_value());
    CHECK(error.empty());
    return *p;
}

std::string proxy_error(const std::string &url)
{
    std::string error;
    auto p = pytun::parse_proxy(url, error);
    INFO(url);
    CHECK_FALSE(p.has_value());
    CHECK_FALSE(error.empty());
    return error;
}

struct Outcome {
    Step::Kind kind = Step::Kind::need_more;
    std::string reason;
    std::string early;
};

/// Feeds `answer` in pieces of `piece` bytes (0: at once).
Outcome feed(HttpConnectHandshake &h, const std::string &answer, std::size_t piece = 0)
{
    Outcome out;
    for (std::size_t at = 0; at < answer.size();) {
        const std::size_t n = piece ? std::min(piece, answer.size() - at) : answer.size();
        const Step step = h.feed(std::string_view(answer).substr(at, n));
        at += n;
        out.kind = step.kind;
        out.reason = step.reason;
        out.early += h.take_early_data();
    }
    return out;
}

Outcome answer_to(const std::string &answer, std::size_t piece = 0)
{
    HttpConnectHandshake h("bastion.example", 22, "user", k_secret);
    return feed(h, answer, piece);
}

struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string tmpl = (fs::temp_directory_path() / "pytun-route-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    void file(const std::string &name, const std::string &text = "x\n") const
    {
        std::ofstream(path / name) << text;
        fs::permissions(path / name, fs::perms::owner_read | fs::perms::owner_write);
    }
};

// A real (throwaway) unencrypted ed25519 key and known_hosts lines: the
// loader reads keyfile and server_key (jump_keyfile, jump_server_key) for
// what they hold.
constexpr const char *k_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                              "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
                              "QyNTUxOQAAACBB1DGeCn4+F+5RIgwlxZ8IW8/aIIetYAvxgU+K8d81hgAAAJhA1i2HQNYt\n"
                              "hwAAAAtzc2gtZWQyNTUxOQAAACBB1DGeCn4+F+5RIgwlxZ8IW8/aIIetYAvxgU+K8d81hg\n"
                              "AAAEAL+3Ewud9gEU9kjt/EKG1Ymb/EmtIomkCvuUxgtb+LlEHUMZ4Kfj4X7lEiDCXFnwhb\n"
                              "z9ogh61gC/GBT4rx3zWGAAAAEXB5dHVuLWNvbmZpZy10ZXN0AQIDBA==\n"
                              "-----END OPENSSH PRIVATE KEY-----\n";
constexpr const char *k_host_key = " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureHostKeyNotReal0000000000000000000\n";

std::string all_diagnostics(const pytun::LoadResult &r)
{
    std::string s;
    for (const auto &d : r.diagnostics)
        s += d.to_string() + "\n";
    return s;
}

} // namespace

TEST_CASE("proxy URLs: kinds, default ports, credentials, IPv6")
{
    ProxyOptions p = proxy_ok("http://proxy.example:3128");
    CHECK(p.kind == ProxyOptions::Kind::http);
    CHECK(p.host == "proxy.example");
    CHECK(p.port == 3128);
    CHECK(p.username.empty());
    CHECK(p.password.empty());

    p = proxy_ok("  HTTP://us%3Aer:p%40ss%25w0rd@10.0.0.1:8080/ ");
    CHECK(p.host == "10.0.0.1");
    CHECK(p.username == "us:er");
    CHECK(p.password == "p@ss%w0rd");

    // Unencoded '@', ':' and '/' in a password: everything up to the last '@'.
    p = proxy_ok("http://user:pa/ss:w@rd@proxy:1");
    CHECK(p.username == "user");
    CHECK(p.password == "pa/ss:w@rd");
    CHECK(p.host == "proxy");

    CHECK(proxy_ok("http://proxy").port == 80);
    p = proxy_ok("socks5://[fd00::1]:1081");
    CHECK(p.kind == ProxyOptions::Kind::socks5);
    CHECK(p.host == "fd00::1");
    CHECK(p.port == 1081);
    p = proxy_ok("socks5h://u:pw@socks.example");
    CHECK(p.kind == ProxyOptions::Kind::socks5);
    CHECK(p.port == 1080);
    CHECK(p.username == "u");
    CHECK(proxy_ok("http://user@proxy:3128").password.empty());
    CHECK(proxy_ok("none").kind == ProxyOptions::Kind::none);
    CHECK(proxy_ok("NONE").kind == ProxyOptions::Kind::none);
}

TEST_CASE("proxy URLs: every mistake is named, and no message shows the user or password")
{
    const std::string s = k_secret;
    struct Case {
        std::string url;
        std::string word;
    };
    const std::vector<Case> cases = {
        {"op3rator:" + s + "@proxy:3128", "not a proxy URL"},
        {"https://op3rator:" + s + "@proxy:3128", "https:// proxies"},
        {"socks4://proxy:1080", "SOCKS4"},
        {"ftp://op3rator:" + s + "@proxy", "unknown proxy scheme 'ftp'"},
        {"http://op3rator:" + s + "@proxy:0", "port"},
        {"http://op3rator:" + s + "@proxy:99999", "port"},
        {"http://op3rator:" + s + "@proxy:x", "port"},
        {"http://op3rator:" + s, "port"}, // the host forgotten: user and password read as host and port
        {"http://op3rator:" + s + "@proxy:3128/path", "no path"},
        {"http://op3rator:" + s + "@proxy:3128?q", "no path"},
        {"http://op3rator:" + s + "%zz@proxy:3128", "%25"},
        {"http://op3rator:" + s + "%4@proxy:3128", "%25"},
        {"http://:" + s + "@proxy:3128", "no user name"},
        {"http://op3rator:" + s + "@", "missing"},
        {"http://op3rator:" + s + "@[::1:3128", "'[' without ']'"},
        {"http://op3rator:" + s + "@[proxy]:3128", "not an IPv6 address"},
        {"http://op3rator:" + s + "@pro xy:3128", "not a host name"},
        {"socks5://op3rator@proxy:1080", "RFC 1929"},
        {"socks5://op3rator:" + std::string(256, 'p') + "@proxy:1080", "RFC 1929"},
    };
    for (const auto &c : cases) {
        const std::string error = proxy_error(c.url);
        INFO(c.url << " -> " << error);
        CHECK(error.find(c.word) != std::string::npos);
        CHECK(error.find(s) == std::string::npos);
        CHECK(error.find("op3rator") == std::string::npos);
    }
}

TEST_CASE("describe() shows the proxy and its user, never the password")
{
    ProxyOptions p = proxy_ok(std::string("http://op%40corp:") + k_secret + "@proxy.example:3128");
    CHECK(pytun::describe(p) == "http://op%40corp@proxy.example:3128");
    CHECK(pytun::describe(proxy_ok("socks5://[::1]:1080")) == "socks5://[::1]:1080");
    CHECK(pytun::describe(ProxyOptions{}) == "none");

    pytun::TunnelOptions o;
    o.username = "tunnel";
    CHECK(pytun::describe_route(o).empty());
    o.proxy = p;
    CHECK(pytun::describe_route(o) == "through the proxy http://op%40corp@proxy.example:3128");
    o.jump.host = "jump.example";
    o.jump.port = 2222;
    CHECK(pytun::describe_route(o) ==
          "through the jump host tunnel@jump.example:2222 (reached through the proxy "
          "http://op%40corp@proxy.example:3128)");
    o.proxy = {};
    o.jump.username = "hop";
    CHECK(pytun::describe_route(o) == "through the jump host hop@jump.example:2222");
}

TEST_CASE("jump hosts as ssh -J takes them")
{
    std::string error;
    auto j = pytun::parse_jump("jump.example", error);
    REQUIRE(j);
    CHECK(j->host == "jump.example");
    CHECK(j->port == 22);
    CHECK(j->username.empty());
    j = pytun::parse_jump("ops@10.1.2.3:2222", error);
    REQUIRE(j);
    CHECK(j->username == "ops");
    CHECK(j->host == "10.1.2.3");
    CHECK(j->port == 2222);
    j = pytun::parse_jump("[fd00::2]:22", error);
    REQUIRE(j);
    CHECK(j->host == "fd00::2");
    j = pytun::parse_jump("fd00::2", error);
    REQUIRE(j);
    CHECK(j->host == "fd00::2");
    CHECK(pytun::describe(*j) == "[fd00::2]:22");

    for (const std::string bad : {"a,b", "@host", "us er@host", "host:0", "host:x", "", "[fd00::2", "ho st"}) {
        INFO(bad);
        CHECK_FALSE(pytun::parse_jump(bad, error));
        CHECK(error.find("[USER@]HOST[:PORT]") != std::string::npos);
    }
}

TEST_CASE("no_proxy: names and their subdomains, addresses and blocks, ports, '*'")
{
    using pytun::no_proxy_matches;
    CHECK_FALSE(no_proxy_matches("", "bastion.example", 22));
    CHECK(no_proxy_matches("*", "anything", 22));
    CHECK(no_proxy_matches("localhost, example.com", "example.com", 22));
    CHECK(no_proxy_matches("example.com", "ssh.EXAMPLE.com.", 22));
    CHECK_FALSE(no_proxy_matches("example.com", "badexample.com", 22));
    CHECK(no_proxy_matches(".example.com", "example.com", 22));
    CHECK(no_proxy_matches(".example.com", "a.b.example.com", 22));
    CHECK(no_proxy_matches("*.example.com", "a.example.com", 22));
    CHECK(no_proxy_matches(" 10.0.0.0/8 ,192.168.1.1", "10.20.30.40", 22));
    CHECK(no_proxy_matches("10.0.0.0/8,192.168.1.1", "192.168.1.1", 22));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/8", "11.0.0.1", 22));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/8", "ten.example", 22)); // names are not resolved
    CHECK(no_proxy_matches("fd00::/64", "fd00::5", 22));
    CHECK(no_proxy_matches("fd00::/64", "[fd00::5]", 22));
    CHECK(no_proxy_matches("[fd00::/64]:22", "fd00::5", 22));
    CHECK_FALSE(no_proxy_matches("[fd00::/64]:22", "fd00::5", 2222));
    CHECK(no_proxy_matches("bastion.example:2222", "bastion.example", 2222));
    CHECK_FALSE(no_proxy_matches("bastion.example:2222", "bastion.example", 22));
    CHECK(no_proxy_matches("no such thing!,,example.com", "example.com", 22)); // junk skipped, as curl does
}

TEST_CASE("HTTP CONNECT: the request, with Basic authentication when a user is given")
{
    const std::string agent = "User-Agent: pytun/" + pytun::version() + "\r\n";
    HttpConnectHandshake plain("bastion.example", 22);
    CHECK(plain.request() == "CONNECT bastion.example:22 HTTP/1.1\r\nHost: bastion.example:22\r\n" + agent + "\r\n");
    HttpConnectHandshake v6("fd00::1", 2222, "user", "pass");
    CHECK(v6.request() == "CONNECT [fd00::1]:2222 HTTP/1.1\r\nHost: [fd00::1]:2222\r\n" + agent +
                              "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"); // base64("user:pass")
    CHECK(HttpConnectHandshake("bastion\r\nX-Evil: 1", 22).request().empty());
    CHECK(HttpConnectHandshake("two words", 22).request().empty());
}

TEST_CASE("HTTP CONNECT: a 2xx answer in any split ends the handshake; the SSH banner after it is kept")
{
    const std::string banner = "SSH-2.0-OpenSSH_9.2\r\n";
    const std::vector<std::string> answers = {
        "HTTP/1.1 200 Connection established\r\n\r\n",
        "HTTP/1.0 200 OK\r\nProxy-Agent: tinyproxy/1.11.1\r\nVia: 1.1 proxy\r\n\r\n",
        "HTTP/1.1 200\n\n",                                                   // bare LF, no reason
        "\r\nHTTP/1.1 200 OK\r\n\r\n",                                        // a stray empty line first
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX: y\r\n\r\n", // an interim answer
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",                   // no body for CONNECT
    };
    for (const auto &answer : answers)
        for (std::size_t piece : {0, 1, 2, 3, 7, 64}) {
            INFO(answer << " in pieces of " << piece);
            HttpConnectHandshake h("bastion.example", 22);
            const Outcome o = feed(h, answer + banner, piece);
            CHECK(o.kind == Step::Kind::complete);
            CHECK(o.early == banner);
            CHECK(h.status() / 100 == 2);
            // More bytes after the end are the SSH server's too.
            CHECK(h.feed("more").kind == Step::Kind::complete);
            CHECK(h.take_early_data() == "more");
        }
}

TEST_CASE("HTTP CONNECT: refusals and authentication requests say what the proxy said")
{
    Outcome o = answer_to("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    CHECK(o.kind == Step::Kind::refused);
    CHECK(o.reason == "HTTP 403 Forbidden");
    o = answer_to("HTTP/1.1 502 Bad Gateway\r\n\r\nbody", 5);
    CHECK(o.kind == Step::Kind::refused);
    CHECK(o.reason == "HTTP 502 Bad Gateway");
    CHECK(o.early.empty());

    o = answer_to("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n\r\n");
    CHECK(o.kind == Step::Kind::auth_failed);
    CHECK(o.reason == "HTTP 407 Proxy Authentication Required");
    o = answer_to("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\n"
                  "proxy-authenticate: Negotiate abc\r\n\r\n",
                  3);
    CHECK(o.kind == Step::Kind::auth_failed);
    CHECK(o.reason.find("it asks for NTLM, Negotiate, and pytun speaks Basic only") != std::string::npos);
    CHECK(o.reason.find(k_secret) == std::string::npos);
    // tinyproxy answers wrong credentials with 401: an authentication failure
    // when we sent some, a plain refusal when we did not.
    o = answer_to("HTTP/1.0 401 Unauthorized\r\n\r\n");
    CHECK(o.kind == Step::Kind::auth_failed);
    CHECK(o.reason == "HTTP 401 Unauthorized");
    HttpConnectHandshake anonymous("bastion.example", 22);
    CHECK(feed(anonymous, "HTTP/1.0 401 Unauthorized\r\n\r\n").kind == Step::Kind::refused);
}

TEST_CASE("HTTP CONNECT: what no HTTP proxy would answer is refused, within bounds")
{
    // Not HTTP at all (an SSH server where the proxy should be), escaped.
    Outcome o = answer_to("SSH-2.0-OpenSSH_9.2\r\n");
    CHECK(o.kind == Step::Kind::refused);
    CHECK(o.reason.find("'SSH-2.0-OpenSSH_9.2'") != std::string::npos);
    o = answer_to("\x1b[2J\x07junk\r\n");
    CHECK(o.kind == Step::Kind::refused);
    CHECK(o.reason.find("\\x1b[2J\\x07junk") != std::string::npos);
    CHECK(answer_to("HTTP/2 200 OK\r\n\r\n").kind == Step::Kind::refused);
    CHECK(answer_to("HTTP/1.1 2000 OK\r\n\r\n").kind == Step::Kind::refused);
    CHECK(answer_to("HTTP/1.1 200 OK\r\n folded: header\r\n\r\n").kind == Step::Kind::refused);
    CHECK(answer_to("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n").kind == Step::Kind::refused);
    CHECK(answer_to("HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n").kind == Step::Kind::refused);

    // Bounded: more header lines, or more bytes, than any proxy sends.
    std::string many = "HTTP/1.1 200 OK\r\n";
    for (std::size_t i = 0; i <= HttpConnectHandshake::k_max_header_lines; ++i)
        many += "X-" + std::to_string(i) + ": y\r\n";
    o = answer_to(many + "\r\n");
    CHECK(o.kind == Step::Kind::refused);
    CHECK(o.reason.find("header lines") != std::string::npos);
    const std::string endless = "HTTP/1.1 200 OK\r\nX: " + std::string(HttpConnectHandshake::k_max_header_bytes, 'a');
    for (std::size_t piece : {0, 1000}) {
        o = answer_to(endless, piece);
        CHECK(o.kind == Step::Kind::refused);
        CHECK(o.reason.find("longer than 16 KiB") != std::string::npos);
    }
    // Interim answers count against the same bounds.
    std::string interims;
    while (interims.size() <= HttpConnectHandshake::k_max_header_bytes)
        interims += "HTTP/1.1 100 Continue\r\n\r\n";
    CHECK(answer_to(interims).kind == Step::Kind::refused);
    // A failure is final.
    HttpConnectHandshake h("bastion.example", 22);
    CHECK(feed(h, "nonsense\r\n").kind == Step::Kind::refused);
    CHECK(h.feed("HTTP/1.1 200 OK\r\n\r\n").kind == Step::Kind::refused);
    CHECK(h.take_early_data().empty());
}

TEST_CASE("config: proxy in [pytun] for every tunnel, none, a tunnel's own proxy and jump host")
{
    TempDir dir;
    dir.file("key", k_key);
    dir.file("jump_key", k_key);
    dir.file("known_hosts", std::string("bastion.example") + k_host_key + "bastion.internal" + k_host_key);
    dir.file("jump_known_hosts", std::string("[gw.example.com]:2222") + k_host_key);
    const std::string text = std::string("[pytun]\n"
                                         "tunnel_manager_id = \"m\"\n"
                                         "proxy = \"http://ops:") +
                             k_secret +
                             "@proxy.corp:3128\"\n"
                             "\n"
                             "[[tunnel]]\n"
                             "tunnel_name = \"inherits\"\n"
                             "server_host = \"bastion.example\"\n"
                             "remote_host = \"ldap\"\n"
                             "username = \"tunnel\"\n"
                             "keyfile = \"key\"\n"
                             "server_key = \"known_hosts\"\n"
                             "\n"
                             "[[tunnel]]\n"
                             "tunnel_name = \"direct\"\n"
                             "server_host = \"bastion.example\"\n"
                             "port = 4001\n"
                             "remote_host = \"ldap\"\n"
                             "username = \"tunnel\"\n"
                             "keyfile = \"key\"\n"
                             "server_key = \"known_hosts\"\n"
                             "proxy = \"none\"\n"
                             "\n"
                             "[[tunnel]]\n"
                             "tunnel_name = \"jumps\"\n"
                             "server_host = \"bastion.internal\"\n"
                             "remote_host = \"ldap\"\n"
                             "username = \"tunnel\"\n"
                             "keyfile = \"key\"\n"
                             "server_key = \"known_hosts\"\n"
                             "proxy = \"socks5://socks.corp:1080\"\n"
                             "jump = \"hop@gw.example.com:2222\"\n"
                             "jump_keyfile = \"jump_key\"\n"
                             "jump_server_key = \"jump_known_hosts\"\n";
    pytun::LoadResult r = pytun::load_config_from_string(text, "toml", dir.path.string());
    INFO(all_diagnostics(r));
    REQUIRE(r.ok());
    CHECK(r.diagnostics.empty());
    const auto &tunnels = r.config->tunnels;
    REQUIRE(tunnels.size() == 3);

    pytun::TunnelOptions inherits = pytun::to_tunnel_options(tunnels[0]);
    CHECK(inherits.proxy.kind == ProxyOptions::Kind::http);
    CHECK(inherits.proxy.host == "proxy.corp");
    CHECK(inherits.proxy.password == k_secret);
    CHECK(inherits.jump.host.empty());

    CHECK(tunnels[1].proxy == "none");
    CHECK(pytun::to_tunnel_options(tunnels[1]).proxy.kind == ProxyOptions::Kind::none);

    pytun::TunnelOptions jumps = pytun::to_tunnel_options(tunnels[2]);
    CHECK(jumps.proxy == proxy_ok("socks5://socks.corp:1080"));
    CHECK(jumps.jump.host == "gw.example.com");
    CHECK(jumps.jump.port == 2222);
    CHECK(jumps.jump.username == "hop");
    CHECK(jumps.jump.key_file == (dir.path / "jump_key").string());
    CHECK(jumps.jump.known_hosts_file == (dir.path / "jump_known_hosts").string());
}

TEST_CASE("config: bad proxy and jump keys are errors with their line; the password is never quoted")
{
    TempDir dir;
    dir.file("key", k_key);
    const std::string s = k_secret;
    const std::string text = "[pytun]\n"                                             // 1
                             "tunnel_manager_id = \"m\"\n"                           // 2
                             "proxy = \"https://ops:" + s + "@proxy.corp:3128\"\n"  // 3
                             "\n"                                                    // 4
                             "[[tunnel]]\n"                                          // 5
                             "server_host = \"bastion.example\"\n"                   // 6
                             "remote_host = \"ldap\"\n"                              // 7
                             "username = \"tunnel\"\n"                               // 8
                             "keyfile = \"key\"\n"                                   // 9
                             "proxy = \"http://ops:" + s + "@proxy.corp:80x\"\n"    // 10
                             "jump = \"a@b, c@d\"\n"                                 // 11
                             "jump_keyfile = \"missing_key\"\n"                      // 12
                             "\n"                                                    // 13
                             "[[tunnel]]\n"                                          // 14
                             "tunnel_name = \"b\"\n"                                 // 15
                             "server_host = \"bastion.example\"\n"                   // 16
                             "port = 4001\n"                                         // 17
                             "remote_host = \"ldap\"\n"                              // 18
                             "username = \"tunnel\"\n"                               // 19
                             "keyfile = \"key\"\n"                                   // 20
                             "jump_server_key = \"key\"\n";                          // 21
    pytun::LoadResult r = pytun::load_config_from_string(text, "toml", dir.path.string());
    const std::string all = all_diagnostics(r);
    INFO(all);
    CHECK_FALSE(r.ok());
    CHECK(all.find(s) == std::string::npos);
    CHECK(all.find("<string>:3: proxy: https:// proxies") != std::string::npos);
    CHECK(all.find("<string>:10: proxy: the port of the proxy's host") != std::string::npos);
    CHECK(all.find("<string>:11: jump: 'a@b, c@d': one jump host only") != std::string::npos);
    CHECK(all.find("<string>:12: jump_keyfile: " + (dir.path / "missing_key").string() + " does not exist") !=
          std::string::npos);
    CHECK(all.find("warning: <string>:21: jump_server_key: set but jump is not: ignored") != std::string::npos);
}
