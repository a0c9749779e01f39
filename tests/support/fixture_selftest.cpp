// SPDX-License-Identifier: MIT
// Self-test of the test fixture against real peers: OpenSSH sshd and ssh, and the local services.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <thread>

#include <doctest/doctest.h>

extern char **environ;

using namespace pytun::test;
using namespace std::chrono_literals;

namespace {

/// Run a program (no shell), output appended to `log`; its exit status or -1.
int run(const std::vector<std::string> &argv, const std::string &log)
{
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// `ssh ... 127.0.0.1 true` as sshd_fixture.ssh_base_args() builds it.
int ssh_true(const SshServer &server, const std::string &key, const std::string &known_hosts)
{
    return run({"ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o",
                "IdentityAgent=none", "-o", "UserKnownHostsFile=" + known_hosts, "-o",
                "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                "-o", "ServerAliveInterval=0", "-p", std::to_string(server.port()), "-l",
                server.user(), "127.0.0.1", "true"},
               server.dir() + "/selftest-ssh.log");
}

std::string as_string(const std::vector<std::uint8_t> &v) { return {v.begin(), v.end()}; }

} // namespace

TEST_CASE("sshd starts, accepts and has every file the header promises")
{
    SshServer server;
    CHECK(server.running());
    CHECK(server.pid() > 0);
    CHECK(tcp_port_accepts(server.port()));
    CHECK(server.user().size() > 0);
    for (const auto &path :
         {server.key_ed25519(), server.key_ecdsa(), server.key_rsa(), server.key_encrypted(),
          server.key_unauthorized(), server.known_hosts_bracketed(), server.known_hosts_plain(),
          server.known_hosts_hashed(), server.known_hosts_changed(), server.known_hosts_unknown(),
          server.known_hosts_messy()})
        CHECK_MESSAGE(std::filesystem::exists(path), path);
    CHECK(std::filesystem::exists(server.key_ed25519() + ".pub"));
    CHECK(server.host_key_fingerprint_ed25519().rfind("SHA256:", 0) == 0);
    CHECK(server.host_key_fingerprint_ecdsa().rfind("SHA256:", 0) == 0);
    CHECK(server.host_key_fingerprint_ed25519() != server.host_key_fingerprint_ecdsa());
    CHECK(std::string(SshServer::k_passphrase) == "pytun-test-passphrase");
}

TEST_CASE("the directory is removed and sshd ended on destruction")
{
    std::string dir;
    pid_t pid = -1;
    std::uint16_t port = 0;
    {
        SshServer server;
        dir = server.dir();
        pid = server.pid();
        port = server.port();
        CHECK(std::filesystem::is_directory(dir));
    }
    CHECK_FALSE(std::filesystem::exists(dir));
    CHECK(kill(pid, 0) != 0);
    CHECK_FALSE(tcp_port_accepts(port));
}

TEST_CASE("OpenSSH ssh logs in with the fixture's keys and known_hosts files")
{
    SshServer server;
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_bracketed()) == 0);
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_hashed()) == 0);
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_messy()) == 0);
    CHECK(ssh_true(server, server.key_ecdsa(), server.known_hosts_bracketed()) == 0);
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_changed()) != 0);
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_unknown()) != 0);
    CHECK(ssh_true(server, server.key_unauthorized(), server.known_hosts_bracketed()) != 0);
    // BatchMode: the passphrase cannot be asked for.
    CHECK(ssh_true(server, server.key_encrypted(), server.known_hosts_bracketed()) != 0);
    CHECK(server.log().find("Accepted publickey") != std::string::npos);
}

TEST_CASE("hold_remote_port listens on the server until end_process")
{
    SshServer server;
    const std::uint16_t remote = free_port();
    CHECK_FALSE(tcp_port_accepts(remote));
    pid_t holder = server.hold_remote_port(remote);
    REQUIRE(holder > 0);
    CHECK(tcp_port_accepts(remote));
    end_process(holder);
    CHECK(wait_until([&] { return !tcp_port_accepts(remote); }, 5s));
}

TEST_CASE("stop() and kill_hard() end sshd and its sessions; start() reuses the port")
{
    SshServer server;
    const std::uint16_t port = server.port();
    const std::uint16_t remote = free_port();
    pid_t holder = server.hold_remote_port(remote);

    server.stop();
    CHECK_FALSE(server.running());
    CHECK_FALSE(tcp_port_accepts(port));
    CHECK_FALSE(tcp_port_accepts(remote)); // the session went down with the server
    end_process(holder);

    server.start();
    CHECK(server.running());
    CHECK(server.port() == port);
    CHECK(tcp_port_accepts(port));
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_bracketed()) == 0);

    holder = server.hold_remote_port(remote);
    server.kill_hard();
    CHECK_FALSE(server.running());
    CHECK_FALSE(tcp_port_accepts(port));
    CHECK_FALSE(tcp_port_accepts(remote));
    server.start();
    CHECK(server.port() == port);
    CHECK(ssh_true(server, server.key_ed25519(), server.known_hosts_bracketed()) == 0);
    // The holder is left running on purpose: the destructor must end it.
    holder = server.hold_remote_port(remote);
    CHECK(holder > 0);
}

TEST_CASE("authorize() appends a key line that sshd honours")
{
    SshServer server;
    CHECK(ssh_true(server, server.key_unauthorized(), server.known_hosts_bracketed()) != 0);
    std::string pub;
    {
        FILE *f = std::fopen((server.key_unauthorized() + ".pub").c_str(), "r");
        REQUIRE(f);
        char line[1024] = {};
        REQUIRE(std::fgets(line, sizeof line, f));
        std::fclose(f);
        pub = line;
    }
    server.authorize(pub);
    CHECK(ssh_true(server, server.key_unauthorized(), server.known_hosts_bracketed()) == 0);
}

TEST_CASE("EchoService echoes every byte and half-closes on EOF")
{
    EchoService echo;
    const auto data = random_bytes(3 * 1024 * 1024 + 7, 42);
    int fd = connect_tcp(echo.port());
    REQUIRE(fd >= 0);
    std::thread writer([&] {
        send_all(fd, data.data(), data.size());
        shutdown(fd, SHUT_WR);
    });
    const auto back = read_until_eof(fd, 30s);
    writer.join();
    close(fd);
    CHECK(back.size() == data.size());
    CHECK(sha256_hex(back.data(), back.size()) == sha256_hex(data.data(), data.size()));
    CHECK(echo.accepted() == 1);
}

TEST_CASE("SinkService records size and SHA-256 of each connection")
{
    SinkService sink;
    const auto data = random_bytes(5 * 1024 * 1024, 7);
    int fd = connect_tcp(sink.port());
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, data.data(), data.size()));
    shutdown(fd, SHUT_WR);
    CHECK(read_until_eof(fd, 30s).empty());
    close(fd);
    const auto got = sink.received();
    REQUIRE(got.size() == 1);
    CHECK(got[0].bytes == data.size());
    CHECK(got[0].sha256 == sha256_hex(data.data(), data.size()));
}

TEST_CASE("SourceService sends random_bytes(bytes, connection index)")
{
    const std::size_t size = 2 * 1024 * 1024 + 3;
    SourceService source(size);
    for (std::uint64_t i = 0; i < 2; ++i) {
        int fd = connect_tcp(source.port());
        REQUIRE(fd >= 0);
        const auto got = read_until_eof(fd, 30s);
        close(fd);
        const auto expected = random_bytes(size, i);
        CHECK(got.size() == size);
        CHECK(sha256_hex(got.data(), got.size()) == sha256_hex(expected.data(), expected.size()));
        const auto sent = source.sent_sha256();
        REQUIRE(sent.size() == i + 1);
        CHECK(sent[i] == sha256_hex(expected.data(), expected.size()));
    }
}

TEST_CASE("HalfCloseService answers after the client's half-close")
{
    HalfCloseService service(100000);
    const auto request = random_bytes(1000, 3);
    int fd = connect_tcp(service.port());
    REQUIRE(fd >= 0);
    REQUIRE(send_all(fd, request.data(), request.size()));
    shutdown(fd, SHUT_WR);
    const std::string answer = as_string(read_until_eof(fd, 30s));
    close(fd);
    const std::string head =
        "received 1000 bytes sha256=" + sha256_hex(request.data(), request.size()) + "\n";
    REQUIRE(answer.size() == head.size() + 100000);
    CHECK(answer.substr(0, head.size()) == head);
    CHECK(answer.find_first_not_of('A', head.size()) == std::string::npos);
}

TEST_CASE("run_echo_load: 200 connections x 256 KiB through the EchoService")
{
    EchoService echo;
    const auto result = run_echo_load(echo.port(), 200, 256 * 1024, 60s);
    for (const auto &e : result.errors)
        MESSAGE(e);
    CHECK(result.ok == 200);
    CHECK(result.failed == 0);
    CHECK(echo.accepted() == 200);
    MESSAGE("echo load took " << result.elapsed.count() << " ms");
}

TEST_CASE("run_echo_load reports connection failures")
{
    const std::uint16_t port = free_port();
    const auto result = run_echo_load(port, 3, 1024, 10s);
    CHECK(result.ok == 0);
    CHECK(result.failed == 3);
    REQUIRE(result.errors.size() == 3);
    CHECK(result.errors[0].find("connect") != std::string::npos);
}

TEST_CASE("services stop, restart on the same port, and leave no fds or threads behind")
{
    const std::size_t fds_before = count_open_fds();
    const std::size_t threads_before = count_threads();
    {
        EchoService echo;
        SinkService sink;
        const std::uint16_t port = echo.port();
        // Connections left open on purpose: stop() must shut them down.
        int idle = connect_tcp(port);
        REQUIRE(idle >= 0);
        int idle_sink = connect_tcp(sink.port());
        REQUIRE(idle_sink >= 0);
        CHECK(wait_until([&] { return echo.accepted() == 1 && sink.accepted() == 1; }, 5s));
        CHECK(count_threads() > threads_before);

        echo.stop();
        CHECK_FALSE(tcp_port_accepts(port));
        CHECK(read_until_eof(idle, 5s).empty()); // the service side closed it
        close(idle);

        echo.start();
        CHECK(echo.port() == port);
        const auto result = run_echo_load(port, 20, 64 * 1024, 30s);
        CHECK(result.ok == 20);
        close(idle_sink);
    }
    CHECK(wait_until([&] { return count_open_fds() == fds_before; }, 5s));
    CHECK(count_open_fds() == fds_before);
    CHECK(count_threads() == threads_before);
}
