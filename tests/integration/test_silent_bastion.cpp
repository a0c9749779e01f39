// SPDX-License-Identifier: MIT
// A bastion that goes silent (no RST, no FIN): the manager declares the tunnel
// dead within keep_alive + 5 s and recovers once the network returns. The
// bastion's sshd runs in a network namespace reached over a veth pair from a
// second namespace where the test itself (the client) runs; nft drops the link.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <pytun/error.h>
#include <pytun/manager.h>
#include <pytun/tunnel.h>

#include "fixture.h"

extern char **environ;

using namespace std::chrono_literals;
using pytun::ManagedState;
namespace t = pytun::test;
using Clock = std::chrono::steady_clock;

namespace {

// Everything this test creates carries this prefix plus its pid, so that a
// later run can remove what a killed run left behind.
constexpr const char *k_prefix = "pytun-sb-";
constexpr const char *k_client_ip = "198.18.0.1";
constexpr const char *k_bastion_ip = "198.18.0.2";
constexpr std::uint16_t k_bastion_listen = 4000;

long long ms_since(Clock::time_point start)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

std::string read_text(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

/// posix_spawnp without a shell: stdin /dev/null, stdout+stderr to `out_fd`,
/// no other descriptors inherited, default signal handling.
pid_t spawn(const std::vector<std::string> &argv, int out_fd)
{
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc == 0 ? pid : -1;
}

/// Run a command to completion; returns its exit status (-1 if it could not
/// run) and its output in `output`.
int run(const std::vector<std::string> &argv, std::string *output = nullptr)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = spawn(argv, fds[1]);
    ::close(fds[1]);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n > 0)
            out.append(buf, static_cast<std::size_t>(n));
        else if (n == 0 || errno != EINTR)
            break;
    }
    ::close(fds[0]);
    if (output)
        *output = out;
    if (pid < 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string joined(const std::vector<std::string> &argv)
{
    std::string s;
    for (const auto &a : argv)
        s += (s.empty() ? "" : " ") + a;
    return s;
}

/// Run a command that must succeed (REQUIRE, with its output on failure).
void must(const std::vector<std::string> &argv)
{
    std::string out;
    int rc = run(argv, &out);
    INFO(joined(argv) << " -> " << rc << ": " << out);
    REQUIRE(rc == 0);
}

/// Where a system tool is installed; empty when it is not.
std::string find_tool(const char *name)
{
    for (const char *dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
        std::string path = std::string(dir) + name;
        if (::access(path.c_str(), X_OK) == 0)
            return path;
    }
    return {};
}

std::string g_ip = find_tool("ip");
std::string g_nft = find_tool("nft");

/// PIDs of the processes in a named network namespace (`ip netns pids`).
std::vector<pid_t> pids_in(const std::string &ns)
{
    std::string out;
    std::vector<pid_t> pids;
    if (run({g_ip, "netns", "pids", ns}, &out) != 0)
        return pids;
    std::istringstream in(out);
    long p = 0;
    while (in >> p)
        if (p > 0 && p != getpid())
            pids.push_back(static_cast<pid_t>(p));
    return pids;
}

/// Kill what runs in a namespace this test (or an earlier run of it) created.
void kill_namespace_processes(const std::string &ns)
{
    for (pid_t p : pids_in(ns))
        ::kill(p, SIGKILL);
    t::wait_until([&] { return pids_in(ns).empty(); }, 3s);
}

/// A namespace left by a run that was killed (its pid is gone) is removed.
void remove_leftovers()
{
    std::string out;
    if (run({g_ip, "netns", "list"}, &out) != 0)
        return;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        std::string name = line.substr(0, line.find(' '));
        if (name.rfind(k_prefix, 0) != 0)
            continue;
        long owner = std::strtol(name.c_str() + std::strlen(k_prefix), nullptr, 10);
        if (owner <= 0 || owner == getpid() || ::kill(static_cast<pid_t>(owner), 0) == 0 || errno != ESRCH)
            continue;
        MESSAGE("removing leftover namespace " << name);
        kill_namespace_processes(name);
        run({g_ip, "netns", "del", name});
    }
}

/// Two namespaces joined by a veth pair: the client (198.18.0.1/30) and the
/// bastion (198.18.0.2/30). Nothing is added to the default namespace; both
/// veth ends are created directly inside their namespaces. The destructor
/// kills what runs inside and deletes both (which deletes the veth pair and
/// every nft table in them).
struct Namespaces {
    std::string client, bastion, veth_client, veth_bastion;

    Namespaces()
    {
        const std::string id = std::to_string(getpid());
        client = k_prefix + id + "-c";
        bastion = k_prefix + id + "-b";
        veth_client = "psb" + id + "c";
        veth_bastion = "psb" + id + "b";
        must({g_ip, "netns", "add", client});
        created_client = true;
        must({g_ip, "netns", "add", bastion});
        created_bastion = true;
        must({g_ip, "link", "add", veth_client, "netns", client, "type", "veth", "peer", "name", veth_bastion,
              "netns", bastion});
        must({g_ip, "-n", client, "addr", "add", std::string(k_client_ip) + "/30", "dev", veth_client});
        must({g_ip, "-n", bastion, "addr", "add", std::string(k_bastion_ip) + "/30", "dev", veth_bastion});
        for (const auto &[ns, dev] : {std::pair{client, veth_client}, std::pair{bastion, veth_bastion}}) {
            must({g_ip, "-n", ns, "link", "set", "lo", "up"});
            must({g_ip, "-n", ns, "link", "set", dev, "up"});
        }
    }
    ~Namespaces()
    {
        for (const auto &[ns, created] : {std::pair{bastion, created_bastion}, std::pair{client, created_client}}) {
            if (!created)
                continue;
            kill_namespace_processes(ns);
            std::string out;
            if (run({g_ip, "netns", "del", ns}, &out) != 0)
                std::fprintf(stderr, "cannot delete namespace %s: %s\n", ns.c_str(), out.c_str());
        }
    }
    Namespaces(const Namespaces &) = delete;
    Namespaces &operator=(const Namespaces &) = delete;

    bool created_client = false, created_bastion = false;
};

/// The calling thread joins a named network namespace until destruction.
/// Threads it creates meanwhile (the manager's, the services') are born there.
struct EnterNamespace {
    int original = -1;
    explicit EnterNamespace(const std::string &ns)
    {
        original = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        REQUIRE(original >= 0);
        int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        const int rc = ::setns(fd, CLONE_NEWNET);
        ::close(fd);
        REQUIRE(rc == 0);
    }
    ~EnterNamespace()
    {
        if (::setns(original, CLONE_NEWNET) != 0)
            std::fprintf(stderr, "cannot return to the original network namespace: %s\n", std::strerror(errno));
        ::close(original);
    }
    EnterNamespace(const EnterNamespace &) = delete;
    EnterNamespace &operator=(const EnterNamespace &) = delete;
};

/// Run `fn` on a thread of its own inside namespace `ns`; returns its result.
bool in_namespace(const std::string &ns, const std::function<bool()> &fn)
{
    bool result = false;
    std::thread th([&] {
        int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return;
        const int rc = ::setns(fd, CLONE_NEWNET);
        ::close(fd);
        if (rc == 0)
            result = fn();
    });
    th.join();
    return result;
}

/// TCP connect to address:port within `timeout`.
bool tcp_accepts(const char *address, std::uint16_t port, std::chrono::milliseconds timeout)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, address, &addr.sin_addr);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            ok = err == 0;
        }
    }
    ::close(fd);
    return ok;
}

/// The fixture's sshd configuration and keys, run in the bastion namespace on
/// 198.18.0.2:22. Like a production bastion it checks its clients
/// (ClientAliveInterval), so the session of a client that vanished ends and
/// its forwarded port is freed; the stale-port path itself is covered in
/// test_manager.
struct BastionSshd {
    pid_t pid = -1;
    std::string ns, log_path;

    BastionSshd(const t::SshServer &files, const std::string &ns_name) : ns(ns_name)
    {
        const std::string dir = files.dir();
        std::istringstream original(read_text(dir + "/sshd_config"));
        std::string config, line;
        while (std::getline(original, line)) {
            for (const char *drop : {"Port ", "ListenAddress ", "PidFile ", "ClientAlive"})
                if (line.rfind(drop, 0) == 0)
                    line.clear();
            if (!line.empty())
                config += line + "\n";
        }
        config += "ListenAddress " + std::string(k_bastion_ip) + ":22\n";
        config += "PidFile " + dir + "/sshd-ns.pid\n";
        config += "ClientAliveInterval 1\nClientAliveCountMax 3\n";
        const std::string config_path = dir + "/sshd_ns_config";
        {
            std::ofstream out(config_path);
            out << config;
            REQUIRE(out.good());
        }
        log_path = dir + "/sshd-ns.log";
        int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        REQUIRE(log_fd >= 0);
        // `ip netns exec` execs sshd in place: pid is sshd's own.
        pid = spawn({g_ip, "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", config_path}, log_fd);
        ::close(log_fd);
        REQUIRE(pid > 0);
    }
    ~BastionSshd()
    {
        t::end_process(pid);
        // Its per-session processes are no children of ours; they live in the
        // namespace, which only we use.
        kill_namespace_processes(ns);
    }
    BastionSshd(const BastionSshd &) = delete;
    BastionSshd &operator=(const BastionSshd &) = delete;

    std::string log() const { return read_text(log_path); }
};

/// known_hosts for the bastion at 198.18.0.2 (port 22: plain host form).
std::string write_known_hosts(const t::SshServer &files)
{
    std::string text;
    for (const char *key : {"ssh_host_ed25519_key.pub", "ssh_host_ecdsa_key.pub"}) {
        std::istringstream pub(read_text(files.dir() + "/" + key));
        std::string type, blob;
        pub >> type >> blob;
        REQUIRE_FALSE(blob.empty());
        text += std::string(k_bastion_ip) + " " + type + " " + blob + "\n";
    }
    const std::string path = files.dir() + "/known_hosts_ns";
    std::ofstream out(path);
    out << text;
    REQUIRE(out.good());
    return path;
}

std::optional<pytun::TunnelStatus> status_of(const pytun::TunnelManager &manager, const std::string &name)
{
    for (auto &s : manager.status())
        if (s.name == name)
            return s;
    return std::nullopt;
}

std::string describe(const std::optional<pytun::TunnelStatus> &s)
{
    if (!s)
        return "(no status)";
    std::ostringstream out;
    out << s->name << ": " << pytun::to_string(s->state) << " started_times=" << s->started_times
        << " port_held=" << s->port_held << " probe_rtt_us=" << s->probe_rtt.count();
    if (s->last_error)
        out << " last_error=" << s->last_error.message() << " (" << s->last_error_message << ")";
    return out.str();
}

bool serving(ManagedState s) { return s == ManagedState::up || s == ManagedState::degraded; }

} // namespace

TEST_CASE("silent bastion: declared dead within keep_alive + 5 s, recovers when the network returns")
{
    if (::geteuid() != 0)
        t::skip("needs root (network namespaces)");
    if (g_ip.empty() || g_nft.empty())
        t::skip("ip or nft not found (install iproute2 and nftables)");
    {
        // A container without CAP_SYS_ADMIN cannot make namespaces: skip, not fail.
        std::string probe_ns = std::string(k_prefix) + std::to_string(getpid()) + "-probe";
        std::string out;
        if (run({g_ip, "netns", "add", probe_ns}, &out) != 0)
            t::skip("cannot create a network namespace: " + out);
        run({g_ip, "netns", "del", probe_ns});
    }
    remove_leftovers();

    // Keys, host keys, sshd_config; the loopback sshd it starts is not used.
    t::SshServer files;
    files.stop();
    const std::string known_hosts = write_known_hosts(files);

    Namespaces net;
    BastionSshd bastion(files, net.bastion);
    EnterNamespace enter(net.client); // the test and the manager run as the client
    {
        const bool listening = t::wait_until([&] { return tcp_accepts(k_bastion_ip, 22, 200ms); }, 10s);
        INFO(bastion.log());
        REQUIRE(listening);
    }

    t::EchoService echo; // 127.0.0.1 in the client namespace
    constexpr auto k_keep_alive = 2s;
    pytun::TunnelOptions o;
    o.name = "silent";
    o.server_host = k_bastion_ip;
    o.server_port = 22;
    o.username = files.user();
    o.key_file = files.key_ed25519();
    o.known_hosts_file = known_hosts;
    o.bind_address = "127.0.0.1";
    o.listen_port = k_bastion_listen;
    o.remote_host = "127.0.0.1";
    o.remote_port = echo.port();
    o.connect_timeout = 3s;
    o.keep_alive = k_keep_alive;

    pytun::ManagerOptions mo;
    mo.threads = 1;
    mo.backoff_initial = 200ms;
    mo.backoff_max = 1000ms;
    mo.stable_after = 2000ms;
    mo.port_held_retry_max = 500ms;
    mo.grace_period = 500ms;
    pytun::TunnelManager manager(mo);
    REQUIRE_FALSE(manager.apply({o}).error);

    auto state_is = [&](ManagedState st) {
        auto s = status_of(manager, "silent");
        return s && s->state == st;
    };
    auto echo_via_bastion = [&] {
        return in_namespace(net.bastion, [] {
            auto r = t::run_echo_load(k_bastion_listen, 1, 16 * 1024, 5s);
            return r.ok == 1 && r.failed == 0;
        });
    };
    {
        const bool up = t::wait_until([&] { return state_is(ManagedState::up); }, 15s);
        INFO(describe(status_of(manager, "silent")));
        INFO(bastion.log());
        REQUIRE(up);
    }
    REQUIRE(echo_via_bastion());
    // The end-to-end SSH probe runs every keep_alive and records its round
    // trip. Going silent right after a probe was answered is the worst phase
    // for detection: the next probe is a whole keep_alive away.
    {
        const bool probed = t::wait_until([&] { return status_of(manager, "silent")->probe_rtt.count() >= 0; },
                                          k_keep_alive * 2 + 2s);
        INFO(describe(status_of(manager, "silent")));
        CHECK(probed);
    }

    // Silence: drop everything on the bastion's link, both ways, no RST.
    const std::string rules = files.dir() + "/silence.nft";
    {
        std::ofstream out(rules);
        out << "table inet pytunsb {\n"
            << "  chain input { type filter hook input priority -300; policy accept; iifname \"" << net.veth_bastion
            << "\" drop; }\n"
            << "  chain output { type filter hook output priority -300; policy accept; oifname \""
            << net.veth_bastion << "\" drop; }\n"
            << "}\n";
    }
    const std::uint64_t attempts_before = status_of(manager, "silent")->started_times;
    // Timed from just before the rules go in: the bastion may fall silent
    // any moment from here on.
    const auto silent_at = Clock::now();
    must({g_ip, "netns", "exec", net.bastion, g_nft, "-f", rules});
    MESSAGE("nft drop in place " << ms_since(silent_at) << " ms after silent_at");
    REQUIRE_FALSE(tcp_accepts(k_bastion_ip, 22, 500ms)); // really silent

    const bool declared = t::wait_until([&] { return !serving(status_of(manager, "silent")->state); }, 20s);
    const long long declared_ms = ms_since(silent_at);
    const auto dead = status_of(manager, "silent");
    {
        INFO(describe(dead));
        CHECK(declared);
        CHECK(declared_ms <= std::chrono::duration_cast<std::chrono::milliseconds>(k_keep_alive + 5s).count());
        CHECK(dead->last_error);
    }
    MESSAGE("silent bastion declared dead after " << declared_ms << " ms (keep_alive " << k_keep_alive.count()
                                                  << " s, limit " << k_keep_alive.count() + 5 << " s): "
                                                  << describe(dead));

    // It keeps trying while the network is down, without success.
    {
        const bool retried = t::wait_until([&] { return status_of(manager, "silent")->started_times > attempts_before; },
                                           10s);
        INFO(describe(status_of(manager, "silent")));
        CHECK(retried);
        CHECK_FALSE(serving(status_of(manager, "silent")->state));
    }

    // The network returns.
    must({g_ip, "netns", "exec", net.bastion, g_nft, "delete", "table", "inet", "pytunsb"});
    const auto restored_at = Clock::now();
    // Bound: an attempt under way may need its connect timeout, then one backoff.
    const auto bound = o.connect_timeout + mo.backoff_max + 3s;
    const bool recovered =
        t::wait_until([&] { return state_is(ManagedState::up) && echo_via_bastion(); }, bound + 20s);
    const long long recovered_ms = ms_since(restored_at);
    {
        INFO(describe(status_of(manager, "silent")));
        INFO(bastion.log());
        CHECK(recovered);
        CHECK(recovered_ms <= bound.count());
    }
    MESSAGE("network back: serving again after " << recovered_ms << " ms (bound " << bound.count() << " ms)");

    manager.stop();
}
