// SPDX-License-Identifier: MIT
// pytun::Tunnel against a real OpenSSH sshd on loopback: data integrity,
// concurrency, half-close, local service outages, every error class, stop().
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pytun/error.h>
#include <pytun/log.h>
#include <pytun/tunnel.h>

#include "bulk_transfer.h"
#include "fixture.h"
#include "log_capture.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
using pytun::Errc;
namespace t = pytun::test;

namespace {

// Starting sshd takes key generation: share one for the tests that do not
// kill it.
t::SshServer &shared_server()
{
    static t::SshServer server;
    return server;
}

// A port nothing listens on right now (the kernel's choice for port 0).
std::uint16_t free_port()
{
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0);
    ::close(fd);
    return ntohs(addr.sin_port);
}

std::error_code start_expecting_failure(pytun::TunnelOptions o, std::string &message)
{
    pytun::Tunnel tunnel(std::move(o));
    std::error_code ec = tunnel.start();
    message = tunnel.last_error_message();
    CHECK(tunnel.state() == pytun::TunnelState::failed);
    return ec;
}

} // namespace

TEST_CASE("64 MiB each way arrive intact (SHA-256 compared)")
{
    auto &server = shared_server();
    constexpr std::size_t size = 64u << 20;

    SUBCASE("upload: client -> bastion -> tunnel -> service")
    {
        t::SinkService sink;
        pytun::Tunnel tunnel(t::tunnel_options(server, sink.port()));
        REQUIRE(tunnel.start() == std::error_code{});
        REQUIRE(tunnel.listen_port() != 0);
        t::check_upload(tunnel, sink, t::random_bytes(size, 42));
        CHECK(tunnel.stats().bytes_to_service == size);
    }
    SUBCASE("download: service -> tunnel -> bastion -> client")
    {
        t::SourceService source(size);
        pytun::Tunnel tunnel(t::tunnel_options(server, source.port()));
        REQUIRE(tunnel.start() == std::error_code{});
        t::check_download(tunnel, source, size);
        CHECK(tunnel.stats().bytes_from_service == size);
    }
}

TEST_CASE("500 concurrent connections, 256 KiB each way at once, every byte intact")
{
    t::LogCapture log;
    auto &server = shared_server();
    t::EchoService echo;
    pytun::Tunnel tunnel(t::tunnel_options(server, echo.port()));
    REQUIRE(tunnel.start() == std::error_code{});
    auto result = t::run_echo_load(tunnel.listen_port(), 500, 256 * 1024, 180s);
    for (const auto &error : result.errors)
        MESSAGE(error);
    CHECK(result.ok == 500);
    CHECK(result.failed == 0);
    CHECK(tunnel.state() == pytun::TunnelState::up);
    CHECK(t::wait_until([&] { return tunnel.stats().connections_active == 0; }, 20s));
    CHECK(tunnel.stats().connections_total == 500);
    // The one-operation rule held: libssh2 never saw a call out of turn.
    CHECK(log.count_containing("BAD_USE") == 0);
    CHECK(log.count_containing("libssh2 error -39") == 0);
}

TEST_CASE("half-close: the answer sent after the client's EOF arrives complete")
{
    auto &server = shared_server();
    constexpr std::size_t answer_bytes = 300000;
    t::HalfCloseService service(answer_bytes);
    pytun::Tunnel tunnel(t::tunnel_options(server, service.port()));
    REQUIRE(tunnel.start() == std::error_code{});
    auto request = t::random_bytes(100000, 7);
    int fd = t::connect_tcp(tunnel.listen_port());
    REQUIRE(fd >= 0);
    REQUIRE(t::send_all(fd, request.data(), request.size()));
    REQUIRE(::shutdown(fd, SHUT_WR) == 0);
    auto answer = t::read_until_eof(fd, 20s);
    ::close(fd);
    const std::string expected_head =
        "received 100000 bytes sha256=" + t::sha256_hex(request.data(), request.size()) + "\n";
    REQUIRE(answer.size() == expected_head.size() + answer_bytes);
    CHECK(std::string(answer.begin(), answer.begin() + static_cast<long>(expected_head.size())) == expected_head);
    CHECK(std::all_of(answer.begin() + static_cast<long>(expected_head.size()), answer.end(),
                      [](std::uint8_t c) { return c == 'A'; }));
}

TEST_CASE("local service down, then up: only those connections close, the tunnel stays up")
{
    auto &server = shared_server();
    t::EchoService echo;
    pytun::Tunnel tunnel(t::tunnel_options(server, echo.port()));
    REQUIRE(tunnel.start() == std::error_code{});
    echo.stop();

    for (int i = 0; i < 3; ++i) {
        int fd = t::connect_tcp(tunnel.listen_port());
        REQUIRE(fd >= 0); // the bastion accepts; the relay finds no service and closes
        auto got = t::read_until_eof(fd, 10s);
        ::close(fd);
        CHECK(got.empty());
    }
    CHECK(tunnel.state() == pytun::TunnelState::up);
    CHECK(t::wait_until([&] { return tunnel.stats().connections_failed == 3; }, 5s));

    echo.start();
    int fd = t::connect_tcp(tunnel.listen_port());
    REQUIRE(fd >= 0);
    const std::string ping = "ping after recovery";
    REQUIRE(t::send_all(fd, ping.data(), ping.size()));
    ::shutdown(fd, SHUT_WR);
    auto got = t::read_until_eof(fd, 10s);
    ::close(fd);
    CHECK(std::string(got.begin(), got.end()) == ping);
    CHECK(tunnel.state() == pytun::TunnelState::up);
}

TEST_CASE("every known_hosts form verifies: [host]:port, plain host, hashed, messy file")
{
    auto &server = shared_server();
    t::EchoService echo;
    for (const auto &file : {server.known_hosts_bracketed(), server.known_hosts_plain(), server.known_hosts_hashed(),
                             server.known_hosts_messy()}) {
        CAPTURE(file);
        auto o = t::tunnel_options(server, echo.port());
        o.known_hosts_file = file;
        pytun::Tunnel tunnel(o);
        CHECK(tunnel.start() == std::error_code{});
        CHECK(tunnel.last_error_message().empty());
    }
}

TEST_CASE("ecdsa, RSA (rsa-sha2-512: test_user_auth.cpp) and passphrase-protected keys authenticate")
{
    auto &server = shared_server();
    t::EchoService echo;
    auto o = t::tunnel_options(server, echo.port());
    o.key_file = server.key_ecdsa();
    pytun::Tunnel ecdsa(o);
    CHECK(ecdsa.start() == std::error_code{});

    o.key_file = server.key_rsa();
    pytun::Tunnel rsa(o);
    CHECK(rsa.start() == std::error_code{});

    o.key_file = server.key_encrypted();
    o.key_passphrase = t::SshServer::k_passphrase;
    pytun::Tunnel encrypted(o);
    CHECK(encrypted.start() == std::error_code{});
}

TEST_CASE("errors name the problem and what to do")
{
    auto &server = shared_server();
    t::EchoService echo;
    auto base = t::tunnel_options(server, echo.port());
    std::string message;

    SUBCASE("host key unknown: fingerprint and the line to add")
    {
        auto o = base;
        o.known_hosts_file = server.known_hosts_unknown();
        CHECK(start_expecting_failure(o, message) == Errc::host_key_unknown);
        CHECK(message.find("[127.0.0.1]:" + std::to_string(server.port()) + " ecdsa-sha2-nistp256 AAAA") !=
              std::string::npos);
        CHECK(message.find(server.host_key_fingerprint_ecdsa()) != std::string::npos);
    }
    SUBCASE("no known_hosts configured: refused, with the line to add")
    {
        auto o = base;
        o.known_hosts_file.clear();
        CHECK(start_expecting_failure(o, message) == Errc::host_key_unknown);
        CHECK(message.find("server_key") != std::string::npos);
    }
    SUBCASE("host key changed: possible attack, both fingerprints")
    {
        auto o = base;
        o.known_hosts_file = server.known_hosts_changed();
        CHECK(start_expecting_failure(o, message) == Errc::host_key_changed);
        CHECK(message.find("attack") != std::string::npos);
        CHECK(message.find(server.host_key_fingerprint_ed25519()) != std::string::npos);
        CHECK(message.find("Expected ssh-ed25519 SHA256:") != std::string::npos);
    }
    SUBCASE("known_hosts file missing")
    {
        auto o = base;
        o.known_hosts_file = server.dir() + "/no-such-known-hosts";
        CHECK(start_expecting_failure(o, message) == Errc::known_hosts_unreadable);
        CHECK(message.find("no-such-known-hosts") != std::string::npos);
    }
    SUBCASE("key file missing")
    {
        auto o = base;
        o.key_file = server.dir() + "/no-such-key";
        CHECK(start_expecting_failure(o, message) == Errc::key_file_unreadable);
        CHECK(message.find("no-such-key") != std::string::npos);
    }
    SUBCASE("encrypted key without passphrase, and with a wrong one")
    {
        auto o = base;
        o.key_file = server.key_encrypted();
        CHECK(start_expecting_failure(o, message) == Errc::key_encrypted);
        CHECK(message.find("passphrase") != std::string::npos);
        o.key_passphrase = "wrong";
        CHECK(start_expecting_failure(o, message) == Errc::key_encrypted);
        CHECK(message.find("wrong") != std::string::npos);
    }
    SUBCASE("key not authorized")
    {
        auto o = base;
        o.key_file = server.key_unauthorized();
        CHECK(start_expecting_failure(o, message) == Errc::key_not_authorized);
        CHECK(message.find("authorized_keys") != std::string::npos);
    }
    SUBCASE("remote port already bound by another session")
    {
        // An OpenSSH client holds the port on the bastion.
        const std::uint16_t port = free_port();
        pid_t holder = server.hold_remote_port(port);
        auto o = base;
        o.listen_port = port;
        CHECK(start_expecting_failure(o, message) == Errc::remote_port_refused);
        CHECK(message.find("another session holds the port") != std::string::npos);
        t::end_process(holder);
    }
    SUBCASE("bastion refuses the TCP connection")
    {
        auto o = base;
        o.server_port = free_port();
        CHECK(start_expecting_failure(o, message) == Errc::bastion_unreachable);
    }
    SUBCASE("bastion accepts TCP but never speaks SSH: timeout")
    {
        t::SinkService silent; // reads, never writes
        auto o = base;
        o.server_port = silent.port();
        o.connect_timeout = 1s;
        CHECK(start_expecting_failure(o, message) == Errc::bastion_timeout);
    }
    SUBCASE("missing settings")
    {
        auto o = base;
        o.server_host.clear();
        o.username.clear();
        CHECK(start_expecting_failure(o, message) == Errc::invalid_options);
        CHECK(message.find("server_host") != std::string::npos);
        CHECK(message.find("username") != std::string::npos);
    }
}

TEST_CASE("sshd killed: the tunnel reports the lost transport")
{
    t::SshServer server;
    t::EchoService echo;
    pytun::Tunnel tunnel(t::tunnel_options(server, echo.port()));
    REQUIRE(tunnel.start() == std::error_code{});
    server.kill_hard();
    std::error_code reason;
    REQUIRE(tunnel.wait_for(10s, reason));
    CHECK(reason == Errc::transport_lost);
    CHECK(tunnel.state() == pytun::TunnelState::failed);
    CHECK(tunnel.last_error_message().find("lost") != std::string::npos);
}

TEST_CASE("stop() with 100 active connections: prompt, no leaked threads or descriptors")
{
    auto &server = shared_server();
    t::EchoService echo;
    const std::size_t fds_before = t::count_open_fds();
    const std::size_t threads_before = t::count_threads();
    std::vector<int> clients;
    {
        pytun::Tunnel tunnel(t::tunnel_options(server, echo.port()));
        REQUIRE(tunnel.start() == std::error_code{});
        for (int i = 0; i < 100; ++i) {
            int fd = t::connect_tcp(tunnel.listen_port());
            REQUIRE(fd >= 0);
            REQUIRE(t::send_all(fd, "hello", 5));
            clients.push_back(fd);
        }
        REQUIRE(t::wait_until([&] { return tunnel.stats().connections_active == 100; }, 10s));
        const auto begin = std::chrono::steady_clock::now();
        tunnel.stop();
        const auto took = std::chrono::steady_clock::now() - begin;
        MESSAGE("stop() took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
        CHECK(took < 1s);
        CHECK(tunnel.state() == pytun::TunnelState::stopped);
        CHECK(tunnel.stats().connections_active == 0);
    }
    // The bastion closes the client side of every connection.
    for (int fd : clients) {
        t::read_until_eof(fd, 5s);
        ::close(fd);
    }
    CHECK(t::wait_until([&] { return t::count_threads() == threads_before; }, 5s));
    CHECK(t::wait_until([&] { return t::count_open_fds() == fds_before; }, 5s));
}
