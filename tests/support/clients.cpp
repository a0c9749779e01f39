// SPDX-License-Identifier: MIT
// Client-side test helpers: connect, send, read, hash, deterministic data and an echo load generator.
#include "fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace pytun::test {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point end)
{
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000 * 1000));
}

void set_nonblocking(int fd, bool on)
{
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
}

std::size_t count_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    const int own = dirfd(d);
    std::size_t n = 0;
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        // Do not count the descriptor used to read /proc/self/fd itself.
        if (std::to_string(own) == e->d_name && std::strcmp(path, "/proc/self/fd") == 0)
            continue;
        ++n;
    }
    closedir(d);
    return n;
}

} // namespace

/// \brief Connect to 127.0.0.1:port within `timeout`; a blocking socket with
/// TCP_NODELAY, or -1 with errno set.
int connect_tcp(std::uint16_t port, std::chrono::milliseconds timeout)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    int err = 0;
    if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else {
            pollfd p{fd, POLLOUT, 0};
            const auto end = Clock::now() + timeout;
            int r;
            do {
                r = poll(&p, 1, remaining_ms(end));
            } while (r < 0 && errno == EINTR);
            if (r == 0) {
                err = ETIMEDOUT;
            } else if (r < 0) {
                err = errno;
            } else {
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            }
        }
    }
    if (err != 0) {
        close(fd);
        errno = err;
        return -1;
    }
    set_nonblocking(fd, false);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/// \brief SHA-256 of a buffer as lowercase hex.
std::string sha256_hex(const void *data, std::size_t size)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data, size, digest, &len, EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("EVP_Digest(sha256) failed");
    static const char *k_digits = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
        out += k_digits[digest[i] >> 4];
        out += k_digits[digest[i] & 15];
    }
    return out;
}

/// \brief `size` pseudo-random bytes, the same for the same seed (splitmix64,
/// little-endian words): fast, and good enough to catch reordered or lost data.
std::vector<std::uint8_t> random_bytes(std::size_t size, std::uint64_t seed)
{
    std::vector<std::uint8_t> out(size);
    std::uint64_t state = seed;
    for (std::size_t off = 0; off < size; off += 8) {
        state += 0x9e3779b97f4a7c15ULL;
        std::uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        const std::size_t n = std::min<std::size_t>(8, size - off);
        for (std::size_t i = 0; i < n; ++i)
            out[off + i] = static_cast<std::uint8_t>(z >> (8 * i));
    }
    return out;
}

/// \brief Write all of `data` to a blocking socket (no SIGPIPE); false on error.
bool send_all(int fd, const void *data, std::size_t size)
{
    const auto *p = static_cast<const std::uint8_t *>(data);
    while (size > 0) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                pollfd pfd{fd, POLLOUT, 0};
                poll(&pfd, 1, -1);
                continue;
            }
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

/// \brief Read until EOF, an error, or `timeout` (an overall deadline).
std::vector<std::uint8_t> read_until_eof(int fd, std::chrono::milliseconds timeout)
{
    std::vector<std::uint8_t> out;
    std::vector<std::uint8_t> buf(64 * 1024);
    const auto end = Clock::now() + timeout;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        int r = poll(&p, 1, remaining_ms(end));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return out;
        ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n > 0)
            out.insert(out.end(), buf.begin(), buf.begin() + n);
        else if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            return out;
    }
}

/// \brief Many echo clients at once from one poll() loop; see the header.
EchoLoadResult run_echo_load(std::uint16_t port, std::size_t connections, std::size_t bytes_each,
                             std::chrono::seconds deadline)
{
    struct Conn {
        int fd = -1;
        std::vector<std::uint8_t> data;
        std::size_t sent = 0;
        std::size_t received = 0;
        bool write_shut = false;
        bool finished = false;
    };
    constexpr std::size_t k_max_errors = 10;
    constexpr std::size_t k_chunk = 64 * 1024;

    const auto start = Clock::now();
    const auto end = start + deadline;
    EchoLoadResult result;
    auto fail = [&](Conn &c, std::size_t index, const std::string &why) {
        if (c.fd >= 0)
            close(c.fd);
        c.fd = -1;
        c.finished = true;
        ++result.failed;
        if (result.errors.size() < k_max_errors)
            result.errors.push_back("connection " + std::to_string(index) + ": " + why);
    };

    std::vector<Conn> conns(connections);
    for (std::size_t i = 0; i < connections; ++i) {
        Conn &c = conns[i];
        c.data = random_bytes(bytes_each, i);
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
        c.fd = connect_tcp(port, std::max(left, std::chrono::milliseconds(1)));
        if (c.fd < 0) {
            fail(c, i, std::string("connect: ") + std::strerror(errno));
            continue;
        }
        set_nonblocking(c.fd, true);
    }

    std::vector<std::uint8_t> buf(k_chunk);
    std::vector<pollfd> pfds;
    std::vector<std::size_t> index;
    for (;;) {
        pfds.clear();
        index.clear();
        for (std::size_t i = 0; i < connections; ++i) {
            Conn &c = conns[i];
            if (c.finished)
                continue;
            if (c.sent == c.data.size() && !c.write_shut) {
                shutdown(c.fd, SHUT_WR);
                c.write_shut = true;
            }
            short events = POLLIN;
            if (c.sent < c.data.size())
                events |= POLLOUT;
            pfds.push_back({c.fd, events, 0});
            index.push_back(i);
        }
        if (pfds.empty())
            break;
        int timeout = remaining_ms(end);
        if (timeout == 0) {
            for (std::size_t i : index) {
                Conn &c = conns[i];
                fail(c, i, "deadline: sent " + std::to_string(c.sent) + ", echoed " +
                               std::to_string(c.received) + " of " + std::to_string(c.data.size()));
            }
            break;
        }
        int r = poll(pfds.data(), pfds.size(), timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
        }
        for (std::size_t k = 0; k < pfds.size(); ++k) {
            const std::size_t i = index[k];
            Conn &c = conns[i];
            const short re = pfds[k].revents;
            if (re == 0)
                continue;
            if (re & POLLOUT && c.sent < c.data.size()) {
                const std::size_t n = std::min(k_chunk, c.data.size() - c.sent);
                ssize_t w = send(c.fd, c.data.data() + c.sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                    c.sent += static_cast<std::size_t>(w);
                } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    fail(c, i, std::string("send: ") + std::strerror(errno));
                    continue;
                }
            }
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t n = recv(c.fd, buf.data(), buf.size(), MSG_DONTWAIT);
                if (n < 0) {
                    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                        fail(c, i, std::string("recv: ") + std::strerror(errno) + " after " +
                                       std::to_string(c.received) + " bytes");
                    continue;
                }
                if (n == 0) {
                    if (c.received == c.data.size() && c.sent == c.data.size()) {
                        close(c.fd);
                        c.fd = -1;
                        c.finished = true;
                        ++result.ok;
                    } else {
                        fail(c, i, "EOF after " + std::to_string(c.received) + " of " +
                                       std::to_string(c.data.size()) + " bytes (sent " +
                                       std::to_string(c.sent) + ")");
                    }
                    continue;
                }
                const auto got = static_cast<std::size_t>(n);
                if (c.received + got > c.sent) {
                    fail(c, i, "received " + std::to_string(c.received + got) +
                                   " bytes, more than the " + std::to_string(c.sent) + " sent");
                    continue;
                }
                auto mismatch = std::mismatch(buf.begin(), buf.begin() + n,
                                              c.data.begin() + static_cast<std::ptrdiff_t>(c.received));
                if (mismatch.first != buf.begin() + n) {
                    fail(c, i, "data differs at offset " +
                                   std::to_string(c.received + static_cast<std::size_t>(
                                                                   mismatch.first - buf.begin())));
                    continue;
                }
                c.received += got;
            }
        }
    }
    result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    return result;
}

std::size_t count_open_fds() { return count_dir_entries("/proc/self/fd"); }

std::size_t count_threads() { return count_dir_entries("/proc/self/task"); }

/// \brief A connect to 127.0.0.1:port succeeds within 1 s (closed at once).
bool tcp_port_accepts(std::uint16_t port)
{
    int fd = connect_tcp(port, std::chrono::seconds(1));
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

} // namespace pytun::test
