// SPDX-License-Identifier: MIT
// Running a helper program with stdin, output and a deadline.
#include "util/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char **environ;

namespace pytun::detail {
namespace {

constexpr std::size_t k_max_output = 64 * 1024;

// A pipe, or for the program's stdin a socket pair: writing to it cannot
// raise SIGPIPE in a library's caller (send with MSG_NOSIGNAL).
struct Pipe {
    int fd[2] = {-1, -1};
    bool open() { return ::pipe2(fd, O_CLOEXEC) == 0; }
    bool open_socket() { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0; }
    void close_end(int i)
    {
        if (fd[i] >= 0)
            ::close(fd[i]);
        fd[i] = -1;
    }
    ~Pipe()
    {
        close_end(0);
        close_end(1);
    }
};

bool executable(const std::string &path)
{
    return ::access(path.c_str(), X_OK) == 0;
}

} // namespace

std::string find_program(const std::string &name)
{
    if (name.find('/') != std::string::npos)
        return executable(name) ? name : std::string();
    std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
    path += ":/usr/sbin:/sbin:/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= path.size()) {
        const std::size_t end = std::min(path.find(':', start), path.size());
        const std::string dir = path.substr(start, end - start);
        if (!dir.empty() && executable(dir + "/" + name))
            return dir + "/" + name;
        start = end + 1;
    }
    return {};
}

ProgramResult run_program(const std::vector<std::string> &argv, const std::string &input,
                          std::chrono::milliseconds timeout)
{
    ProgramResult result;
    const std::string program = argv.empty() ? std::string() : find_program(argv[0]);
    if (program.empty()) {
        result.output = (argv.empty() ? std::string("no program") : argv[0]) + ": not found";
        return result;
    }
    Pipe in, out;
    if (!in.open_socket() || !out.open()) {
        result.output = std::string("pipe: ") + std::strerror(errno);
        return result;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in.fd[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out.fd[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out.fd[1], STDERR_FILENO);
    // The caller's threads block SIGTERM and friends and ignore SIGPIPE; the
    // helper gets the defaults.
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP})
        sigaddset(&defaults, sig);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, program.c_str(), &actions, &attributes, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (rc != 0) {
        result.output = program + ": " + std::strerror(rc);
        return result;
    }
    result.started = true;
    in.close_end(0);
    out.close_end(1);
    ::fcntl(in.fd[1], F_SETFL, O_NONBLOCK);
    std::size_t written = 0;
    if (input.empty())
        in.close_end(1);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool killed = false;
    while (out.fd[0] >= 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            killed = true;
            break;
        }
        pollfd fds[2] = {{out.fd[0], POLLIN, 0}, {in.fd[1], POLLOUT, 0}};
        const int n = ::poll(fds, in.fd[1] >= 0 ? 2 : 1, static_cast<int>(left.count()));
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if (in.fd[1] >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            const ssize_t w = ::send(in.fd[1], input.data() + written, input.size() - written, MSG_NOSIGNAL);
            if (w > 0)
                written += static_cast<std::size_t>(w);
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size())
                in.close_end(1); // all of it, or the program stopped reading
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buffer[4096];
            const ssize_t r = ::read(out.fd[0], buffer, sizeof buffer);
            if (r > 0) {
                if (result.output.size() < k_max_output)
                    result.output.append(buffer, std::min<std::size_t>(static_cast<std::size_t>(r),
                                                                       k_max_output - result.output.size()));
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                out.close_end(0);
            }
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!killed && WIFEXITED(status))
        result.exit_status = WEXITSTATUS(status);
    else if (killed)
        result.output += "\n(killed after " + std::to_string(timeout.count()) + " ms)";
    return result;
}

} // namespace pytun::detail
