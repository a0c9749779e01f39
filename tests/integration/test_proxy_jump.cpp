// SPDX-License-Identifier: MIT
// Bastions behind a proxy or a jump host, against real peers on loopback:
// tinyproxy (HTTP CONNECT, with and without Basic authentication), microsocks
// (SOCKS5 with RFC 1929) and a second OpenSSH sshd as the jump host. Data
// through a reverse tunnel and a -L forward across each; every connection to
// the bastion (the session pool's extra ones too) goes the configured way;
// both hosts' keys are verified and each hop's failure names that hop; the
// proxy's password is in no message.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <pytun/error.h>
#include <pytun/tunnel.h>

#include "bulk_transfer.h"
#include "fixture.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
using pytun::Errc;
namespace t = pytun::test;

namespace {

constexpr const char *k_user = "pxuser";
constexpr const char *k_password = "Px-pw.7f3a9";

std::size_t count_of(const std::string &text, const std::string &what)
{
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
        ++n;
    return n;
}

pytun::ProxyOptions proxy_of(const std::string &url)
{
    std::string error;
    auto proxy = pytun::parse_proxy(url, error);
    REQUIRE_MESSAGE(proxy, error);
    return *proxy;
}

/// A reverse tunnel to `sink` (the first forward) and a -L forward to
/// `source`, through `server`.
pytun::TunnelOptions both_ways(const t::SshServer &server, const t::SinkService &sink,
                               const t::SourceService &source)
{
    pytun::TunnelOptions o = t::tunnel_options(server, sink.port());
    o.forwards.push_back(pytun::LocalForward{"127.0.0.1", 0, "127.0.0.1", source.port()});
    o.max_sessions = 4;
    return o;
}

constexpr std::size_t k_bulk = 8u << 20;

/// 8 MiB up through the reverse tunnel and down through the -L forward.
void check_data(pytun::Tunnel &tunnel, const t::SinkService &sink, t::SourceService &source)
{
    t::check_upload(tunnel, sink, t::random_bytes(k_bulk, 5));
    const std::uint16_t local = tunnel.forwards().at(1).bound_port;
    int fd = t::connect_tcp(local);
    REQUIRE(fd >= 0);
    auto got = t::read_until_eof(fd);
    ::close(fd);
    REQUIRE(got.size() == k_bulk);
    REQUIRE(t::wait_until([&] { return !source.sent_sha256().empty(); }, 10s));
    CHECK(t::sha256_hex(got.data(), got.size()) == source.sent_sha256().back());
}

/// 40 clients at once through a -L forward to an echo service.
void check_burst(std::uint16_t port)
{
    auto result = t::run_echo_load(port, 40, 16 * 1024, 120s);
    for (const auto &error : result.errors)
        MESSAGE(error);
    CHECK(result.ok == 40);
}

pytun::TunnelOptions echo_forward(const t::SshServer &server, const t::EchoService &echo)
{
    pytun::TunnelOptions o = t::tunnel_options(server, 0);
    o.remote_host.clear();
    o.forwards = {pytun::LocalForward{"127.0.0.1", 0, "127.0.0.1", echo.port()}};
    o.max_sessions = 4;
    return o;
}

/// Takes connections and reads them, never answering: a proxy that hangs.
class MuteService final : public t::TcpService {
public:
    MuteService() { start(); }
    ~MuteService() override { stop(); }

protected:
    void serve(int fd) override
    {
        char buffer[4096];
        while (::read(fd, buffer, sizeof buffer) > 0) {
        }
    }
};

std::error_code start_failing(pytun::TunnelOptions o, std::string &message,
                              std::chrono::milliseconds timeout = 10s)
{
    o.connect_timeout = timeout;
    pytun::Tunnel tunnel(std::move(o));
    const std::error_code ec = tunnel.start();
    message = tunnel.last_error_message();
    MESSAGE(message);
    return ec;
}

/// Every SSH login sshd saw came from `from`, and there were at least `n`
/// (the fixture's readiness check connects too, but never logs in). The
/// pool's extra sessions may still be logging in when a burst is over.
void check_connections_from(const t::SshServer &server, const std::string &from, std::size_t n)
{
    CHECK(t::wait_until([&] { return count_of(server.log(), "Accepted publickey for ") >= n; }, 30s));
    const std::string log = server.log();
    const std::size_t logins = count_of(log, "Accepted publickey for ");
    CHECK(count_of(log, "Accepted publickey for " + server.user() + " from " + from + " port") == logins);
}

/// A known_hosts file naming both servers.
std::string both_known_hosts(const t::SshServer &a, const t::SshServer &b)
{
    const std::string path = a.dir() + "/known_hosts_both";
    std::ofstream out(path);
    for (const auto *server : {&a, &b}) {
        std::ifstream in(server->known_hosts_bracketed());
        out << in.rdbuf();
    }
    return path;
}

} // namespace

TEST_CASE("HTTP CONNECT proxy (tinyproxy): both directions, without and with Basic authentication")
{
    t::SshServer bastion;
    t::EchoService echo;
    // The proxy connects onward from 127.0.0.3: sshd's log shows what it carried.
    for (const bool auth : {false, true}) {
        CAPTURE(auth);
        t::SinkService sink;
        t::SourceService source(k_bulk);
        t::ProxyServer proxy(t::ProxyServer::Kind::http, auth ? k_user : "", auth ? k_password : "", "127.0.0.3");
        pytun::TunnelOptions o = both_ways(bastion, sink, source);
        o.proxy = proxy_of(proxy.url());
        pytun::Tunnel tunnel(o);
        REQUIRE_MESSAGE(tunnel.start() == std::error_code{}, tunnel.last_error_message());
        check_data(tunnel, sink, source);
        tunnel.stop();

        pytun::TunnelOptions bo = echo_forward(bastion, echo);
        bo.proxy = o.proxy;
        pytun::Tunnel through(bo);
        REQUIRE(through.start() == std::error_code{});
        check_burst(through.listen_port());
        // The tunnel's own connection and the pool's extra ones: all through the proxy.
        check_connections_from(bastion, "127.0.0.3", 3);
        CHECK(proxy.log().find("CONNECT 127.0.0.1:" + std::to_string(bastion.port())) != std::string::npos);
        through.stop();
    }
}

TEST_CASE("HTTP CONNECT proxy: refusals are clear errors naming the proxy, never its password")
{
    t::SshServer bastion;
    t::ProxyServer proxy(t::ProxyServer::Kind::http, k_user, k_password);
    const std::string where = "127.0.0.1:" + std::to_string(proxy.port());
    pytun::TunnelOptions o = t::tunnel_options(bastion, 9);
    std::string message;

    SUBCASE("a wrong password")
    {
        o.proxy = proxy_of(proxy.url());
        o.proxy.password = "wrong-Secret-42";
        CHECK(start_failing(o, message) == Errc::proxy_auth_failed);
        CHECK(message.find(where) != std::string::npos);
        CHECK(message.find("did not accept the user name 'pxuser'") != std::string::npos);
        CHECK(message.find("HTTP 401") != std::string::npos); // tinyproxy's answer to wrong credentials
        CHECK(message.find("wrong-Secret-42") == std::string::npos);
        CHECK(message.find(k_password) == std::string::npos);
    }
    SUBCASE("no credentials for a proxy that asks for them")
    {
        o.proxy = proxy_of("http://" + where);
        CHECK(start_failing(o, message) == Errc::proxy_auth_failed);
        CHECK(message.find("asks for a user name and password") != std::string::npos);
        CHECK(message.find("http://USER:PASSWORD@" + where) != std::string::npos);
    }
    SUBCASE("the proxy cannot reach the bastion")
    {
        o.proxy = proxy_of(proxy.url());
        o.server_port = t::free_port();
        CHECK(start_failing(o, message) == Errc::proxy_failed);
        CHECK(message.find("did not connect to 127.0.0.1:" + std::to_string(o.server_port)) != std::string::npos);
        CHECK(message.find("HTTP 500") != std::string::npos);
        CHECK(message.find(k_password) == std::string::npos);
    }
    SUBCASE("the proxy is down")
    {
        o.proxy = proxy_of(proxy.url());
        proxy.stop();
        CHECK(start_failing(o, message) == Errc::proxy_failed);
        CHECK(message.find("cannot connect to the proxy http://pxuser@" + where) != std::string::npos);
    }
    SUBCASE("a proxy that never answers: connect_timeout covers its handshake")
    {
        MuteService mute;
        o.proxy = proxy_of("http://127.0.0.1:" + std::to_string(mute.port()));
        CHECK(start_failing(o, message, 2s) == Errc::proxy_failed);
        CHECK(message.find("the proxy http://127.0.0.1:" + std::to_string(mute.port()) + " did not answer") !=
              std::string::npos);
        CHECK(mute.accepted() == 1);
    }
    SUBCASE("something that is no proxy: the bastion itself")
    {
        o.proxy = proxy_of("http://127.0.0.1:" + std::to_string(bastion.port()));
        CHECK(start_failing(o, message) == Errc::proxy_failed);
        CHECK(message.find("'SSH-2.0-") != std::string::npos);
        CHECK(message.find("not an HTTP status line") != std::string::npos);
    }
}

TEST_CASE("SOCKS5 proxy (microsocks) with user name and password: both directions; a wrong password")
{
    t::SshServer bastion;
    t::SinkService sink;
    t::SourceService source(k_bulk);
    t::EchoService echo;
    t::ProxyServer proxy(t::ProxyServer::Kind::socks5, k_user, k_password, "127.0.0.4");
    pytun::TunnelOptions o = both_ways(bastion, sink, source);
    o.proxy = proxy_of(proxy.url());
    {
        pytun::Tunnel tunnel(o);
        REQUIRE_MESSAGE(tunnel.start() == std::error_code{}, tunnel.last_error_message());
        check_data(tunnel, sink, source);
    }
    pytun::TunnelOptions bo = echo_forward(bastion, echo);
    bo.proxy = o.proxy;
    {
        pytun::Tunnel through(bo);
        REQUIRE(through.start() == std::error_code{});
        check_burst(through.listen_port());
    }
    check_connections_from(bastion, "127.0.0.4", 3);

    std::string message;
    o.proxy.password = "wrong-Secret-42";
    CHECK(start_failing(o, message) == Errc::proxy_auth_failed);
    CHECK(message.find("the SOCKS5 proxy socks5://pxuser@127.0.0.1:" + std::to_string(proxy.port())) !=
          std::string::npos);
    CHECK(message.find("refused our user name or password") != std::string::npos);
    CHECK(message.find("wrong-Secret-42") == std::string::npos);
    CHECK(message.find(k_password) == std::string::npos);
}

TEST_CASE("jump host: both directions through a second sshd, every connection by way of it")
{
    t::SshServer bastion;
    t::SshServer jump;
    jump.configure("LogLevel DEBUG1"); // logs each direct-tcpip it opens
    t::SinkService sink;
    t::SourceService source(k_bulk);
    t::EchoService echo;
    const std::string to_bastion = "target 127.0.0.1 port " + std::to_string(bastion.port());

    SUBCASE("the jump host's own key and known_hosts")
    {
        pytun::TunnelOptions o = both_ways(bastion, sink, source);
        o.jump = pytun::JumpHost{"127.0.0.1", jump.port(), "", jump.key_ed25519(), "", jump.known_hosts_bracketed()};
        pytun::Tunnel tunnel(o);
        REQUIRE_MESSAGE(tunnel.start() == std::error_code{}, tunnel.last_error_message());
        check_data(tunnel, sink, source);
        CHECK(count_of(jump.log(), to_bastion) >= 1);
        CHECK(count_of(jump.log(), "Accepted publickey for " + jump.user()) >= 1);
    }
    SUBCASE("defaults: the tunnel's key and known_hosts serve both hops; the pool's extra connections jump too")
    {
        std::ifstream pub(bastion.key_ed25519() + ".pub");
        std::string line;
        std::getline(pub, line);
        jump.authorize(line);
        pytun::TunnelOptions o = echo_forward(bastion, echo);
        o.known_hosts_file = both_known_hosts(bastion, jump);
        o.jump.host = "127.0.0.1";
        o.jump.port = jump.port();
        pytun::Tunnel tunnel(o);
        REQUIRE_MESSAGE(tunnel.start() == std::error_code{}, tunnel.last_error_message());
        check_burst(tunnel.listen_port());
        CHECK(t::wait_until([&] { return count_of(jump.log(), to_bastion) >= 3; }, 30s));
    }
}

TEST_CASE("jump host: each hop's failure names that hop")
{
    t::SshServer bastion;
    t::SshServer jump;
    pytun::TunnelOptions o = t::tunnel_options(bastion, 9);
    o.jump = pytun::JumpHost{"127.0.0.1", jump.port(), "", jump.key_ed25519(), "", jump.known_hosts_bracketed()};
    const std::string jump_name = "the jump host " + jump.user() + "@127.0.0.1:" + std::to_string(jump.port());
    const std::string bastion_name = "[127.0.0.1]:" + std::to_string(bastion.port());
    std::string message;

    SUBCASE("the jump host's key changed")
    {
        o.jump.known_hosts_file = jump.known_hosts_changed();
        CHECK(start_failing(o, message) == Errc::host_key_changed);
        CHECK(message.starts_with(jump_name + ": "));
        CHECK(message.find("[127.0.0.1]:" + std::to_string(jump.port())) != std::string::npos);
    }
    SUBCASE("the bastion's key is unknown")
    {
        o.known_hosts_file = bastion.known_hosts_unknown();
        CHECK(start_failing(o, message) == Errc::host_key_unknown);
        CHECK_FALSE(message.starts_with("the jump host"));
        CHECK(message.find(bastion_name) != std::string::npos);
    }
    SUBCASE("the jump host does not accept the key")
    {
        o.jump.key_file = jump.key_unauthorized();
        CHECK(start_failing(o, message) == Errc::key_not_authorized);
        CHECK(message.starts_with(jump_name + ": "));
    }
    SUBCASE("the bastion does not accept the key")
    {
        o.key_file = bastion.key_unauthorized();
        CHECK(start_failing(o, message) == Errc::key_not_authorized);
        CHECK_FALSE(message.starts_with("the jump host"));
        CHECK(message.find(std::to_string(bastion.port())) != std::string::npos);
    }
    SUBCASE("the jump host may not forward")
    {
        jump.configure("AllowTcpForwarding no");
        CHECK(start_failing(o, message) == Errc::bastion_unreachable);
        CHECK(message.starts_with(jump_name + " may not connect to the bastion 127.0.0.1:" +
                                  std::to_string(bastion.port())));
    }
    SUBCASE("the bastion is down behind the jump host")
    {
        o.server_port = t::free_port();
        CHECK(start_failing(o, message) == Errc::bastion_unreachable);
        CHECK(message.starts_with(jump_name + " cannot connect to the bastion"));
    }
    SUBCASE("the jump host is down")
    {
        jump.stop();
        CHECK(start_failing(o, message) == Errc::bastion_unreachable);
        CHECK(message.starts_with(jump_name + ": cannot connect to 127.0.0.1:" + std::to_string(jump.port())));
    }
    SUBCASE("the jump host goes away while the tunnel serves")
    {
        t::EchoService echo;
        pytun::TunnelOptions eo = echo_forward(bastion, echo);
        eo.jump = o.jump;
        pytun::Tunnel through(eo);
        REQUIRE(through.start() == std::error_code{});
        check_burst(through.listen_port());
        jump.stop(); // the listener and its sessions
        std::error_code reason;
        REQUIRE(through.wait_for(20s, reason));
        MESSAGE(through.last_error_message());
        CHECK(through.last_error_message().starts_with(jump_name + ": "));
    }
}

TEST_CASE("jump host reached through an HTTP proxy")
{
    t::SshServer bastion;
    t::SshServer jump;
    t::SinkService sink;
    t::SourceService source(k_bulk);
    t::ProxyServer proxy(t::ProxyServer::Kind::http, k_user, k_password, "127.0.0.3");
    pytun::TunnelOptions o = both_ways(bastion, sink, source);
    o.jump = pytun::JumpHost{"127.0.0.1", jump.port(), "", jump.key_ed25519(), "", jump.known_hosts_bracketed()};
    o.proxy = proxy_of(proxy.url());
    pytun::Tunnel tunnel(o);
    REQUIRE_MESSAGE(tunnel.start() == std::error_code{}, tunnel.last_error_message());
    check_data(tunnel, sink, source);
    // The proxy carried the connection to the jump host, not to the bastion.
    check_connections_from(jump, "127.0.0.3", 1);
    CHECK(proxy.log().find("CONNECT 127.0.0.1:" + std::to_string(jump.port())) != std::string::npos);
    CHECK(proxy.log().find("CONNECT 127.0.0.1:" + std::to_string(bastion.port())) == std::string::npos);
}
