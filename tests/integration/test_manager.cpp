// SPDX-License-Identifier: MIT
// pytun::TunnelManager against a real OpenSSH sshd on loopback: 20 tunnels
// from a config directory, sshd crash and restart, stale bastion port, reload,
// local service down (degraded), events and a status() that never waits.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pytun/config.h>
#include <pytun/error.h>
#include <pytun/log.h>
#include <pytun/manager.h>
#include <pytun/tunnel.h>

#include "fixture.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
using pytun::Errc;
using pytun::ManagedState;
namespace t = pytun::test;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

long long ms_since(Clock::time_point start)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

long long ms_between(Clock::time_point a, Clock::time_point b)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

/// A private temporary directory, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir()
    {
        char tmpl[] = "/tmp/pytun-mgrtest-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
};

void write_file(const fs::path &path, const std::string &text)
{
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    REQUIRE(out.good());
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
}

/// `n` distinct ports free on 127.0.0.1, all bound at once so that none is
/// handed out twice, and chosen below the kernel's ephemeral range: bind(0)
/// would pick from that range, where any outgoing connection on the machine
/// (ours: SSH sessions, probes, echo clients; or another program's) may take
/// the port before the bastion binds it, and the test would see a "held" port.
std::vector<std::uint16_t> free_ports(std::size_t n)
{
    unsigned ephemeral_low = 32768;
    {
        std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
        unsigned low = 0, high = 0;
        if (range >> low >> high && low > 2048)
            ephemeral_low = low;
    }
    const unsigned first = ephemeral_low > 12000 ? 10000 : 1024;
    const unsigned span = ephemeral_low - first;
    std::random_device seed;
    unsigned candidate = first + seed() % span;
    std::vector<int> fds;
    std::vector<std::uint16_t> ports;
    for (unsigned tried = 0; ports.size() < n && tried < span; ++tried) {
        candidate = first + (candidate + 1 - first) % span;
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<std::uint16_t>(candidate));
        if (::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0) {
            fds.push_back(fd);
            ports.push_back(static_cast<std::uint16_t>(candidate));
        } else {
            ::close(fd);
        }
    }
    for (int fd : fds)
        ::close(fd);
    REQUIRE(ports.size() == n);
    return ports;
}

/// Small timings so that a test sees several retries in a few seconds.
pytun::ManagerOptions fast_manager_options()
{
    pytun::ManagerOptions o;
    o.threads = 2;
    o.backoff_initial = 200ms;
    o.backoff_max = 1000ms;
    o.stable_after = 2000ms;
    o.port_held_retry_max = 500ms;
    o.grace_period = 500ms;
    return o;
}

pytun::TunnelOptions options_for(const t::SshServer &server, const std::string &name, std::uint16_t listen_port,
                                 std::uint16_t service_port, std::chrono::seconds keep_alive = 1s)
{
    pytun::TunnelOptions o = t::tunnel_options(server, service_port);
    o.name = name;
    o.listen_port = listen_port;
    o.connect_timeout = 5s;
    o.keep_alive = keep_alive;
    return o;
}

std::optional<pytun::TunnelStatus> status_of(const pytun::TunnelManager &manager, const std::string &name)
{
    for (auto &s : manager.status())
        if (s.name == name)
            return s;
    return std::nullopt;
}

bool is_state(const pytun::TunnelManager &manager, const std::string &name, ManagedState state)
{
    auto s = status_of(manager, name);
    return s && s->state == state;
}

bool serving(ManagedState s) { return s == ManagedState::up || s == ManagedState::degraded; }

/// One line per tunnel, for failure messages.
std::string describe(const std::vector<pytun::TunnelStatus> &all)
{
    std::ostringstream out;
    for (const auto &s : all) {
        out << s.name << ": " << pytun::to_string(s.state) << " listen=" << s.listen_port
            << " started_times=" << s.started_times << " port_held=" << s.port_held;
        if (s.last_error)
            out << " last_error=" << s.last_error.message() << " (" << s.last_error_message << ")";
        out << " service_checked=" << s.service_checked << " reachable=" << s.service_reachable;
        if (!s.service_error.empty())
            out << " service_error=" << s.service_error;
        out << " conns=" << s.traffic.connections_total << "\n";
    }
    return out.str();
}

/// One small echo round trip through the bastion port.
bool echo_once(std::uint16_t port)
{
    auto r = t::run_echo_load(port, 1, 16 * 1024, 5s);
    return r.ok == 1 && r.failed == 0;
}

/// Records every event a subscription delivers, with the steady time it arrived.
struct EventLog {
    struct Entry {
        pytun::TunnelEvent event;
        Clock::time_point at;
        std::thread::id thread;
    };
    mutable std::mutex mutex;
    std::vector<Entry> entries;
    pytun::Subscription subscription;

    explicit EventLog(pytun::TunnelManager &manager)
    {
        subscription = manager.subscribe([this](const pytun::TunnelEvent &e) {
            std::lock_guard lock(mutex);
            entries.push_back({e, Clock::now(), std::this_thread::get_id()});
        });
    }
    std::vector<Entry> snapshot() const
    {
        std::lock_guard lock(mutex);
        return entries;
    }
    std::size_t size() const
    {
        std::lock_guard lock(mutex);
        return entries.size();
    }
    bool has(const std::string &name, ManagedState from, ManagedState to) const
    {
        std::lock_guard lock(mutex);
        for (const auto &e : entries)
            if (e.event.name == name && e.event.from == from && e.event.to == to)
                return true;
        return false;
    }
    std::string dump() const
    {
        std::lock_guard lock(mutex);
        std::ostringstream out;
        for (const auto &e : entries) {
            out << e.event.name << ": " << pytun::to_string(e.event.from) << " -> " << pytun::to_string(e.event.to);
            if (e.event.error)
                out << " [" << e.event.error.message() << "] " << e.event.message;
            out << "\n";
        }
        return out.str();
    }
};

/// Every log line of the library, to check what an operator would read.
struct LogCapture {
    std::mutex mutex;
    std::vector<std::string> lines;

    LogCapture()
    {
        pytun::set_log_level(pytun::LogLevel::debug);
        pytun::set_log_handler([this](pytun::LogLevel, std::string_view logger, std::string_view message) {
            std::lock_guard lock(mutex);
            lines.push_back(std::string(logger) + ": " + std::string(message));
        });
    }
    ~LogCapture()
    {
        pytun::set_log_handler(nullptr);
        pytun::set_log_level(pytun::LogLevel::info);
    }
    LogCapture(const LogCapture &) = delete;
    LogCapture &operator=(const LogCapture &) = delete;

    std::vector<std::string> containing(const std::string &needle)
    {
        std::lock_guard lock(mutex);
        std::vector<std::string> out;
        for (const auto &line : lines)
            if (line.find(needle) != std::string::npos)
                out.push_back(line);
        return out;
    }
};

/// The byte at `offset` of stream `seed`: a pure function, so the reader can
/// check the echo without keeping what was sent.
std::uint8_t stream_byte(std::uint64_t seed, std::uint64_t offset)
{
    std::uint64_t z = seed + (offset / 8) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<std::uint8_t>(z >> (8 * (offset % 8)));
}

/// One connection through an echo tunnel that streams a known pseudo-random
/// sequence at a steady pace (about 2 MiB/s) and checks every echoed byte,
/// until finish(): then it half-closes and reads the rest up to EOF.
class EchoStream {
public:
    EchoStream(std::uint16_t port, std::uint64_t seed) : seed_(seed)
    {
        fd_ = t::connect_tcp(port);
        REQUIRE(fd_ >= 0);
        ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
        thread_ = std::thread([this] { run(); });
    }
    ~EchoStream()
    {
        finishing_ = true;
        if (thread_.joinable())
            thread_.join();
        if (fd_ >= 0)
            ::close(fd_);
    }
    EchoStream(const EchoStream &) = delete;
    EchoStream &operator=(const EchoStream &) = delete;

    std::uint64_t verified() const { return received_.load(); }
    /// Stop sending, half-close, wait for the echo of everything and EOF.
    void finish()
    {
        finishing_ = true;
        thread_.join();
    }
    std::uint64_t sent() const { return sent_.load(); }
    std::string error() const
    {
        std::lock_guard lock(mutex_);
        return error_;
    }
    bool clean_eof() const { return eof_.load(); }

private:
    void fail(const std::string &why)
    {
        std::lock_guard lock(mutex_);
        if (error_.empty())
            error_ = why;
    }

    void run()
    {
        constexpr std::uint64_t k_rate_bytes_per_ms = 2048; // ~2 MiB/s
        constexpr std::uint64_t k_max_in_flight = 512 * 1024;
        const auto start = Clock::now();
        auto last_progress = Clock::now();
        bool write_closed = false;
        std::vector<std::uint8_t> out(16 * 1024), in(64 * 1024);
        for (;;) {
            if (finishing_ && !write_closed) {
                ::shutdown(fd_, SHUT_WR);
                write_closed = true;
            }
            const std::uint64_t sent = sent_.load(), received = received_.load();
            const std::uint64_t allowed = static_cast<std::uint64_t>(ms_since(start)) * k_rate_bytes_per_ms;
            const bool want_write = !write_closed && sent < allowed && sent - received < k_max_in_flight;
            pollfd p{fd_, static_cast<short>(POLLIN | (want_write ? POLLOUT : 0)), 0};
            int rc = ::poll(&p, 1, 5);
            if (rc < 0 && errno != EINTR)
                return fail(std::string("poll: ") + std::strerror(errno));
            if (want_write && (p.revents & POLLOUT)) {
                std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), allowed - sent));
                for (std::size_t i = 0; i < n; ++i)
                    out[i] = stream_byte(seed_, sent + i);
                ssize_t w = ::send(fd_, out.data(), n, MSG_NOSIGNAL);
                if (w > 0)
                    sent_ += static_cast<std::uint64_t>(w);
                else if (w < 0 && errno != EAGAIN && errno != EINTR)
                    return fail("send at offset " + std::to_string(sent) + ": " + std::strerror(errno));
            }
            if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = ::recv(fd_, in.data(), in.size(), 0);
                if (r > 0) {
                    const std::uint64_t base = received_.load();
                    for (ssize_t i = 0; i < r; ++i) {
                        if (in[static_cast<std::size_t>(i)] != stream_byte(seed_, base + static_cast<std::uint64_t>(i)))
                            return fail("echo differs at offset " + std::to_string(base + static_cast<std::uint64_t>(i)));
                    }
                    received_ += static_cast<std::uint64_t>(r);
                    last_progress = Clock::now();
                } else if (r == 0) {
                    if (!write_closed)
                        return fail("EOF from the tunnel at offset " + std::to_string(received_.load()) +
                                    " while still sending");
                    if (received_.load() != sent_.load())
                        return fail("EOF after " + std::to_string(received_.load()) + " of " +
                                    std::to_string(sent_.load()) + " bytes");
                    eof_ = true;
                    return;
                } else if (errno != EAGAIN && errno != EINTR) {
                    return fail("recv at offset " + std::to_string(received_.load()) + ": " + std::strerror(errno));
                }
            }
            if (received_.load() < sent_.load() && Clock::now() - last_progress > 15s)
                return fail("no echo for 15 s at offset " + std::to_string(received_.load()));
            if (received_.load() == sent_.load())
                last_progress = Clock::now();
        }
    }

    std::uint64_t seed_;
    int fd_ = -1;
    std::atomic<bool> finishing_{false};
    std::atomic<bool> eof_{false};
    std::atomic<std::uint64_t> sent_{0}, received_{0};
    mutable std::mutex mutex_;
    std::string error_;
    std::thread thread_;
};

/// A connection to `port` is accepted and then closed by the other side
/// (EOF or reset) within `deadline`, without any data.
bool accepted_then_closed(std::uint16_t port, std::chrono::milliseconds deadline)
{
    int fd = t::connect_tcp(port, 2s);
    if (fd < 0)
        return false;
    const auto end = Clock::now() + deadline;
    bool closed = false;
    char buf[256];
    while (Clock::now() < end) {
        pollfd p{fd, POLLIN, 0};
        int rc = ::poll(&p, 1, 50);
        if (rc > 0) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                closed = true;
                break;
            }
            if (n > 0)
                break; // data: not what a closing relay sends
        }
    }
    ::close(fd);
    return closed;
}

/// A local "service" that never answers: its accept queue is full, so the
/// kernel drops further SYNs and a connect to it hangs until its timeout.
struct BlackHoleService {
    int listener = -1;
    std::vector<int> fillers;
    std::uint16_t port = 0;

    BlackHoleService()
    {
        listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(listener >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(addr);
        REQUIRE(::bind(listener, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
        REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr *>(&addr), &len) == 0);
        REQUIRE(::listen(listener, 0) == 0);
        port = ntohs(addr.sin_port);
        // Fill the queue (never accepted) until a connect no longer completes.
        for (int i = 0; i < 8; ++i) {
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            REQUIRE(fd >= 0);
            fillers.push_back(fd);
            if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0)
                continue;
            REQUIRE(errno == EINPROGRESS);
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, 300) == 0)
                return; // this one hangs: the queue is full
        }
        FAIL("could not fill the accept queue of the black-hole service");
    }
    ~BlackHoleService()
    {
        for (int fd : fillers)
            ::close(fd);
        ::close(listener);
    }
    BlackHoleService(const BlackHoleService &) = delete;
    BlackHoleService &operator=(const BlackHoleService &) = delete;
};

/// `count` tunnels written as a pytun configuration directory (connector.ini
/// and one .ini per tunnel, each to its own echo service), loaded back.
struct ConfigInstallation {
    TempDir dir;
    std::vector<std::unique_ptr<t::EchoService>> services;
    std::vector<std::uint16_t> listen_ports;
    std::vector<pytun::TunnelOptions> options; ///< from load_config + to_tunnel_options

    ConfigInstallation(const t::SshServer &server, std::size_t count)
    {
        listen_ports = free_ports(count);
        write_file(dir.path / "connector.ini",
                   "# written the way connector users write it\n"
                   "[pytun]\n"
                   "tunnel_manager_id = manager-test\n"
                   "tunnel_dirs = configs ; relative to this file\n"
                   "log_level = info\n");
        for (std::size_t i = 0; i < count; ++i) {
            services.push_back(std::make_unique<t::EchoService>());
            char name[32];
            std::snprintf(name, sizeof name, "tunnel-%02zu", i);
            std::ostringstream ini;
            ini << "[tunnel]\n"
                << "tunnel_name = \"" << name << "\"\n"
                << "server_host = 127.0.0.1\n"
                << "server_port = " << server.port() << "\n"
                << "port = " << listen_ports[i] << " # on the bastion\n"
                << "bind_address = 127.0.0.1\n"
                << "remote_host = 127.0.0.1\n"
                << "remote_port = " << services[i]->port() << "\n"
                << "username = " << server.user() << "\n"
                << "keyfile = " << server.key_ed25519() << "\n"
                << "server_key = " << server.known_hosts_bracketed() << "\n"
                << "keep_alive_time = 1\n";
            write_file(dir.path / "configs" / (std::string(name) + ".ini"), ini.str());
        }

        pytun::LoadResult loaded = pytun::load_config((dir.path / "connector.ini").string());
        std::string diagnostics;
        for (const auto &d : loaded.diagnostics)
            diagnostics += d.to_string() + "\n";
        INFO(diagnostics);
        REQUIRE(loaded.ok());
        REQUIRE(loaded.config->tunnels.size() == count);
        for (std::size_t i = 0; i < count; ++i) {
            pytun::TunnelOptions o = pytun::to_tunnel_options(loaded.config->tunnels[i]);
            char name[32];
            std::snprintf(name, sizeof name, "tunnel-%02zu", i);
            REQUIRE(o.name == name);
            REQUIRE(o.listen_port == listen_ports[i]);
            REQUIRE(o.remote_port == services[i]->port());
            REQUIRE(o.keep_alive == 1s);
            REQUIRE(o.config_path == (dir.path / "configs" / (std::string(name) + ".ini")).string());
            o.connect_timeout = 5s;
            options.push_back(std::move(o));
        }
    }

    bool all(const pytun::TunnelManager &manager, ManagedState state) const
    {
        auto st = manager.status();
        std::size_t n = 0;
        for (const auto &o : options)
            for (const auto &s : st)
                if (s.name == o.name && s.state == state)
                    ++n;
        return n == options.size();
    }
};

} // namespace

TEST_CASE("20 tunnels from a config directory: all up, traffic through all at once intact; status() never waits")
{
    t::SshServer server;
    ConfigInstallation install(server, 20);
    pytun::TunnelManager manager(fast_manager_options());

    pytun::ApplyResult applied = manager.apply(install.options);
    INFO(applied.message);
    REQUIRE_FALSE(applied.error);
    CHECK(applied.started.size() == 20);
    CHECK(applied.kept.empty());
    CHECK(applied.stopped.empty());

    const auto t0 = Clock::now();
    bool up = t::wait_until([&] { return install.all(manager, ManagedState::up); }, 30s);
    INFO(describe(manager.status()));
    REQUIRE(up);
    MESSAGE("20 tunnels up in " << ms_since(t0) << " ms");
    for (const auto &s : manager.status()) {
        CHECK(s.started_times == 1);
        CHECK(s.service_checked);
        CHECK(s.service_reachable);
        CHECK(s.config_path.ends_with(s.name + ".ini"));
    }

    // Traffic through all 20 at once: 10 connections x 256 KiB each way per tunnel.
    constexpr std::size_t k_conns = 10, k_bytes = 256 * 1024;
    std::vector<t::EchoLoadResult> results(install.listen_ports.size());
    {
        std::vector<std::thread> threads;
        for (std::size_t i = 0; i < install.listen_ports.size(); ++i)
            threads.emplace_back([&, i] { results[i] = t::run_echo_load(install.listen_ports[i], k_conns, k_bytes); });
        for (auto &th : threads)
            th.join();
    }
    for (std::size_t i = 0; i < results.size(); ++i) {
        INFO("tunnel-" << i << " errors: " << (results[i].errors.empty() ? "" : results[i].errors[0]));
        CHECK(results[i].ok == k_conns);
        CHECK(results[i].failed == 0);
    }
    // The counters saw it, per tunnel.
    for (const auto &s : manager.status()) {
        INFO(s.name);
        CHECK(s.traffic.connections_total >= k_conns);
        CHECK(s.traffic.bytes_to_service >= k_conns * k_bytes);
        CHECK(s.traffic.bytes_from_service >= k_conns * k_bytes);
    }

    // Every local service dead: the probes fail, and status() still answers at once.
    for (auto &svc : install.services)
        svc->stop();
    const auto dead_since = Clock::now();
    long long slowest_us = 0;
    std::size_t calls = 0;
    bool all_degraded = false;
    // Keep asking across several probe rounds (keep_alive is 1 s).
    while (Clock::now() - dead_since < 3500ms) {
        const auto c0 = Clock::now();
        auto st = manager.status();
        const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c0).count();
        slowest_us = std::max<long long>(slowest_us, took);
        ++calls;
        CHECK(st.size() == 20);
        CHECK(took < 50000);
        if (!all_degraded && install.all(manager, ManagedState::degraded)) {
            all_degraded = true;
            MESSAGE("all 20 degraded " << ms_since(dead_since) << " ms after their services stopped");
        }
        std::this_thread::sleep_for(2ms);
    }
    MESSAGE("status() with dead services: " << calls << " calls, slowest " << slowest_us << " us");
    INFO(describe(manager.status()));
    CHECK(all_degraded);
    for (const auto &s : manager.status()) {
        CHECK(s.service_checked);
        CHECK_FALSE(s.service_reachable);
    }

    // Services back: back to up, and traffic flows again.
    for (auto &svc : install.services)
        svc->start();
    CHECK(t::wait_until([&] { return install.all(manager, ManagedState::up); }, 5s));
    for (auto port : install.listen_ports)
        CHECK(echo_once(port));

    const auto s0 = Clock::now();
    manager.stop();
    MESSAGE("stop() of 20 tunnels took " << ms_since(s0) << " ms");
    CHECK(install.all(manager, ManagedState::stopped));
    // The bastion closes each listener when it has processed the cancel or
    // the disconnect, which may be a moment after stop() returned.
    std::size_t still_open = 0;
    for (auto port : install.listen_ports)
        still_open += t::tcp_port_accepts(port) ? 1 : 0;
    MESSAGE(still_open << " of 20 bastion ports still accepted right after stop() returned");
    for (auto port : install.listen_ports)
        CHECK(t::wait_until([&] { return !t::tcp_port_accepts(port); }, 5s));
}

TEST_CASE("sshd killed: all 20 leave up within 2 s; restarted: all serve within 3 s of sshd listening")
{
    t::SshServer server;
    ConfigInstallation install(server, 20);
    pytun::TunnelManager manager(fast_manager_options());
    EventLog events(manager);
    REQUIRE_FALSE(manager.apply(install.options).error);
    {
        bool up = t::wait_until([&] { return install.all(manager, ManagedState::up); }, 30s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    for (auto port : install.listen_ports)
        REQUIRE(echo_once(port));
    std::map<std::string, std::uint64_t> started_before;
    for (const auto &s : manager.status())
        started_before[s.name] = s.started_times;

    // Crash.
    const auto killed_at = Clock::now();
    server.kill_hard();
    auto none_serving = [&] {
        for (const auto &s : manager.status())
            if (serving(s.state))
                return false;
        return true;
    };
    const bool left = t::wait_until(none_serving, 2000ms - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                             Clock::now() - killed_at));
    const long long left_ms = ms_since(killed_at);
    {
        INFO(describe(manager.status()));
        CHECK(left);
        CHECK(left_ms <= 2000);
    }
    // Per tunnel, from the events: when each one left up, and why.
    long long slowest_leave = -1;
    for (const auto &o : install.options) {
        std::optional<EventLog::Entry> leave;
        for (const auto &e : events.snapshot())
            if (e.event.name == o.name && e.at >= killed_at && serving(e.event.from) && !serving(e.event.to)) {
                leave = e;
                break;
            }
        INFO(o.name << "\n" << events.dump());
        REQUIRE(leave.has_value());
        CHECK(leave->event.error); // a failure carries its error
        slowest_leave = std::max(slowest_leave, ms_between(killed_at, leave->at));
    }
    MESSAGE("sshd killed: every tunnel left up within " << left_ms << " ms (slowest event " << slowest_leave
                                                        << " ms after the kill)");
    for (auto port : install.listen_ports)
        CHECK_FALSE(t::tcp_port_accepts(port));

    // Restart: start() returns once sshd accepts TCP.
    server.start();
    const auto listening_at = Clock::now();
    std::vector<std::uint16_t> pending = install.listen_ports;
    std::map<std::uint16_t, std::string> names;
    for (std::size_t i = 0; i < install.options.size(); ++i)
        names[install.listen_ports[i]] = install.options[i].name;
    // Each tunnel: status up AND a real echo through it.
    const bool recovered = t::wait_until(
        [&] {
            std::vector<std::uint16_t> still;
            for (auto port : pending)
                if (!is_state(manager, names[port], ManagedState::up) || !echo_once(port))
                    still.push_back(port);
            pending = std::move(still);
            return pending.empty();
        },
        3000ms);
    const long long recovered_ms = ms_since(listening_at);
    {
        INFO(describe(manager.status()));
        INFO(pending.size() << " tunnels not serving yet");
        CHECK(recovered);
        CHECK(recovered_ms <= 3000);
    }
    MESSAGE("sshd restarted: all 20 served again " << recovered_ms << " ms after sshd listened");
    for (const auto &s : manager.status()) {
        INFO(s.name);
        CHECK(s.started_times > started_before[s.name]);
    }
}

TEST_CASE("port taken by another session: a new tunnel says so (not \"still held\"), retries, serves once freed")
{
    LogCapture log;
    t::SshServer server;
    t::EchoService echo;
    const std::uint16_t port = free_ports(1)[0];
    // Another session: an OpenSSH client holding the bastion port.
    pid_t holder = server.hold_remote_port(port);

    pytun::TunnelManager manager(fast_manager_options());
    REQUIRE_FALSE(manager.apply({options_for(server, "stale", port, echo.port())}).error);

    auto held = [&] {
        auto s = status_of(manager, "stale");
        return s && s->state == ManagedState::backing_off &&
               s->last_error == pytun::make_error_code(Errc::remote_port_refused);
    };
    {
        const bool seen = t::wait_until(held, 10s);
        INFO(describe(manager.status()));
        REQUIRE(seen);
    }
    auto s = *status_of(manager, "stale");
    MESSAGE("port refused: " << s.last_error_message);
    // This tunnel never had the port: not "still held by its previous
    // session"; both possible causes, the permission first.
    CHECK_FALSE(s.port_held);
    CHECK(s.last_error_message.find("still held") == std::string::npos);
    CHECK(s.last_error_message.find("another session holds the port") != std::string::npos);
    CHECK(s.next_attempt > std::chrono::system_clock::now() - 1s);
    // The log says so, naming the port.
    CHECK_FALSE(log.containing(std::to_string(port)).empty());

    // Retries continue (with the ordinary backoff, 200 ms doubling to 1 s here).
    const std::uint64_t attempts = s.started_times;
    {
        const bool retrying = t::wait_until([&] { return status_of(manager, "stale")->started_times >= attempts + 3; }, 5s);
        INFO(describe(manager.status()));
        CHECK(retrying);
    }
    CHECK_FALSE(serving(status_of(manager, "stale")->state));

    // The bastion frees the port: up and serving our echo service (the holder
    // forwarded to the discard port, so an echo proves it is our tunnel).
    t::end_process(holder);
    const auto freed_at = Clock::now();
    const bool back = t::wait_until([&] { return is_state(manager, "stale", ManagedState::up) && echo_once(port); }, 5s);
    INFO(describe(manager.status()));
    CHECK(back);
    MESSAGE("port freed: serving after " << ms_since(freed_at) << " ms");
    auto after = *status_of(manager, "stale");
    CHECK_FALSE(after.port_held);
}

/// The sshd processes serving connections (children of the listener and theirs).
std::vector<pid_t> session_processes(pid_t listener)
{
    std::vector<pid_t> out, todo = {listener};
    while (!todo.empty()) {
        const pid_t p = todo.back();
        todo.pop_back();
        for (const auto &task : fs::directory_iterator("/proc/" + std::to_string(p) + "/task")) {
            std::ifstream children(task.path() / "children");
            for (pid_t c; children >> c;) {
                out.push_back(c);
                todo.push_back(c);
            }
        }
    }
    return out;
}

TEST_CASE("port held after a lost session: port_held, three quick retries, then the ordinary backoff")
{
    t::SshServer server;
    t::EchoService echo;
    const std::uint16_t port = free_ports(1)[0];
    pytun::ManagerOptions mo = fast_manager_options();
    mo.backoff_initial = 6000ms; // room for another session to take the port after ours is lost
    mo.backoff_max = 16000ms;
    mo.port_held_retry_max = 300ms;
    pytun::TunnelManager manager(mo);
    std::mutex mutex;
    std::vector<std::pair<std::error_code, std::chrono::milliseconds>> failures; // why, and the delay chosen
    auto recorder = manager.subscribe([&](const pytun::TunnelEvent &e) {
        if (e.to != ManagedState::backing_off)
            return;
        const auto next = status_of(manager, "held")->next_attempt;
        std::lock_guard lock(mutex);
        failures.emplace_back(e.error, std::chrono::duration_cast<std::chrono::milliseconds>(next - e.when));
    });
    REQUIRE_FALSE(manager.apply({options_for(server, "held", port, echo.port(), 30s)}).error);
    REQUIRE(t::wait_until([&] { return is_state(manager, "held", ManagedState::up) && echo_once(port); }, 15s));

    // The session is lost (its sshd processes die); before the tunnel
    // reconnects, another session takes the port, as the bastion's stale
    // copy of ours would.
    for (pid_t p : session_processes(server.pid()))
        ::kill(p, SIGKILL);
    REQUIRE(t::wait_until([&] { return is_state(manager, "held", ManagedState::backing_off); }, 10s));
    pid_t holder = server.hold_remote_port(port);
    auto count = [&] {
        std::lock_guard lock(mutex);
        return failures.size();
    };
    REQUIRE(t::wait_until([&] { return count() >= 5; }, 30s));
    const auto s = *status_of(manager, "held");
    INFO(describe(manager.status()));
    CHECK(s.port_held);
    CHECK(s.last_error_message.find("port " + std::to_string(port) +
                                    " is probably still held on the bastion by this tunnel's previous session") == 0);
    {
        std::lock_guard lock(mutex);
        for (const auto &[ec, delay] : failures)
            MESSAGE(ec.message() << ": next attempt in " << delay.count() << " ms");
        REQUIRE(failures[0].first != pytun::make_error_code(Errc::remote_port_refused)); // the lost session
        for (std::size_t i = 1; i <= 4; ++i)
            CHECK(failures[i].first == pytun::make_error_code(Errc::remote_port_refused));
        // Three quick retries at most port_held_retry_max apart, then the
        // backoff that had been doubling meanwhile (16 s, jittered to half).
        for (std::size_t i = 1; i <= 3; ++i)
            CHECK(failures[i].second <= 300ms);
        CHECK(failures[4].second >= 8000ms);
    }
    t::end_process(holder);
    recorder.reset();
}

TEST_CASE("reload: A unchanged keeps its streaming connection byte-exact; B stops; C starts")
{
    t::SshServer server;
    t::EchoService echo_a, echo_b, echo_c;
    const auto ports = free_ports(3);
    const auto a = options_for(server, "A", ports[0], echo_a.port());
    const auto b = options_for(server, "B", ports[1], echo_b.port());
    const auto c = options_for(server, "C", ports[2], echo_c.port());

    pytun::TunnelManager manager(fast_manager_options());
    pytun::ApplyResult first = manager.apply({a, b});
    REQUIRE_FALSE(first.error);
    {
        bool up = t::wait_until(
            [&] { return is_state(manager, "A", ManagedState::up) && is_state(manager, "B", ManagedState::up); }, 15s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    REQUIRE(echo_once(ports[1]));

    EchoStream stream(ports[0], 0x5eed);
    REQUIRE(t::wait_until([&] { return stream.verified() >= (1u << 20) || !stream.error().empty(); }, 15s));
    REQUIRE(stream.error().empty());
    const auto a_before = *status_of(manager, "A");
    EventLog events(manager);

    // An invalid set (a name twice) changes nothing.
    pytun::ApplyResult bad = manager.apply({a, c, c});
    CHECK(bad.error == pytun::make_error_code(Errc::invalid_options));
    CHECK_FALSE(bad.message.empty());
    CHECK(bad.started.empty());
    CHECK(bad.stopped.empty());
    CHECK(is_state(manager, "B", ManagedState::up));
    CHECK_FALSE(status_of(manager, "C").has_value());

    pytun::ApplyResult r = manager.apply({a, c});
    INFO(r.message);
    REQUIRE_FALSE(r.error);
    CHECK(r.kept == std::vector<std::string>{"A"});
    CHECK(r.stopped == std::vector<std::string>{"B"});
    CHECK(r.started == std::vector<std::string>{"C"});
    CHECK(r.restarted.empty());

    CHECK(t::wait_until([&] { return !t::tcp_port_accepts(ports[1]); }, 5s));
    {
        bool c_up = t::wait_until([&] { return is_state(manager, "C", ManagedState::up) && echo_once(ports[2]); }, 15s);
        INFO(describe(manager.status()));
        CHECK(c_up);
    }

    // A keeps streaming well past the reload.
    const std::uint64_t at_reload_done = stream.verified();
    CHECK(t::wait_until([&] { return stream.verified() >= at_reload_done + (1u << 20) || !stream.error().empty(); },
                        15s));
    stream.finish();
    INFO("stream error: " << stream.error());
    CHECK(stream.error().empty());
    CHECK(stream.clean_eof());
    CHECK(stream.verified() == stream.sent());
    MESSAGE("stream through A: " << stream.sent() << " bytes, echoed byte-exact across the reload");

    // A itself was not touched: no state change, no new attempt.
    const auto a_after = *status_of(manager, "A");
    CHECK(a_after.started_times == a_before.started_times);
    CHECK(a_after.state == ManagedState::up);
    for (const auto &e : events.snapshot())
        CHECK_MESSAGE(e.event.name != "A", "A changed state: " << pytun::to_string(e.event.from) << " -> "
                                                                << pytun::to_string(e.event.to));
    CHECK(events.has("B", ManagedState::up, ManagedState::stopped));
    CHECK(echo_once(ports[0]));
}

TEST_CASE("local service down: degraded within one probe interval, still accepting; back up when it returns")
{
    t::SshServer server;
    t::EchoService echo;
    const std::uint16_t port = free_ports(1)[0];
    pytun::TunnelManager manager(fast_manager_options());
    EventLog events(manager);
    REQUIRE_FALSE(manager.apply({options_for(server, "svc", port, echo.port(), 1s)}).error);
    {
        bool up = t::wait_until(
            [&] {
                auto s = status_of(manager, "svc");
                return s && s->state == ManagedState::up && s->service_checked && s->service_reachable;
            },
            15s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    REQUIRE(echo_once(port));

    echo.stop();
    const auto stopped_at = Clock::now();
    // One interval (1 s) plus a margin for the probe itself and scheduling.
    const bool degraded = t::wait_until([&] { return is_state(manager, "svc", ManagedState::degraded); }, 2500ms);
    const long long degraded_ms = ms_since(stopped_at);
    {
        INFO(describe(manager.status()));
        CHECK(degraded);
    }
    MESSAGE("degraded " << degraded_ms << " ms after the service stopped (keep_alive 1 s)");
    auto s = *status_of(manager, "svc");
    CHECK_FALSE(s.service_reachable);
    CHECK_FALSE(s.service_error.empty());
    CHECK(events.has("svc", ManagedState::up, ManagedState::degraded));
    for (const auto &e : events.snapshot())
        if (e.event.to == ManagedState::degraded)
            CHECK(e.event.error == pytun::make_error_code(Errc::local_service_unreachable));

    // Still serving: the bastion accepts, the relay finds no service and closes.
    CHECK(accepted_then_closed(port, 5s));
    CHECK(is_state(manager, "svc", ManagedState::degraded));

    echo.start();
    const auto back_at = Clock::now();
    const bool up = t::wait_until([&] { return is_state(manager, "svc", ManagedState::up); }, 2500ms);
    {
        INFO(describe(manager.status()));
        CHECK(up);
    }
    MESSAGE("up again " << ms_since(back_at) << " ms after the service returned");
    CHECK(echo_once(port));
    CHECK(events.has("svc", ManagedState::degraded, ManagedState::up));
    CHECK(status_of(manager, "svc")->started_times == 1); // degraded never restarts the tunnel
}

TEST_CASE("events: connecting -> up with the right names; a destroyed Subscription gets nothing more")
{
    CHECK(std::string(pytun::to_string(ManagedState::connecting)) == "connecting");
    CHECK(std::string(pytun::to_string(ManagedState::up)) == "up");
    CHECK(std::string(pytun::to_string(ManagedState::degraded)) == "degraded");
    CHECK(std::string(pytun::to_string(ManagedState::backing_off)) == "backing off");
    CHECK(std::string(pytun::to_string(ManagedState::stopped)) == "stopped");

    t::SshServer server;
    t::EchoService echo;
    const auto ports = free_ports(2);
    pytun::TunnelManager manager(fast_manager_options());
    EventLog kept(manager);
    // A second subscriber whose counter outlives its subscription.
    auto dropped_calls = std::make_shared<std::atomic<std::size_t>>(0);
    pytun::Subscription dropped = manager.subscribe([dropped_calls](const pytun::TunnelEvent &) { ++*dropped_calls; });
    CHECK(static_cast<bool>(dropped));

    REQUIRE_FALSE(manager.apply({options_for(server, "ev-one", ports[0], echo.port())}).error);
    REQUIRE(t::wait_until([&] { return kept.has("ev-one", ManagedState::connecting, ManagedState::up); }, 15s));
    {
        auto all = kept.snapshot();
        INFO(kept.dump());
        REQUIRE(all.size() >= 2);
        CHECK(all[0].event.name == "ev-one");
        CHECK(all[0].event.from == ManagedState::stopped);
        CHECK(all[0].event.to == ManagedState::connecting);
        CHECK(all[1].event.name == "ev-one");
        CHECK(all[1].event.from == ManagedState::connecting);
        CHECK(all[1].event.to == ManagedState::up);
        CHECK_FALSE(all[1].event.error);
        CHECK(all[1].event.when.time_since_epoch().count() != 0);
        for (const auto &e : all)
            CHECK(e.thread != std::this_thread::get_id()); // delivered on an event-loop thread
        CHECK(dropped_calls->load() >= 2);
    }

    // A subscription made now is not called from inside subscribe() (nothing replayed).
    {
        EventLog late(manager);
        CHECK(late.size() == 0);
    }

    // Destroy one subscription, then cause changes: ev-one stops, ev-two starts.
    dropped = pytun::Subscription();
    CHECK_FALSE(static_cast<bool>(dropped));
    const std::size_t dropped_before = dropped_calls->load();
    const std::size_t kept_before = kept.size();
    REQUIRE_FALSE(manager.apply({options_for(server, "ev-two", ports[1], echo.port())}).error);
    REQUIRE(t::wait_until([&] { return kept.has("ev-one", ManagedState::up, ManagedState::stopped); }, 10s));
    REQUIRE(t::wait_until([&] { return kept.has("ev-two", ManagedState::connecting, ManagedState::up); }, 15s));
    INFO(kept.dump());
    CHECK(kept.size() >= kept_before + 3);
    CHECK(dropped_calls->load() == dropped_before);

    manager.stop();
    CHECK(t::wait_until([&] { return kept.has("ev-two", ManagedState::up, ManagedState::stopped); }, 5s));
    CHECK(dropped_calls->load() == dropped_before);
}

TEST_CASE("status() answers at once while the health probe of a black-hole service hangs")
{
    t::SshServer server;
    BlackHoleService hole;
    // The black hole really swallows connects (the probe's connect must hang).
    REQUIRE(t::connect_tcp(hole.port, 300ms) < 0);
    const auto ports = free_ports(1);
    pytun::TunnelManager manager(fast_manager_options());
    REQUIRE_FALSE(manager.apply({options_for(server, "hole", ports[0], hole.port, 1s)}).error);

    // The SSH side comes up regardless; the service probe hangs until its
    // timeout, then the tunnel is degraded. status() must never wait for it.
    const auto t0 = Clock::now();
    long long slowest_us = 0;
    std::size_t calls = 0;
    bool degraded = false;
    while (Clock::now() - t0 < 10s && !degraded) {
        const auto c0 = Clock::now();
        auto st = manager.status();
        const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c0).count();
        slowest_us = std::max<long long>(slowest_us, took);
        ++calls;
        CHECK(took < 50000);
        REQUIRE(st.size() == 1);
        degraded = st[0].state == ManagedState::degraded;
        std::this_thread::sleep_for(2ms);
    }
    INFO(describe(manager.status()));
    CHECK(degraded);
    MESSAGE("black-hole service: degraded after " << ms_since(t0) << " ms; " << calls
                                                   << " status() calls meanwhile, slowest " << slowest_us << " us");
    auto s = *status_of(manager, "hole");
    CHECK_FALSE(s.service_reachable);
    CHECK_FALSE(s.service_error.empty());
    const auto s0 = Clock::now();
    manager.stop();
    CHECK(ms_since(s0) < 5000);
}

TEST_CASE("responsive(): true while the loops run handlers, false while one is stuck (the watchdog's basis)")
{
    t::SshServer server;
    t::EchoService echo;
    const auto ports = free_ports(1);
    pytun::TunnelManager manager(fast_manager_options());
    CHECK(manager.responsive(1s));

    // A subscriber that blocks its loop thread on the first event: that loop
    // is stuck until the test releases it.
    std::mutex mutex;
    std::condition_variable released_cv;
    bool released = false;
    std::atomic<bool> blocking{false};
    pytun::Subscription blocker = manager.subscribe([&](const pytun::TunnelEvent &) {
        if (blocking.exchange(true))
            return;
        std::unique_lock lock(mutex);
        released_cv.wait(lock, [&] { return released; });
    });
    REQUIRE_FALSE(manager.apply({options_for(server, "stuck", ports[0], echo.port())}).error);
    REQUIRE(t::wait_until([&] { return blocking.load(); }, 10s));
    CHECK_FALSE(manager.responsive(300ms));
    {
        std::lock_guard lock(mutex);
        released = true;
    }
    released_cv.notify_all();
    CHECK(t::wait_until([&] { return manager.responsive(300ms); }, 5s));
    blocker.reset();
    manager.stop();
    CHECK_FALSE(manager.responsive(100ms)); // stopped: no loop answers
}
