// SPDX-License-Identifier: MIT
// Helpers of the TunnelManager integration tests (test_manager, test_bastions):
// free ports, fast manager timings, status look-ups, echo round trips, a
// verified echo stream, a config directory of tunnels. Included once per test
// program, after doctest. Functions are inline: a program uses some of them.
#pragma once

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

inline long long ms_since(Clock::time_point start)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

inline long long ms_between(Clock::time_point a, Clock::time_point b)
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

inline void write_file(const fs::path &path, const std::string &text)
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
inline std::vector<std::uint16_t> free_ports(std::size_t n)
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
inline pytun::ManagerOptions fast_manager_options()
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

inline pytun::TunnelOptions options_for(const t::SshServer &server, const std::string &name, std::uint16_t listen_port,
                                 std::uint16_t service_port, std::chrono::seconds keep_alive = 1s)
{
    pytun::TunnelOptions o = t::tunnel_options(server, service_port);
    o.name = name;
    o.listen_port = listen_port;
    o.connect_timeout = 5s;
    o.keep_alive = keep_alive;
    return o;
}

inline std::optional<pytun::TunnelStatus> status_of(const pytun::TunnelManager &manager, const std::string &name)
{
    for (auto &s : manager.status())
        if (s.name == name)
            return s;
    return std::nullopt;
}

inline bool is_state(const pytun::TunnelManager &manager, const std::string &name, ManagedState state)
{
    auto s = status_of(manager, name);
    return s && s->state == state;
}

inline bool serving(ManagedState s) { return s == ManagedState::up || s == ManagedState::degraded; }

/// One line per tunnel, for failure messages.
inline std::string describe(const std::vector<pytun::TunnelStatus> &all)
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
inline bool echo_once(std::uint16_t port)
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
inline std::uint8_t stream_byte(std::uint64_t seed, std::uint64_t offset)
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
inline bool accepted_then_closed(std::uint16_t port, std::chrono::milliseconds deadline)
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
