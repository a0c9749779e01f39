// SPDX-License-Identifier: MIT
// The VPN mode's DNS relay and server queries against real peers on
// loopback, no firewall involved: an OpenSSH sshd as the bastion and dnsmasq
// as the server's resolver. Queries sent straight to the relay's port go as
// DNS over TCP through direct-tcpip channels; answers, TC, IDs, SERVFAIL
// without a tunnel or a resolver; the server's resolv.conf and routes read
// through exec channels.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "../unit/dns_builder.h"
#include "fixture.h"
#include "log.h"
#include "loop/event_loop.h"
#include "ssh/command.h"
#include "ssh/connection.h"
#include "tunnel/run_status.h"
#include "tunnel/session_pool.h"
#include "vpn/dns_message.h"
#include "vpn/dns_relay.h"
#include "vpn/server_info.h"

namespace t = pytun::test;
namespace d = pytun::detail;
namespace build = pytun::test::dns;

namespace {

constexpr int k_big_records = 40; // TXT records of 200 bytes: about 8.5 KB

/// dnsmasq on 127.0.0.1:port, authoritative for lan.test.
class Dnsmasq {
public:
    Dnsmasq()
        : port_(t::free_port()),
          log_(std::filesystem::temp_directory_path() / ("pytun-dnsmasq-" + std::to_string(::getpid()) + ".log"))
    {
        std::string dnsmasq = "/usr/sbin/dnsmasq";
        if (!std::filesystem::exists(dnsmasq))
            t::skip("dnsmasq not found (install dnsmasq-base)");
        std::vector<std::string> argv = {dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                                         "--no-hosts", "--no-poll", "--pid-file=", "--port=" + std::to_string(port_),
                                         "--listen-address=127.0.0.1", "--bind-interfaces", "--local=/lan.test/",
                                         "--host-record=secret.lan.test,198.18.77.7", "--log-facility=-"};
        if (::geteuid() == 0) {
            argv.push_back("--user=root");
            argv.push_back("--group=root");
        }
        for (int i = 0; i < k_big_records; ++i) {
            char head[8];
            std::snprintf(head, sizeof head, "%03d", i);
            argv.push_back("--txt-record=big.lan.test," + std::string(head) + std::string(197, 'x'));
        }
        pid_ = t::spawn_process(argv, log_.string());
        REQUIRE(t::wait_until([this] { return t::tcp_port_accepts(port_); }, std::chrono::seconds(10)));
    }
    ~Dnsmasq()
    {
        t::end_process(pid_);
        std::filesystem::remove(log_);
    }
    std::uint16_t port() const { return port_; }
    void stop()
    {
        t::end_process(pid_);
        pid_ = -1;
    }

private:
    std::uint16_t port_;
    std::filesystem::path log_;
    pid_t pid_ = -1;
};

template <typename F>
auto on_loop(d::EventLoop &loop, F f)
{
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(loop.io(), [&task] { task(); });
    return result.get();
}

struct Answer {
    bool received = false;
    d::dns::Header header;
    std::string bytes;
};

Answer udp_ask(std::uint16_t port, const std::string &query, int timeout_ms = 3000)
{
    Answer out;
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr *>(&to), sizeof to);
    std::string buffer(65536, '\0');
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    ::close(fd);
    if (n > 0) {
        buffer.resize(static_cast<std::size_t>(n));
        if (auto h = d::dns::read_header(buffer)) {
            out.received = true;
            out.header = *h;
            out.bytes = buffer;
        }
    }
    return out;
}

bool read_exact(int fd, char *data, std::size_t size)
{
    for (std::size_t done = 0; done < size;) {
        const ssize_t n = ::recv(fd, data + done, size - done, 0);
        if (n <= 0)
            return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

Answer tcp_ask(std::uint16_t port, const std::string &query)
{
    Answer out;
    const int fd = t::connect_tcp(port);
    REQUIRE(fd >= 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string framed = d::dns::frame(query);
    REQUIRE(t::send_all(fd, framed.data(), framed.size()));
    unsigned char length[2];
    if (read_exact(fd, reinterpret_cast<char *>(length), 2)) {
        std::string message(static_cast<std::size_t>(length[0] << 8 | length[1]), '\0');
        if (read_exact(fd, message.data(), message.size())) {
            out.received = true;
            out.header = *d::dns::read_header(message);
            out.bytes = message;
        }
    }
    ::close(fd);
    return out;
}

/// A bastion connection with its session pool (the relay's channel opener)
/// and a relay on 127.0.0.1, all on one loop.
struct Bench {
    t::SshServer server;
    Dnsmasq dnsmasq;
    d::EventLoop loop;
    std::shared_ptr<spdlog::logger> log = d::make_logger("vpn-dns-test");
    std::shared_ptr<d::SshConnection> connection;
    std::shared_ptr<d::SessionPool> pool;
    std::unique_ptr<d::DnsRelay> relay;
    std::uint16_t port = 0;

    Bench()
    {
        d::ConnectionOptions options;
        options.server_host = "127.0.0.1";
        options.server_port = server.port();
        options.username = server.user();
        options.key_file = server.key_ed25519();
        options.known_hosts_file = server.known_hosts_bracketed();
        options.anchor = true;
        std::promise<std::string> ready;
        on_loop(loop, [&] {
            d::SshConnection::Handlers handlers;
            handlers.ready = [&ready] { ready.set_value(""); };
            handlers.failed = [&ready](std::error_code, const std::string &why) { ready.set_value(why); };
            connection = std::make_shared<d::SshConnection>(loop.io(), options, log, std::move(handlers));
            connection->start();
            return 0;
        });
        REQUIRE(ready.get_future().get() == "");
        port = on_loop(loop, [&] {
            pool = std::make_shared<d::SessionPool>(loop.io(), options, log, d::SessionPool::Limits{},
                                                    std::make_shared<d::RunStatus>(std::vector<pytun::ForwardSpec>{}));
            pool->add_primary(connection);
            d::DnsRelayOptions relay_options;
            relay_options.listen = {"127.0.0.1"};
            relay_options.query_timeout = std::chrono::milliseconds(2000);
            relay = std::make_unique<d::DnsRelay>(loop.io(), relay_options, log);
            std::string message;
            return relay->open(message) ? relay->port() : std::uint16_t{0};
        });
        REQUIRE(port != 0);
    }
    ~Bench()
    {
        on_loop(loop, [&] {
            relay->close();
            pool->close();
            connection->close();
            return 0;
        });
        loop.stop();
    }
    void attach(std::uint16_t resolver_port)
    {
        on_loop(loop, [&] {
            relay->attach(*pool, "127.0.0.1", resolver_port);
            return 0;
        });
    }
    void detach()
    {
        on_loop(loop, [&] {
            relay->detach();
            return 0;
        });
    }
};

} // namespace

TEST_CASE("queries go through the tunnel to the resolver and come back as asked")
{
    Bench b;
    // Not attached: SERVFAIL at once, nothing sent anywhere.
    Answer a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x1111));
    REQUIRE(a.received);
    CHECK(a.header.id == 0x1111);
    CHECK(a.header.rcode == 2);

    b.attach(b.dnsmasq.port());
    a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x2222));
    REQUIRE(a.received);
    CHECK(a.header.id == 0x2222);
    CHECK(a.header.rcode == 0);
    CHECK(a.header.ancount == 1);
    CHECK(a.bytes.find(std::string("\xc6\x12\x4d\x07", 4)) != std::string::npos); // 198.18.77.7

    a = udp_ask(b.port, build::query("nothing.lan.test", 1, 0x3333));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 3); // NXDOMAIN stays NXDOMAIN

    // Too large for UDP: cut with TC; whole over TCP.
    a = udp_ask(b.port, build::query("big.lan.test", 16, 0x4444));
    REQUIRE(a.received);
    CHECK(a.header.tc);
    CHECK(a.bytes.size() <= 512);
    a = udp_ask(b.port, build::query("big.lan.test", 16, 0x4445, 1232));
    REQUIRE(a.received);
    CHECK(a.header.tc);
    CHECK(a.bytes.size() <= 1232);
    a = tcp_ask(b.port, build::query("big.lan.test", 16, 0x5555));
    REQUIRE(a.received);
    CHECK(a.header.id == 0x5555);
    CHECK_FALSE(a.header.tc);
    CHECK(a.header.ancount == k_big_records);

    // Many clients at once, all with the same ID: each gets its own answer.
    std::atomic<int> right{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < 40; ++i)
        clients.emplace_back([&b, &right, i] {
            const bool known = i % 2 == 0;
            Answer r = udp_ask(b.port, build::query(known ? "secret.lan.test" : "n" + std::to_string(i) + ".lan.test",
                                                    1, 0x0101));
            if (r.received && r.header.id == 0x0101 && r.header.rcode == (known ? 0 : 3))
                ++right;
        });
    for (auto &c : clients)
        c.join();
    CHECK(right == 40);

    auto counters = b.relay->counters();
    CHECK(counters->answered >= 45);
    CHECK(counters->truncated >= 2);
    CHECK(counters->servfail >= 1);
    CHECK(counters->channels_opened >= 1);
    CHECK(counters->channels_opened <= 4); // pipelined over a few channels, not one per query

    // Detached (the tunnel went down): SERVFAIL at once; attached again: answers.
    b.detach();
    a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x6666));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 2);
    a = tcp_ask(b.port, build::query("secret.lan.test", 1, 0x6667));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 2);
    b.attach(b.dnsmasq.port());
    a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x7777));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 0);
}

TEST_CASE("a resolver that cannot be reached: SERVFAIL, and the relay recovers")
{
    Bench b;
    b.attach(t::free_port()); // nothing listens there: the bastion's connect fails
    Answer a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x1234));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 2);
    CHECK(b.relay->counters()->channel_failures >= 1);
    b.attach(b.dnsmasq.port());
    a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x1235));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 0);
    // The resolver goes away while attached: SERVFAIL, by the deadline at the latest.
    b.dnsmasq.stop();
    a = udp_ask(b.port, build::query("secret.lan.test", 1, 0x1236), 5000);
    REQUIRE(a.received);
    CHECK(a.header.rcode == 2);
}

TEST_CASE("hostile messages are answered or dropped without disturbing the others")
{
    Bench b;
    b.attach(b.dnsmasq.port());
    std::atomic<bool> stop{false};
    std::atomic<int> good{0}, bad{0};
    std::thread steady([&] {
        for (unsigned id = 1; !stop; ++id) {
            Answer r = udp_ask(b.port, build::query("secret.lan.test", 1, id & 0xffff));
            (r.received && r.header.rcode == 0 && r.header.ancount == 1 ? good : bad)++;
        }
    });
    CHECK_FALSE(udp_ask(b.port, "\x01\x02\x03", 300).received);
    std::string response = build::query("secret.lan.test");
    response[2] = static_cast<char>(response[2] | 0x80);
    CHECK_FALSE(udp_ask(b.port, response, 300).received);
    Answer a = udp_ask(b.port, build::query(std::string(64, 'a') + ".lan.test"));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 1);
    a = udp_ask(b.port, build::query("secret.lan.test") + std::string(5000, '\0'));
    REQUIRE(a.received);
    CHECK(a.header.rcode == 1);
    for (int i = 0; i < 300; ++i) {
        const auto junk = t::random_bytes(static_cast<std::size_t>(1 + i * 7 % 700), static_cast<std::uint64_t>(i));
        udp_ask(b.port, std::string(junk.begin(), junk.end()), 1);
    }
    // TCP: a frame that never completes, held open; junk frames before a good one.
    const int held = t::connect_tcp(b.port);
    REQUIRE(held >= 0);
    const std::string half = std::string("\xff\xff", 2) + std::string(100, '\0');
    t::send_all(held, half.data(), half.size());
    const int fd = t::connect_tcp(b.port);
    REQUIRE(fd >= 0);
    const std::string stream = d::dns::frame("\x01\x02\x03\x04\x05") + d::dns::frame("") +
                               d::dns::frame(build::query("secret.lan.test", 1, 0x4242));
    REQUIRE(t::send_all(fd, stream.data(), stream.size()));
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char length[2];
    REQUIRE(read_exact(fd, reinterpret_cast<char *>(length), 2));
    std::string message(static_cast<std::size_t>(length[0] << 8 | length[1]), '\0');
    REQUIRE(read_exact(fd, message.data(), message.size()));
    CHECK(d::dns::message_id(message) == 0x4242);
    CHECK(d::dns::read_header(message)->rcode == 0);
    ::close(fd);
    ::close(held);
    std::this_thread::sleep_for(std::chrono::milliseconds(300)); // the steady client goes on meanwhile
    stop = true;
    steady.join();
    MESSAGE("steady client: " << good.load() << " answered, " << bad.load() << " not");
    CHECK(good > 5);
    CHECK(bad == 0);
    CHECK(b.relay->counters()->rejected >= 250); // a few random ones may even be queries
}

TEST_CASE("the server's resolv.conf and routes, read through exec channels")
{
    Bench b;
    std::promise<d::ServerNameservers> ns;
    on_loop(b.loop, [&] {
        d::read_server_nameservers(b.connection->session(), [&ns](d::ServerNameservers r) { ns.set_value(r); });
        return 0;
    });
    const d::ServerNameservers found = ns.get_future().get();
    CHECK_MESSAGE(found.error.empty(), found.error);
    // The "server" is this machine: its own resolv.conf.
    std::ifstream in("/etc/resolv.conf");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto expected = d::parse_resolv_conf(text);
    REQUIRE(found.nameservers.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
        CHECK(found.nameservers[i].to_string() == expected[i].to_string());

    std::promise<d::ServerRoutes> routes;
    on_loop(b.loop, [&] {
        d::read_server_routes(b.connection->session(), [&routes](d::ServerRoutes r) { routes.set_value(r); });
        return 0;
    });
    const d::ServerRoutes got = routes.get_future().get();
    CHECK_MESSAGE(got.error.empty(), got.error);
    MESSAGE(got.routes.size() << " routes; " << got.notes.size() << " notes");
    CHECK_FALSE(got.routes.empty()); // this machine has a route at least (the default)
    for (const auto &rule : d::auto_nets(got.routes))
        CHECK(rule.prefix_length > 0); // never the default route
}
