// SPDX-License-Identifier: MIT
// Forwards that open channels (-L, -D) and reverse SOCKS, several over one
// connection, against a real OpenSSH sshd on loopback: data integrity both
// ways, concurrency, half-close, SOCKS replies and allowlists, a busy local
// port, a bastion restart and a graceful stop under load.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <pytun/error.h>
#include <pytun/manager.h>
#include <pytun/tunnel.h>

#include "bulk_transfer.h"
#include "fixture.h"
#include "socks_client.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
using pytun::Errc;
namespace t = pytun::test;

namespace {

t::SshServer &shared_server()
{
    static t::SshServer server;
    return server;
}

/// The fixture's connection settings with `forwards` and no reverse tunnel.
pytun::TunnelOptions forward_options(const t::SshServer &server, std::vector<pytun::ForwardSpec> forwards)
{
    pytun::TunnelOptions o = t::tunnel_options(server, 0);
    o.remote_host.clear();
    o.forwards = std::move(forwards);
    return o;
}

pytun::LocalForward local_to(std::uint16_t target_port, std::uint16_t listen_port = 0)
{
    return pytun::LocalForward{"127.0.0.1", listen_port, "127.0.0.1", target_port};
}

pytun::DynamicForward socks(std::vector<std::string> allow = {})
{
    pytun::DynamicForward d;
    d.listen_port = 0;
    d.allow = std::move(allow);
    return d;
}

/// A listening socket on 127.0.0.1 that holds its port while it lives.
struct BusyPort {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    std::uint16_t port = 0;
    BusyPort()
    {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(addr);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
        REQUIRE(::listen(fd, 4) == 0);
        REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0);
        port = ntohs(addr.sin_port);
    }
    ~BusyPort() { ::close(fd); }
};

/// A port nothing listens on.
std::uint16_t dead_port()
{
    BusyPort p;
    return p.port; // closed when `p` goes
}

/// One 32-byte echo through an established connection.
bool echo_once(int fd)
{
    auto data = t::random_bytes(32, static_cast<std::uint64_t>(fd));
    if (!t::send_all(fd, data.data(), data.size()))
        return false;
    std::vector<std::uint8_t> got(32);
    std::size_t n = 0;
    while (n < got.size()) {
        ssize_t r = ::recv(fd, got.data() + n, got.size() - n, 0);
        if (r <= 0)
            return false;
        n += static_cast<std::size_t>(r);
    }
    return got == data;
}

bool echo_via_port(std::uint16_t port)
{
    int fd = t::connect_tcp(port, 2s);
    if (fd < 0)
        return false;
    bool ok = echo_once(fd);
    ::close(fd);
    return ok;
}

bool echo_via_socks(std::uint16_t proxy_port, std::uint16_t echo_port)
{
    auto r = t::socks5_connect(proxy_port, "127.0.0.1", echo_port);
    if (r.fd < 0)
        return false;
    bool ok = echo_once(r.fd);
    ::close(r.fd);
    return ok;
}

std::uint16_t bound_port(const pytun::Tunnel &tunnel, std::size_t forward)
{
    auto forwards = tunnel.forwards();
    REQUIRE(forward < forwards.size());
    return forwards[forward].bound_port;
}

} // namespace

TEST_CASE("-L: 64 MiB each way arrive intact")
{
    auto &server = shared_server();
    constexpr std::size_t size = 64u << 20;
    SUBCASE("upload")
    {
        t::SinkService sink;
        pytun::Tunnel tunnel(forward_options(server, {local_to(sink.port())}));
        REQUIRE(tunnel.start() == std::error_code{});
        t::check_upload(tunnel, sink, t::random_bytes(size, 11));
        CHECK(tunnel.stats().bytes_from_service == size);
    }
    SUBCASE("download")
    {
        t::SourceService source(size);
        pytun::Tunnel tunnel(forward_options(server, {local_to(source.port())}));
        REQUIRE(tunnel.start() == std::error_code{});
        t::check_download(tunnel, source, size);
        CHECK(tunnel.stats().bytes_to_service == size);
    }
}

TEST_CASE("-L: 500 concurrent connections intact")
{
    auto &server = shared_server();
    t::EchoService echo;
    pytun::Tunnel tunnel(forward_options(server, {local_to(echo.port())}));
    REQUIRE(tunnel.start() == std::error_code{});
    auto result = t::run_echo_load(tunnel.listen_port(), 500, 64 * 1024, 180s);
    for (const auto &error : result.errors)
        MESSAGE(error);
    CHECK(result.ok == 500);
    CHECK(result.failed == 0);
    CHECK(tunnel.stats().connections_total == 500);
}

TEST_CASE("-L: half-close carries the request's end and the whole answer")
{
    auto &server = shared_server();
    constexpr std::size_t answer_bytes = 300000;
    t::HalfCloseService service(answer_bytes);
    pytun::Tunnel tunnel(forward_options(server, {local_to(service.port())}));
    REQUIRE(tunnel.start() == std::error_code{});
    auto request = t::random_bytes(100000, 9);
    int fd = t::connect_tcp(tunnel.listen_port());
    REQUIRE(fd >= 0);
    REQUIRE(t::send_all(fd, request.data(), request.size()));
    REQUIRE(::shutdown(fd, SHUT_WR) == 0);
    auto answer = t::read_until_eof(fd, 20s);
    ::close(fd);
    const std::string head = "received 100000 bytes sha256=" + t::sha256_hex(request.data(), request.size()) + "\n";
    REQUIRE(answer.size() == head.size() + answer_bytes);
    CHECK(std::string(answer.begin(), answer.begin() + static_cast<long>(head.size())) == head);
}

TEST_CASE("-L: a busy local port is an error naming address and port; the other forwards still work")
{
    auto &server = shared_server();
    t::EchoService echo;
    BusyPort busy;
    const std::string where = "127.0.0.1:" + std::to_string(busy.port);

    SUBCASE("alone: the tunnel cannot start")
    {
        pytun::Tunnel tunnel(forward_options(server, {local_to(echo.port(), busy.port)}));
        CHECK(tunnel.start() == Errc::local_port_unavailable);
        CHECK(tunnel.last_error_message().find(where) != std::string::npos);
        CHECK(tunnel.last_error_message().find("in use") != std::string::npos);
    }
    SUBCASE("beside others: they serve, it is reported and retried")
    {
        pytun::Tunnel tunnel(forward_options(server, {local_to(echo.port(), busy.port), socks(), local_to(echo.port())}));
        REQUIRE(tunnel.start() == std::error_code{});
        auto forwards = tunnel.forwards();
        REQUIRE(forwards.size() == 3);
        CHECK_FALSE(forwards[0].serving);
        CHECK(forwards[0].error.find(where) != std::string::npos);
        CHECK(forwards[1].serving);
        CHECK(forwards[2].serving);
        CHECK(echo_via_port(forwards[2].bound_port));
        CHECK(echo_via_socks(forwards[1].bound_port, echo.port()));
        // Once the port is free the forward serves by itself.
        ::close(busy.fd);
        busy.fd = -1;
        REQUIRE(t::wait_until([&] { return tunnel.forwards()[0].serving; }, 10s));
        CHECK(echo_via_port(busy.port));
    }
}

TEST_CASE("-D: 64 MiB each way through SOCKS5 arrive intact")
{
    auto &server = shared_server();
    constexpr std::size_t size = 64u << 20;
    t::SinkService sink;
    t::SourceService source(size);
    pytun::Tunnel tunnel(forward_options(server, {socks()}));
    REQUIRE(tunnel.start() == std::error_code{});

    auto data = t::random_bytes(size, 21);
    auto up = t::socks5_connect(tunnel.listen_port(), "127.0.0.1", sink.port());
    REQUIRE(up.fd >= 0);
    REQUIRE(t::send_all(up.fd, data.data(), data.size()));
    ::shutdown(up.fd, SHUT_WR);
    t::read_until_eof(up.fd);
    ::close(up.fd);
    REQUIRE(t::wait_until([&] { return !sink.received().empty(); }, 30s));
    CHECK(sink.received()[0].sha256 == t::sha256_hex(data.data(), data.size()));

    auto down = t::socks5_connect(tunnel.listen_port(), "localhost", source.port()); // resolved by the bastion
    REQUIRE(down.fd >= 0);
    auto got = t::read_until_eof(down.fd);
    ::close(down.fd);
    REQUIRE(got.size() == size);
    REQUIRE(t::wait_until([&] { return !source.sent_sha256().empty(); }, 10s));
    CHECK(t::sha256_hex(got.data(), got.size()) == source.sent_sha256()[0]);
}

TEST_CASE("-D: curl through SOCKS5 with the name resolved by the bastion, and SOCKS4a")
{
    if (std::system("command -v curl >/dev/null 2>&1") != 0)
        t::skip("curl is not installed");
    auto &server = shared_server();
    // A real HTTP server with a file to fetch.
    const std::filesystem::path dir = std::filesystem::path(server.dir()) / "www";
    std::filesystem::create_directories(dir);
    const std::string body = "hello through SOCKS " + std::to_string(::getpid()) + "\n";
    std::ofstream(dir / "index.txt") << body;
    const std::uint16_t http_port = dead_port();
    const std::string log = (dir.parent_path() / "http.log").string();
    pid_t http = t::spawn_process({"python3", "-m", "http.server", std::to_string(http_port), "--bind", "127.0.0.1",
                                   "--directory", dir.string()},
                                  log);
    REQUIRE(t::wait_until([&] { return t::tcp_port_accepts(http_port); }, 10s));

    pytun::Tunnel tunnel(forward_options(server, {socks()}));
    REQUIRE(tunnel.start() == std::error_code{});
    const std::string out = (dir.parent_path() / "curl.out").string();
    const std::string url = "http://localhost:" + std::to_string(http_port) + "/index.txt";
    for (const char *mode : {"--socks5-hostname", "--socks4a"}) {
        std::filesystem::remove(out);
        const int status = t::run_process({"curl", "-sS", "--max-time", "10", mode,
                                           "127.0.0.1:" + std::to_string(tunnel.listen_port()), "-o", out, url},
                                          out + ".log");
        CHECK_MESSAGE(status == 0, mode);
        std::ifstream in(out);
        std::string fetched((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        CHECK_MESSAGE(fetched == body, mode);
    }
    t::end_process(http);
}

TEST_CASE("-D: SOCKS replies for a refused destination and for one outside the allowlist")
{
    // sshd at DEBUG1 logs every direct-tcpip it is asked for: proof that a
    // refused destination never reached it.
    t::SshServer server;
    server.configure("LogLevel DEBUG1");
    t::EchoService echo;
    const std::uint16_t closed = dead_port();
    const std::uint16_t outside = dead_port();

    pytun::Tunnel tunnel(forward_options(server, {socks({"127.0.0.1:" + std::to_string(echo.port()),
                                                         "127.0.0.1:" + std::to_string(closed)})}));
    REQUIRE(tunnel.start() == std::error_code{});
    const std::uint16_t proxy = tunnel.listen_port();

    CHECK(echo_via_socks(proxy, echo.port()));
    CHECK(t::socks5_connect(proxy, "127.0.0.1", closed).reply == 0x05);   // refused by the destination
    CHECK(t::socks5_connect(proxy, "127.0.0.1", outside).reply == 0x02);  // not allowed
    CHECK(t::socks5_connect(proxy, "example.invalid", 80).reply == 0x02); // names need a name rule
    CHECK(t::socks4a_connect(proxy, "127.0.0.1", outside).reply == 0x5B);
    REQUIRE(t::wait_until([&] { return server.log().find("port " + std::to_string(closed)) != std::string::npos; },
                          5s));
    CHECK(server.log().find("port " + std::to_string(echo.port())) != std::string::npos);
    CHECK(server.log().find("port " + std::to_string(outside)) == std::string::npos);
    CHECK(server.log().find("example.invalid") == std::string::npos);
    CHECK(tunnel.stats().connections_failed >= 3);
}

TEST_CASE("-D: username and password (RFC 1929)")
{
    auto &server = shared_server();
    t::EchoService echo;
    pytun::DynamicForward d = socks();
    d.username = "alice";
    d.password = "s3cret pass";
    pytun::Tunnel tunnel(forward_options(server, {d}));
    REQUIRE(tunnel.start() == std::error_code{});
    auto good = t::socks5_connect(tunnel.listen_port(), "127.0.0.1", echo.port(), "alice", "s3cret pass");
    REQUIRE(good.fd >= 0);
    CHECK(echo_once(good.fd));
    ::close(good.fd);
    CHECK(t::socks5_connect(tunnel.listen_port(), "127.0.0.1", echo.port(), "alice", "wrong").fd < 0);
    CHECK(t::socks5_connect(tunnel.listen_port(), "127.0.0.1", echo.port()).reply == 0xFF); // no method
    CHECK(t::socks4a_connect(tunnel.listen_port(), "127.0.0.1", echo.port()).reply == 0x5B);
}

TEST_CASE("reverse SOCKS: allowed destinations only; no allowlist is a configuration error")
{
    auto &server = shared_server();
    t::EchoService echo;
    const std::uint16_t outside = dead_port();
    SUBCASE("allowlist")
    {
        pytun::RemoteDynamicForward r{"127.0.0.1", 0, {"127.0.0.1:" + std::to_string(echo.port()), "localhost"}};
        pytun::Tunnel tunnel(forward_options(server, {r}));
        REQUIRE(tunnel.start() == std::error_code{});
        const std::uint16_t bastion_port = bound_port(tunnel, 0);
        REQUIRE(bastion_port != 0);
        // A client of the bastion port speaks SOCKS to the connector.
        CHECK(echo_via_socks(bastion_port, echo.port()));
        auto by_name = t::socks5_connect(bastion_port, "localhost", echo.port());
        REQUIRE(by_name.fd >= 0);
        CHECK(echo_once(by_name.fd));
        ::close(by_name.fd);
        CHECK(t::socks5_connect(bastion_port, "127.0.0.1", outside).reply == 0x02);
        CHECK(t::socks5_connect(bastion_port, "127.0.0.2", echo.port()).reply == 0x02);
    }
    SUBCASE("without an allowlist")
    {
        pytun::Tunnel tunnel(forward_options(server, {pytun::RemoteDynamicForward{"127.0.0.1", 0, {}}}));
        CHECK(tunnel.start() == Errc::invalid_options);
        CHECK(tunnel.last_error_message().find("allow") != std::string::npos);
    }
}

TEST_CASE("a bastion restart: every forward of the connection comes back by itself")
{
    t::SshServer server;
    t::EchoService echo;
    pytun::ManagerOptions m;
    m.backoff_initial = 200ms;
    m.backoff_max = 1s;
    pytun::TunnelManager manager(m);
    pytun::TunnelOptions o = t::tunnel_options(server, echo.port());
    o.forwards = {local_to(echo.port()), socks()};
    REQUIRE(manager.apply({o}).error == std::error_code{});

    auto all_work = [&] {
        auto status = manager.status();
        if (status.size() != 1 || status[0].state != pytun::ManagedState::up || status[0].forwards.size() != 3)
            return false;
        const auto &f = status[0].forwards;
        return f[0].serving && f[1].serving && f[2].serving && echo_via_port(f[0].bound_port) &&
               echo_via_port(f[1].bound_port) && echo_via_socks(f[2].bound_port, echo.port());
    };
    REQUIRE(t::wait_until(all_work, 20s));
    server.stop();
    REQUIRE(t::wait_until([&] { return manager.status()[0].state != pytun::ManagedState::up; }, 20s));
    server.start();
    CHECK(t::wait_until(all_work, 30s));
}

TEST_CASE("a graceful stop under load loses no byte on any forward kind")
{
    auto &server = shared_server();
    t::SinkService sink;
    pytun::ManagerOptions m;
    m.grace_period = 20s;
    auto manager = std::make_unique<pytun::TunnelManager>(m);
    pytun::TunnelOptions o = t::tunnel_options(server, sink.port());
    o.forwards = {local_to(sink.port()), socks()};
    REQUIRE(manager->apply({o}).error == std::error_code{});
    std::vector<pytun::ForwardStatus> forwards;
    REQUIRE(t::wait_until(
        [&] {
            auto status = manager->status();
            if (status.empty() || status[0].state != pytun::ManagedState::up)
                return false;
            forwards = status[0].forwards;
            return forwards.size() == 3 && forwards[0].serving && forwards[1].serving && forwards[2].serving;
        },
        20s));

    // Three uploads, each paced so that it is still running when the stop
    // begins: -R, -L and -D.
    constexpr std::size_t size = 8u << 20;
    std::vector<std::vector<std::uint8_t>> data;
    std::vector<int> fds;
    for (int i = 0; i < 3; ++i) {
        data.push_back(t::random_bytes(size, 100 + static_cast<std::uint64_t>(i)));
        int fd = i < 2 ? t::connect_tcp(forwards[static_cast<std::size_t>(i)].bound_port)
                       : t::socks5_connect(forwards[2].bound_port, "127.0.0.1", sink.port()).fd;
        REQUIRE(fd >= 0);
        fds.push_back(fd);
    }
    std::atomic<int> sent_halves{0};
    std::vector<std::thread> senders;
    for (int i = 0; i < 3; ++i)
        senders.emplace_back([&, i] {
            const auto &d = data[static_cast<std::size_t>(i)];
            const std::size_t chunk = 256 * 1024;
            for (std::size_t off = 0; off < d.size(); off += chunk) {
                if (off == d.size() / 2)
                    ++sent_halves;
                t::send_all(fds[static_cast<std::size_t>(i)], d.data() + off, std::min(chunk, d.size() - off));
                std::this_thread::sleep_for(20ms);
            }
            ::shutdown(fds[static_cast<std::size_t>(i)], SHUT_WR);
            t::read_until_eof(fds[static_cast<std::size_t>(i)], 30s);
            ::close(fds[static_cast<std::size_t>(i)]);
        });
    REQUIRE(t::wait_until([&] { return sent_halves == 3; }, 30s));
    manager->stop(); // blocks until the open connections finished (grace 20 s)
    for (auto &s : senders)
        s.join();
    // The health monitor's probes of the sink are connections too, empty.
    auto received = sink.received();
    std::erase_if(received, [](const t::SinkService::Received &r) { return r.bytes == 0; });
    REQUIRE(received.size() == 3);
    std::vector<std::string> want, got;
    for (const auto &d : data)
        want.push_back(t::sha256_hex(d.data(), d.size()));
    for (const auto &r : received) {
        CHECK(r.bytes == size);
        got.push_back(r.sha256);
    }
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    CHECK(got == want);
}
