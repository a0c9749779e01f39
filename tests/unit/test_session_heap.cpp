// SPDX-License-Identifier: MIT
// The allocator each libssh2 session uses (ssh/libssh2_heap.h): blocks
// libssh2 forgets are freed with the session. The second case makes libssh2
// 1.10 forget some: a session freed while its key exchange waits for the
// server. The sanitizer run (LeakSanitizer) fails it if they stay allocated.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>
#include <libssh2.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include "ssh/libssh2_heap.h"
#include "ssh/session.h"

using pytun::detail::Libssh2Heap;
using pytun::detail::SshSession;

namespace {

void put_u32(std::string &out, std::uint32_t v)
{
    for (int shift = 24; shift >= 0; shift -= 8)
        out += static_cast<char>((v >> shift) & 0xff);
}

std::string name_list(const std::string &names)
{
    std::string out;
    put_u32(out, static_cast<std::uint32_t>(names.size()));
    return out + names;
}

// An unencrypted SSH binary packet (RFC 4253, 6): length, padding length,
// payload, at least 4 bytes of padding to a multiple of 8.
std::string ssh_packet(const std::string &payload)
{
    std::size_t padding = 8 - (5 + payload.size()) % 8;
    if (padding < 4)
        padding += 8;
    std::string out;
    put_u32(out, static_cast<std::uint32_t>(1 + payload.size() + padding));
    out += static_cast<char>(padding);
    return out + payload + std::string(padding, '\0');
}

// What a server that offers only curve25519 sends first: its banner and its
// KEXINIT (RFC 4253, 7.1).
std::string server_hello()
{
    std::string kexinit(1, '\x14'); // SSH_MSG_KEXINIT
    kexinit += std::string(16, 'c'); // cookie
    for (const char *names : {"curve25519-sha256", "ssh-ed25519", "aes128-ctr", "aes128-ctr", "hmac-sha2-256",
                              "hmac-sha2-256", "none", "none", "", ""})
        kexinit += name_list(names);
    kexinit += '\0'; // first_kex_packet_follows
    put_u32(kexinit, 0);
    return "SSH-2.0-OpenSSH_9.2\r\n" + ssh_packet(kexinit);
}

// Message numbers of the client's packets in `stream` (its banner line
// first), as far as they are complete.
std::vector<int> client_messages(const std::string &stream)
{
    std::vector<int> types;
    std::size_t at = stream.find("\r\n");
    if (at == std::string::npos)
        return types;
    at += 2;
    while (at + 6 <= stream.size()) {
        const auto *p = reinterpret_cast<const unsigned char *>(stream.data() + at);
        const std::size_t length = (std::size_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
        if (at + 4 + length > stream.size())
            break;
        types.push_back(p[5]);
        at += 4 + length;
    }
    return types;
}

} // namespace

TEST_CASE("the heap frees what is still out when asked, and blocks it did not hand out when given them")
{
    Libssh2Heap heap;
    void *kept = heap.allocate(10);
    void *grown = heap.reallocate(heap.allocate(20), 4000);
    REQUIRE(kept);
    REQUIRE(grown);
    heap.release(std::malloc(8)); // as libssh2 frees the signature our RSA callback made with malloc
    heap.release(nullptr);
    CHECK(heap.outstanding() == 2);
    heap.release(kept);
    const Libssh2Heap::Leftover left = heap.release_all();
    CHECK(left.blocks == 1);
    CHECK(left.bytes == 4000);
    CHECK(heap.outstanding() == 0);
    CHECK(heap.release_all().blocks == 0);
}

TEST_CASE("a session freed while its key exchange waits for the server leaves nothing allocated")
{
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    const int server = fds[1];
    const std::string hello = server_hello();
    REQUIRE(::write(server, hello.data(), hello.size()) == static_cast<ssize_t>(hello.size()));

    asio::io_context io;
    auto log = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
    auto session = std::make_shared<SshSession>(
        SshSession::Socket(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]), log);
    std::string message;
    REQUIRE_FALSE(session->begin("", message));
    bool finished = false;
    session->submit(
        "handshake", [&] { return libssh2_session_handshake(session->raw(), session->socket_fd()); },
        [&](int) { finished = true; });

    // Until the client's SSH_MSG_KEX_ECDH_INIT (30) reaches the server, which
    // never answers it: libssh2 now holds the curve25519 key pair.
    std::string received;
    bool ecdh_init = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!ecdh_init && !finished && std::chrono::steady_clock::now() < deadline) {
        io.run_for(std::chrono::milliseconds(10));
        pollfd pfd{server, POLLIN, 0};
        char buffer[4096];
        while (::poll(&pfd, 1, 0) == 1) {
            const ssize_t n = ::read(server, buffer, sizeof(buffer));
            if (n <= 0)
                break;
            received.append(buffer, static_cast<std::size_t>(n));
        }
        for (int type : client_messages(received))
            ecdh_init = ecdh_init || type == 30;
    }
    INFO("libssh2: ", session->last_error_text());
    REQUIRE(ecdh_init);
    CHECK_FALSE(finished);
    CHECK(session->libssh2_blocks() > 0);

    session->close();
    CHECK(session->libssh2_blocks() == 0);
    ::close(server);
}
