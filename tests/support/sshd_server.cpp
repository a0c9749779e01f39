// SPDX-License-Identifier: MIT
// SshServer: a loopback OpenSSH sshd prepared by sshd_fixture.py, stopped by PID.
#include "fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#ifndef PYTUN_SSHD_FIXTURE
#error "PYTUN_SSHD_FIXTURE (path of sshd_fixture.py) must be defined by the build"
#endif

extern char **environ;

namespace pytun::test {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Where a program would be found on PATH (or the path itself if it has a '/').
std::string find_program(const std::string &name)
{
    if (name.find('/') != std::string::npos)
        return access(name.c_str(), X_OK) == 0 ? name : std::string();
    const char *path = std::getenv("PATH");
    std::istringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
        struct stat st {};
        if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return {};
}

/// posix_spawn without a shell. stdin is /dev/null; stdout and stderr are
/// appended to `output_path`, or stdout goes to `stdout_fd` (stderr inherited)
/// when that is >= 0. Descriptors other than 0-2 are not inherited, so the
/// child never holds a test's sockets.
pid_t spawn(const std::vector<std::string> &argv, const std::string &output_path, int stdout_fd = -1)
{
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (stdout_fd >= 0) {
        posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, output_path.c_str(),
                                         O_WRONLY | O_CREAT | O_APPEND, 0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
    // A fresh signal mask and default dispositions: a test may block or ignore
    // signals, and sshd must still die on SIGTERM.
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
    if (rc != 0)
        throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    return pid;
}

std::string read_file(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::string tail(const std::string &text, std::size_t lines = 30)
{
    std::size_t pos = text.size();
    for (std::size_t n = 0; n <= lines && pos > 0; ++n) {
        pos = text.rfind('\n', pos - 1);
        if (pos == std::string::npos) {
            pos = 0;
            break;
        }
    }
    return text.substr(pos);
}

/// Reaps `pid` if it has exited; true if it is gone (or was never ours).
bool reap_if_exited(pid_t pid, int *status = nullptr)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid && status)
        *status = st;
    return r == pid || (r < 0 && errno == ECHILD);
}

/// Parent pid and state of a process from /proc/PID/stat; false if gone.
bool proc_stat(pid_t pid, pid_t *ppid, char *state)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line))
        return false;
    auto close = line.rfind(')');
    if (close == std::string::npos)
        return false;
    std::istringstream fields(line.substr(close + 1));
    long parent = 0;
    fields >> *state >> parent;
    *ppid = static_cast<pid_t>(parent);
    return bool(fields);
}

/// All descendants of `root` (sshd's per-connection processes).
std::vector<pid_t> descendants(pid_t root)
{
    std::multimap<pid_t, pid_t> children;
    if (DIR *d = opendir("/proc")) {
        while (dirent *e = readdir(d)) {
            char *end = nullptr;
            long pid = std::strtol(e->d_name, &end, 10);
            if (*end != '\0' || pid <= 0)
                continue;
            pid_t ppid = 0;
            char state = 0;
            if (proc_stat(static_cast<pid_t>(pid), &ppid, &state))
                children.emplace(ppid, static_cast<pid_t>(pid));
        }
        closedir(d);
    }
    std::vector<pid_t> out;
    std::vector<pid_t> todo{root};
    while (!todo.empty()) {
        pid_t p = todo.back();
        todo.pop_back();
        auto [b, e] = children.equal_range(p);
        for (auto it = b; it != e; ++it) {
            out.push_back(it->second);
            todo.push_back(it->second);
        }
    }
    return out;
}

/// Processes hold_remote_port() started that nobody has reaped yet, so that a
/// destructor never signals a pid that end_process() reaped and the kernel reused.
std::mutex g_holders_mutex;
std::set<pid_t> g_holders;

void forget_holder(pid_t pid)
{
    std::lock_guard lock(g_holders_mutex);
    g_holders.erase(pid);
}

bool is_unreaped_holder(pid_t pid)
{
    std::lock_guard lock(g_holders_mutex);
    return g_holders.count(pid) != 0;
}

bool process_alive(pid_t pid)
{
    pid_t ppid = 0;
    char state = 0;
    return proc_stat(pid, &ppid, &state) && state != 'Z' && state != 'X';
}

} // namespace

/// \brief Print why the test cannot run here and exit 77 (skipped).
void skip(const std::string &why)
{
    std::fprintf(stderr, "SKIP: %s\n", why.c_str());
    std::fflush(nullptr);
    // _Exit: objects of the test are still alive on the stack, some with threads.
    std::_Exit(77);
}

/// \brief Poll `condition` every 5 ms until it holds or `deadline` passes.
bool wait_until(const std::function<bool()> &condition, std::chrono::milliseconds deadline)
{
    const auto end = Clock::now() + deadline;
    for (;;) {
        if (condition())
            return true;
        if (Clock::now() >= end)
            return false;
        std::this_thread::sleep_for(5ms);
    }
}

/// \brief SIGTERM a process we started, SIGKILL it after 2 s, and reap it.
void end_process(pid_t pid)
{
    if (pid <= 0)
        return;
    if (!reap_if_exited(pid)) {
        kill(pid, SIGTERM);
        if (!wait_until([pid] { return reap_if_exited(pid); }, 2s)) {
            kill(pid, SIGKILL);
            while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
            }
        }
    }
    forget_holder(pid);
}

pid_t spawn_process(const std::vector<std::string> &argv, const std::string &output_path)
{
    return spawn(argv, output_path);
}

int run_process(const std::vector<std::string> &argv, const std::string &output_path)
{
    const pid_t pid = spawn(argv, output_path);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct SshServer::Impl {
    std::string dir;
    nlohmann::json info;
    std::uint16_t port = 0;
    pid_t pid = -1;
    std::vector<pid_t> holders; ///< hold_remote_port() clients

    std::string path(const char *key) const { return info.at(key).get<std::string>(); }

    std::vector<std::string> ssh_base_args(const std::string &key) const
    {
        return {"-F", "/dev/null",
                "-i", key,
                "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none",
                "-o", "UserKnownHostsFile=" + path("known_hosts_bracketed"),
                "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes",
                "-o", "ServerAliveInterval=0",
                "-p", std::to_string(port),
                "-l", path("user")};
    }

    /// Signal sshd and its per-connection processes, so clients see the
    /// server go away as on a real restart or crash, then reap sshd.
    void signal_all(int sig)
    {
        if (pid <= 0)
            return;
        std::vector<pid_t> sessions = descendants(pid);
        kill(pid, sig);
        for (pid_t p : sessions)
            kill(p, sig);
        while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        pid = -1;
        // Sessions were re-parented; wait until they are gone so that their
        // forwarded ports are free before the next start().
        auto all_gone = [&] {
            for (pid_t p : sessions)
                if (process_alive(p))
                    return false;
            return true;
        };
        if (!wait_until(all_gone, 2s)) {
            for (pid_t p : sessions)
                if (process_alive(p))
                    kill(p, SIGKILL);
            wait_until(all_gone, 2s);
        }
    }

    struct BindFailed : std::runtime_error {
        using std::runtime_error::runtime_error;
    };

    /// Spawn sshd and wait until it accepts TCP (10 s). A failed bind is
    /// retried when `retry_bind`, else reported as BindFailed at once.
    void launch(bool retry_bind)
    {
        const std::string log_path = path("sshd_log");
        const auto end = Clock::now() + 10s;
        for (;;) {
            const auto log_offset = read_file(log_path).size();
            pid = spawn({path("sshd"), "-D", "-e", "-f", path("sshd_config")}, log_path);
            bool exited = false;
            while (Clock::now() < end) {
                if (reap_if_exited(pid)) {
                    exited = true;
                    pid = -1;
                    break;
                }
                if (tcp_port_accepts(port))
                    return;
                std::this_thread::sleep_for(10ms);
            }
            const std::string log_now = read_file(log_path);
            const std::string fresh = log_now.substr(std::min(log_offset, log_now.size()));
            if (!exited) {
                signal_all(SIGKILL);
                throw std::runtime_error("sshd did not accept on 127.0.0.1:" + std::to_string(port) +
                                         " within 10 s; log:\n" + tail(log_now));
            }
            const bool bind_failed = fresh.find("Address already in use") != std::string::npos ||
                                     fresh.find("Cannot bind any address") != std::string::npos;
            const std::string what =
                "sshd exited at startup on port " + std::to_string(port) + "; log:\n" + tail(log_now);
            if (bind_failed && !retry_bind)
                throw BindFailed(what);
            if (!bind_failed || Clock::now() >= end)
                throw std::runtime_error(what);
            std::this_thread::sleep_for(100ms);
        }
    }
};

/// \brief Prepare a fresh server directory with sshd_fixture.py and start sshd.
SshServer::SshServer() : impl_(std::make_unique<Impl>())
{
    const std::string python = find_program("python3");
    if (python.empty())
        skip("python3 not found");
    if (access("/usr/sbin/sshd", X_OK) != 0)
        skip("/usr/sbin/sshd not found (install openssh-server)");
    if (find_program("ssh-keygen").empty())
        skip("ssh-keygen not found (install openssh-client)");

    char tmpl[] = "/tmp/pytun-sshd-XXXXXX";
    if (!mkdtemp(tmpl))
        throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    impl_->dir = tmpl;

    // Runs sshd_fixture.py prepare; its stdout is fixture.json.
    auto prepare = [&] {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
            throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
        pid_t child = -1;
        try {
            child = spawn({python, PYTUN_SSHD_FIXTURE, "prepare", impl_->dir}, {}, fds[1]);
        } catch (...) {
            close(fds[0]);
            close(fds[1]);
            throw;
        }
        close(fds[1]);
        std::string out;
        char buf[4096];
        for (;;) {
            ssize_t n = read(fds[0], buf, sizeof buf);
            if (n > 0)
                out.append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || errno != EINTR)
                break;
        }
        close(fds[0]);
        int status = 0;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
            std::error_code ec;
            std::filesystem::remove_all(impl_->dir, ec);
            skip("sshd_fixture.py prepare: a required tool is missing");
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            throw std::runtime_error("sshd_fixture.py prepare " + impl_->dir + " failed (status " +
                                     std::to_string(status) + ")");
        impl_->info = nlohmann::json::parse(out);
        impl_->port = impl_->info.at("port").get<std::uint16_t>();
    };

    try {
        // The free port was only free when prepare looked; if someone else
        // took it since, prepare again with another one.
        constexpr int k_attempts = 3;
        for (int attempt = 1;; ++attempt) {
            prepare();
            try {
                impl_->launch(attempt == k_attempts);
                break;
            } catch (const Impl::BindFailed &) {
                if (attempt == k_attempts)
                    throw;
            }
        }
    } catch (...) {
        impl_->signal_all(SIGKILL);
        std::error_code ec;
        std::filesystem::remove_all(impl_->dir, ec);
        throw;
    }
}

/// \brief Ends hold_remote_port() clients and sshd, then removes the directory.
SshServer::~SshServer()
{
    for (pid_t p : impl_->holders)
        if (is_unreaped_holder(p))
            end_process(p);
    impl_->signal_all(SIGTERM);
    std::error_code ec;
    std::filesystem::remove_all(impl_->dir, ec);
}

/// \brief Start sshd (again) on the same port; returns once it accepts TCP.
///
/// A restarted server may find the port still bound for a moment (TIME_WAIT
/// is fine thanks to SO_REUSEADDR, a dying listener is not), so a failed bind
/// is retried until the 10 s deadline.
void SshServer::start()
{
    if (running())
        return;
    impl_->launch(true);
}

/// \brief SIGTERM sshd (and its sessions) by PID and reap it.
void SshServer::stop() { impl_->signal_all(SIGTERM); }

/// \brief SIGKILL sshd (and its sessions) by PID, as a crash would.
void SshServer::kill_hard() { impl_->signal_all(SIGKILL); }

bool SshServer::running() const
{
    if (impl_->pid <= 0)
        return false;
    if (reap_if_exited(impl_->pid)) {
        impl_->pid = -1;
        return false;
    }
    return true;
}

pid_t SshServer::pid() const { return impl_->pid; }
std::uint16_t SshServer::port() const { return impl_->port; }
const std::string &SshServer::dir() const { return impl_->dir; }
std::string SshServer::user() const { return impl_->path("user"); }
std::string SshServer::log() const { return read_file(impl_->path("sshd_log")); }

std::string SshServer::key_ed25519() const { return impl_->path("key_ed25519"); }
std::string SshServer::key_ecdsa() const { return impl_->path("key_ecdsa"); }
std::string SshServer::key_rsa() const { return impl_->path("key_rsa"); }
std::string SshServer::key_encrypted() const { return impl_->path("key_encrypted"); }
std::string SshServer::key_unauthorized() const { return impl_->path("key_unauthorized"); }

std::string SshServer::known_hosts_bracketed() const { return impl_->path("known_hosts_bracketed"); }
std::string SshServer::known_hosts_plain() const { return impl_->path("known_hosts_plain"); }
std::string SshServer::known_hosts_hashed() const { return impl_->path("known_hosts_hashed"); }
std::string SshServer::known_hosts_changed() const { return impl_->path("known_hosts_changed"); }
std::string SshServer::known_hosts_unknown() const { return impl_->path("known_hosts_unknown"); }
std::string SshServer::known_hosts_messy() const { return impl_->path("known_hosts_messy"); }

std::string SshServer::host_key_fingerprint_ed25519() const
{
    return impl_->path("host_key_fingerprint_ed25519");
}

std::string SshServer::host_key_fingerprint_ecdsa() const
{
    return impl_->path("host_key_fingerprint_ecdsa");
}

/// \brief Append a line to authorized_keys; sshd reads it on every login.
void SshServer::authorize(const std::string &authorized_keys_line)
{
    std::ofstream out(impl_->path("authorized_keys"), std::ios::app);
    out << authorized_keys_line;
    if (authorized_keys_line.empty() || authorized_keys_line.back() != '\n')
        out << '\n';
    if (!out)
        throw std::runtime_error("cannot append to " + impl_->path("authorized_keys"));
}

/// \brief Put `line` first in sshd_config (sshd takes the first value it reads
/// for most keywords) and restart sshd with it.
void SshServer::configure(const std::string &sshd_config_line)
{
    const std::string config_path = impl_->path("sshd_config");
    const std::string config = read_file(config_path);
    std::ofstream out(config_path, std::ios::trunc);
    out << sshd_config_line << '\n' << config;
    if (!out)
        throw std::runtime_error("cannot write " + config_path);
    out.close();
    stop();
    start();
}

/// \brief Hold 127.0.0.1:remote_port on the server with an OpenSSH `ssh -N -R`.
/// \return the ssh client's pid; stop it with end_process().
pid_t SshServer::hold_remote_port(std::uint16_t remote_port, std::uint16_t target_port)
{
    const std::string ssh = find_program("ssh");
    if (ssh.empty())
        skip("ssh not found (install openssh-client)");
    std::vector<std::string> argv{ssh};
    for (auto &a : impl_->ssh_base_args(key_ed25519()))
        argv.push_back(std::move(a));
    argv.insert(argv.end(), {"-N", "-R",
                             "127.0.0.1:" + std::to_string(remote_port) + ":127.0.0.1:" +
                                 std::to_string(target_port),
                             "127.0.0.1"});
    const std::string log_path = impl_->dir + "/ssh-hold-" + std::to_string(remote_port) + ".log";
    pid_t child = spawn(argv, log_path);
    {
        std::lock_guard lock(g_holders_mutex);
        g_holders.insert(child);
    }
    impl_->holders.push_back(child);
    const auto end = Clock::now() + 10s;
    while (Clock::now() < end) {
        int status = 0;
        if (reap_if_exited(child, &status)) {
            forget_holder(child);
            throw std::runtime_error("ssh -R " + std::to_string(remote_port) + " exited (status " +
                                     std::to_string(status) + "): " + tail(read_file(log_path)));
        }
        if (tcp_port_accepts(remote_port))
            return child;
        std::this_thread::sleep_for(10ms);
    }
    end_process(child);
    throw std::runtime_error("ssh -R " + std::to_string(remote_port) + " did not listen within 10 s: " +
                             tail(read_file(log_path)));
}

} // namespace pytun::test
