// SPDX-License-Identifier: MIT
// Local TCP services for tests: echo, sink, source and half-close, one thread per connection.
#include "fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace pytun::test {

namespace {

using namespace std::chrono_literals;

constexpr std::size_t k_chunk = 64 * 1024;

/// Incremental SHA-256 (OpenSSL EVP), lowercase hex.
class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new())
    {
        if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1)
            throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
    }
    ~Sha256() { EVP_MD_CTX_free(ctx_); }
    Sha256(const Sha256 &) = delete;
    Sha256 &operator=(const Sha256 &) = delete;

    void update(const void *data, std::size_t size) { EVP_DigestUpdate(ctx_, data, size); }

    std::string hex()
    {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        EVP_DigestFinal_ex(ctx_, digest, &len);
        static const char *k_digits = "0123456789abcdef";
        std::string out;
        for (unsigned int i = 0; i < len; ++i) {
            out += k_digits[digest[i] >> 4];
            out += k_digits[digest[i] & 15];
        }
        return out;
    }

private:
    EVP_MD_CTX *ctx_;
};

ssize_t read_some(int fd, void *buf, std::size_t size)
{
    for (;;) {
        ssize_t n = recv(fd, buf, size, 0);
        if (n >= 0 || errno != EINTR)
            return n;
    }
}

} // namespace

struct TcpService::Impl {
    struct Connection {
        int fd = -1; ///< -1 once the serving thread closed it
        bool done = false;
        std::thread thread;
    };

    TcpService *owner = nullptr;
    std::uint16_t port = 0;
    int listen_fd = -1;
    std::thread acceptor;
    std::atomic<std::size_t> accepted{0};
    std::mutex mutex;              ///< guards connections (and their fd/done)
    std::list<Connection> connections;
    std::mutex lifecycle;          ///< serialises start() and stop()

    void join_finished()
    {
        std::list<Connection> finished;
        {
            std::lock_guard lock(mutex);
            for (auto it = connections.begin(); it != connections.end();) {
                auto next = std::next(it);
                if (it->done)
                    finished.splice(finished.end(), connections, it);
                it = next;
            }
        }
        for (auto &c : finished)
            c.thread.join();
    }

    void run_connection(Connection *conn, int fd)
    {
        try {
            owner->serve(fd);
        } catch (...) {
            // A service failing on one connection must not take the test down;
            // the client sees the connection close.
        }
        std::lock_guard lock(mutex);
        close(fd);
        conn->fd = -1;
        conn->done = true;
    }

    void accept_loop()
    {
        for (;;) {
            int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
                    errno == ENOBUFS || errno == ENOMEM) {
                    if (errno != EINTR && errno != ECONNABORTED)
                        std::this_thread::sleep_for(10ms);
                    continue;
                }
                return; // EINVAL after stop() shut the listener down
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            accepted.fetch_add(1);
            join_finished();
            std::lock_guard lock(mutex);
            Connection &conn = connections.emplace_back();
            conn.fd = fd;
            conn.thread = std::thread([this, c = &conn, fd] { run_connection(c, fd); });
        }
    }
};

TcpService::TcpService() : impl_(std::make_unique<Impl>()) { impl_->owner = this; }

/// Derived classes call stop() in their own destructors, while serve() is
/// still theirs; by the time this runs there is nothing left to stop.
TcpService::~TcpService() { stop(); }

std::uint16_t TcpService::port() const { return impl_->port; }

std::size_t TcpService::accepted() const { return impl_->accepted.load(); }

/// \brief Listen on 127.0.0.1 (the same port as before after a stop()).
void TcpService::start()
{
    std::lock_guard life(impl_->lifecycle);
    if (impl_->listen_fd >= 0)
        return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(impl_->port);
    // On a restart the old port can be briefly taken by a dying connection.
    const bool bound = wait_until(
        [&] { return bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0; }, 5s);
    if (!bound || listen(fd, 1024) != 0) {
        int err = errno;
        close(fd);
        throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(impl_->port) + ": " +
                                 std::strerror(err));
    }
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    impl_->port = ntohs(addr.sin_port);
    impl_->listen_fd = fd;
    impl_->acceptor = std::thread([this] { impl_->accept_loop(); });
}

/// \brief Close the listener and every connection, and join all threads.
void TcpService::stop()
{
    std::lock_guard life(impl_->lifecycle);
    if (impl_->listen_fd < 0)
        return;
    // shutdown() wakes the blocked accept() (EINVAL); close only after the join.
    shutdown(impl_->listen_fd, SHUT_RDWR);
    impl_->acceptor.join();
    close(impl_->listen_fd);
    impl_->listen_fd = -1;
    std::list<Impl::Connection> all;
    {
        std::lock_guard lock(impl_->mutex);
        for (auto &c : impl_->connections)
            if (c.fd >= 0)
                shutdown(c.fd, SHUT_RDWR);
        all.splice(all.end(), impl_->connections);
    }
    for (auto &c : all)
        c.thread.join();
}

// --- echo ------------------------------------------------------------------

EchoService::EchoService() { start(); }
EchoService::~EchoService() { stop(); }

void EchoService::serve(int fd)
{
    std::vector<char> buf(k_chunk);
    for (;;) {
        ssize_t n = read_some(fd, buf.data(), buf.size());
        if (n == 0) {
            shutdown(fd, SHUT_WR);
            return;
        }
        if (n < 0 || !send_all(fd, buf.data(), static_cast<std::size_t>(n)))
            return;
    }
}

// --- sink ------------------------------------------------------------------

struct SinkService::State {
    mutable std::mutex mutex;
    std::vector<Received> received;
};

SinkService::SinkService() : state_(std::make_unique<State>()) { start(); }
SinkService::~SinkService() { stop(); }

std::vector<SinkService::Received> SinkService::received() const
{
    std::lock_guard lock(state_->mutex);
    return state_->received;
}

void SinkService::serve(int fd)
{
    std::vector<char> buf(k_chunk);
    Sha256 sha;
    std::size_t total = 0;
    for (;;) {
        ssize_t n = read_some(fd, buf.data(), buf.size());
        if (n < 0)
            return; // reset or stopped: not a completed connection
        if (n == 0)
            break;
        sha.update(buf.data(), static_cast<std::size_t>(n));
        total += static_cast<std::size_t>(n);
    }
    // Recorded before the close, so a client that waits for our EOF sees it.
    std::lock_guard lock(state_->mutex);
    state_->received.push_back({total, sha.hex()});
}

// --- source ----------------------------------------------------------------

struct SourceService::State {
    std::size_t bytes = 0;
    std::atomic<std::uint64_t> next_index{0};
    mutable std::mutex mutex;
    std::vector<std::string> sent;
};

SourceService::SourceService(std::size_t bytes) : state_(std::make_unique<State>())
{
    state_->bytes = bytes;
    start();
}

SourceService::~SourceService() { stop(); }

std::vector<std::string> SourceService::sent_sha256() const
{
    std::lock_guard lock(state_->mutex);
    return state_->sent;
}

void SourceService::serve(int fd)
{
    const std::uint64_t index = state_->next_index.fetch_add(1);
    const std::vector<std::uint8_t> data = random_bytes(state_->bytes, index);
    for (std::size_t off = 0; off < data.size(); off += k_chunk) {
        if (!send_all(fd, data.data() + off, std::min(k_chunk, data.size() - off)))
            return;
    }
    {
        // Recorded before the FIN, so a client that saw EOF finds the hash.
        std::lock_guard lock(state_->mutex);
        state_->sent.push_back(sha256_hex(data.data(), data.size()));
    }
    shutdown(fd, SHUT_WR);
    // Drain until the client closes, so the close does not turn into a reset
    // that could destroy data still in flight.
    std::vector<char> buf(k_chunk);
    while (read_some(fd, buf.data(), buf.size()) > 0) {
    }
}

// --- half-close ------------------------------------------------------------

HalfCloseService::HalfCloseService(std::size_t answer_bytes) : answer_bytes_(answer_bytes) { start(); }
HalfCloseService::~HalfCloseService() { stop(); }

void HalfCloseService::serve(int fd)
{
    std::vector<char> buf(k_chunk);
    Sha256 sha;
    std::size_t total = 0;
    for (;;) {
        ssize_t n = read_some(fd, buf.data(), buf.size());
        if (n < 0)
            return;
        if (n == 0)
            break;
        sha.update(buf.data(), static_cast<std::size_t>(n));
        total += static_cast<std::size_t>(n);
    }
    const std::string head = "received " + std::to_string(total) + " bytes sha256=" + sha.hex() + "\n";
    if (!send_all(fd, head.data(), head.size()))
        return;
    const std::string answer(std::min(answer_bytes_, k_chunk), 'A');
    for (std::size_t left = answer_bytes_; left > 0;) {
        std::size_t n = std::min(left, answer.size());
        if (!send_all(fd, answer.data(), n))
            return;
        left -= n;
    }
}

} // namespace pytun::test
