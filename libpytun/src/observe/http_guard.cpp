// SPDX-License-Identifier: MIT
// Request limits and path checks in front of cpp-httplib (see http_guard.h).
#include "observe/http_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <asio.hpp>

#include <pytun/version.h>

#include "log.h"

namespace pytun::detail {

namespace {

using Clock = std::chrono::steady_clock;

} // namespace

const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

namespace {

int remaining_ms(Clock::time_point deadline)
{
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(std::min<long long>(left, 60000)) : 0;
}

enum class Wait { ready, timeout, error };

// Wait for `events` on `fd` until `deadline` (poll's millisecond timeout
// rounds down, so keep waiting until the deadline has really passed).
Wait wait_until(int fd, short events, Clock::time_point deadline)
{
    for (;;) {
        pollfd p{fd, events, 0};
        const bool last = Clock::now() >= deadline;
        int r = ::poll(&p, 1, last ? 0 : std::max(1, remaining_ms(deadline)));
        if (r > 0)
            return (p.revents & (events | POLLHUP | POLLERR)) != 0 ? Wait::ready : Wait::error;
        if (r < 0 && errno != EINTR)
            return Wait::error;
        if (r == 0 && last)
            return Wait::timeout;
    }
}

bool wait_for(int fd, short events, Clock::time_point deadline)
{
    return wait_until(fd, events, deadline) == Wait::ready;
}

bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

// The head bytes httplib reads first, then the socket, all against the
// request deadline.
class GuardedStream final : public httplib::Stream {
public:
    GuardedStream(int sock, std::string buffered, Clock::time_point deadline, std::chrono::milliseconds write_timeout)
        : sock_(sock), buffer_(std::move(buffered)), deadline_(deadline), write_timeout_(write_timeout)
    {
    }

    bool is_readable() const override { return pos_ < buffer_.size() || wait_for(sock_, POLLIN, deadline_); }
    bool is_writable() const override { return wait_for(sock_, POLLOUT, Clock::now() + write_timeout_); }

    ssize_t read(char *ptr, size_t size) override
    {
        if (pos_ < buffer_.size()) {
            size_t n = std::min(size, buffer_.size() - pos_);
            std::memcpy(ptr, buffer_.data() + pos_, n);
            pos_ += n;
            return static_cast<ssize_t>(n);
        }
        if (!wait_for(sock_, POLLIN, deadline_))
            return -1;
        for (;;) {
            ssize_t n = ::recv(sock_, ptr, size, 0);
            if (n < 0 && errno == EINTR)
                continue;
            return n;
        }
    }

    ssize_t write(const char *ptr, size_t size) override
    {
        size_t done = 0;
        const auto deadline = Clock::now() + write_timeout_;
        while (done < size) {
            if (!wait_for(sock_, POLLOUT, deadline))
                return done ? static_cast<ssize_t>(done) : -1;
            ssize_t n = ::send(sock_, ptr + done, size - done, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                return done ? static_cast<ssize_t>(done) : -1;
            }
            done += static_cast<size_t>(n);
        }
        return static_cast<ssize_t>(done);
    }

    void get_remote_ip_and_port(std::string &ip, int &port) const override { address(true, ip, port); }
    void get_local_ip_and_port(std::string &ip, int &port) const override { address(false, ip, port); }
    socket_t socket() const override { return sock_; }

private:
    void address(bool remote, std::string &ip, int &port) const
    {
        sockaddr_storage addr{};
        socklen_t len = sizeof(addr);
        auto *sa = reinterpret_cast<sockaddr *>(&addr);
        if ((remote ? ::getpeername(sock_, sa, &len) : ::getsockname(sock_, sa, &len)) != 0)
            return;
        char text[INET6_ADDRSTRLEN] = {};
        if (addr.ss_family == AF_INET) {
            auto *in = reinterpret_cast<sockaddr_in *>(&addr);
            ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
            port = ntohs(in->sin_port);
        } else if (addr.ss_family == AF_INET6) {
            auto *in6 = reinterpret_cast<sockaddr_in6 *>(&addr);
            ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
            port = ntohs(in6->sin6_port);
        }
        ip = text;
    }

    int sock_;
    std::string buffer_;
    size_t pos_ = 0;
    Clock::time_point deadline_;
    std::chrono::milliseconds write_timeout_;
};

} // namespace

HeadCheck check_target(std::string_view target, const GuardLimits &limits)
{
    if (target.size() > limits.max_target_length)
        return {414, "request target longer than " + std::to_string(limits.max_target_length) + " bytes"};
    if (target.empty() || target[0] != '/')
        return {400, "request target must be a path starting with /"};
    std::string_view path = target.substr(0, target.find_first_of("?#"));
    std::string decoded;
    decoded.reserve(path.size());
    for (std::size_t i = 0; i < path.size(); ++i) {
        char c = path[i];
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
            return {400, "control character or space in the path"};
        if (c == '\\')
            return {400, "backslash in the path"};
        if (c == '%') {
            if (i + 2 >= path.size() || !is_hex(path[i + 1]) || !is_hex(path[i + 2]))
                return {400, "malformed percent-encoding in the path"};
            char d = static_cast<char>(hex_value(path[i + 1]) * 16 + hex_value(path[i + 2]));
            // An encoded separator or NUL only ever serves to slip past a
            // path check further on.
            if (d == '/' || d == '\\' || d == '\0')
                return {400, "encoded slash, backslash or NUL in the path"};
            decoded += d;
            i += 2;
            continue;
        }
        decoded += c;
    }
    std::size_t start = 0;
    while (start <= decoded.size()) {
        auto end = decoded.find('/', start);
        if (end == std::string::npos)
            end = decoded.size();
        std::string_view segment(decoded.data() + start, end - start);
        if (segment == "." || segment == "..")
            return {400, "dot segment in the path"};
        start = end + 1;
    }
    return {};
}

HeadCheck check_head(std::string_view head, const GuardLimits &limits)
{
    auto eol = head.find('\n');
    if (eol == std::string_view::npos)
        return {400, "incomplete request line"};
    std::string_view line = head.substr(0, eol);
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
        line.find(' ', sp2 + 1) != std::string_view::npos)
        return {400, "malformed request line"};
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (method.empty() || method.size() > 16 ||
        !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
        return {400, "malformed method"};
    if (version.rfind("HTTP/", 0) != 0)
        return {400, "malformed HTTP version"};
    if (version != "HTTP/1.1" && version != "HTTP/1.0")
        return {505, "only HTTP/1.0 and HTTP/1.1 are served"};
    if (auto t = check_target(target, limits); t.status)
        return t;

    std::size_t headers = 0;
    std::size_t pos = eol + 1;
    std::string_view content_length;
    bool chunked = false;
    while (pos < head.size()) {
        auto end = head.find('\n', pos);
        if (end == std::string_view::npos)
            end = head.size();
        std::string_view h = head.substr(pos, end - pos);
        if (!h.empty() && h.back() == '\r')
            h.remove_suffix(1);
        pos = end + 1;
        if (h.empty())
            break;
        if (++headers > limits.max_headers)
            return {431, "more than " + std::to_string(limits.max_headers) + " header lines"};
        auto colon = h.find(':');
        // No name, or obsolete line folding (RFC 9112 says reject it).
        if (colon == std::string_view::npos || colon == 0 || h[0] == ' ' || h[0] == '\t' ||
            h.substr(0, colon).find_first_of(" \t") != std::string_view::npos)
            return {400, "malformed header line"};
        std::string name(h.substr(0, colon));
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        std::string_view value = h.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
            value.remove_prefix(1);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
            value.remove_suffix(1);
        if (name == "content-length") {
            // Digits only, and one value: anything else is how requests are
            // smuggled past proxies.
            if (value.empty() || value.size() > 18 ||
                !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
                (!content_length.empty() && content_length != value))
                return {400, "malformed Content-Length"};
            content_length = value;
        } else if (name == "transfer-encoding") {
            chunked = true;
        }
    }
    if (chunked && !content_length.empty())
        return {400, "both Content-Length and Transfer-Encoding"};
    return {};
}

std::string guard_reply(int status, const std::string &reason, const std::string &body)
{
    (void)reason;
    return "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
           "\r\nServer: Pytun Introspection web server/" + version() +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
}

// The accepting side, on an Asio loop of its own: every connection waits
// here, costing a socket and its buffer, until its request head is complete
// and checked; then a worker gets it.
struct GuardedServer::FrontEnd {
    struct Pending {
        asio::ip::tcp::socket socket;
        asio::steady_timer timer;
        Clock::time_point accepted;
        std::string buffer;
        std::size_t scanned = 0;
        std::size_t head_end = std::string::npos;
        std::size_t body_length = 0;
        bool listed = false;
        std::list<std::shared_ptr<Pending>>::iterator where;
        char chunk[4096];
        explicit Pending(asio::io_context &io) : socket(io), timer(io) {}
    };
    struct Ready {
        int fd;
        std::string buffer;
        Clock::time_point deadline;
    };

    GuardedServer &server;
    const GuardLimits limits;
    asio::io_context io; // declared first: destroyed after every socket
    asio::ip::tcp::acceptor acceptor{io};
    asio::steady_timer accept_retry{io};
    std::list<std::shared_ptr<Pending>> pending; // oldest first; loop thread only
    std::shared_ptr<spdlog::logger> log = make_logger("http");
    Clock::time_point last_accept_warning{};
    std::size_t closing = 0; // answered, being drained
    std::thread loop_thread;

    std::mutex mutex; // the worker side below
    std::condition_variable wake;
    std::deque<Ready> queue;
    std::set<int> serving;
    bool stopping = false;
    std::vector<std::thread> workers;

    FrontEnd(GuardedServer &s) : server(s), limits(s.limits_) {}

    void accept()
    {
        auto p = std::make_shared<Pending>(io);
        acceptor.async_accept(p->socket, [this, p](const asio::error_code &ec) { on_accept(p, ec); });
    }

    void on_accept(const std::shared_ptr<Pending> &p, const asio::error_code &ec)
    {
        if (ec == asio::error::operation_aborted || !acceptor.is_open())
            return;
        if (ec) {
            if (ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
                ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory) {
                // Out of descriptors: give up the oldest waiting client (it
                // frees one) and try again shortly instead of spinning.
                ++server.accept_failures_;
                const auto now = Clock::now();
                if (now - last_accept_warning > std::chrono::seconds(10)) {
                    last_accept_warning = now;
                    log->error("inspection API cannot accept connections: {} (pytun is out of file descriptors; "
                               "raise LimitNOFILE)",
                               ec.message());
                }
                evict_oldest();
                accept_retry.expires_after(std::chrono::milliseconds(50));
                accept_retry.async_wait([this](const asio::error_code &timer_ec) {
                    if (!timer_ec)
                        accept();
                });
                return;
            }
            accept();
            return;
        }
        p->accepted = Clock::now();
        if (pending.size() >= limits.max_pending)
            evict_oldest();
        p->where = pending.insert(pending.end(), p);
        p->listed = true;
        p->timer.expires_at(p->accepted + limits.request_timeout);
        p->timer.async_wait([this, p](const asio::error_code &timer_ec) {
            if (!timer_ec && p->listed)
                reject(p, 408, "request not received within " + std::to_string(limits.request_timeout.count()) +
                                   " ms");
        });
        read(p);
        accept();
    }

    void evict_oldest()
    {
        if (pending.empty())
            return;
        ++server.evicted_;
        const auto oldest = pending.front(); // a copy: reject() takes it off the list
        reject(oldest, 503, "too many clients waiting; try again");
    }

    void unlist(const std::shared_ptr<Pending> &p)
    {
        if (!p->listed)
            return;
        p->listed = false;
        pending.erase(p->where);
        p->timer.cancel();
    }

    void read(const std::shared_ptr<Pending> &p)
    {
        p->socket.async_read_some(asio::buffer(p->chunk), [this, p](const asio::error_code &ec, std::size_t n) {
            if (!p->listed)
                return;
            if (ec) { // gone before a complete request: nobody to answer
                unlist(p);
                asio::error_code ignored;
                p->socket.close(ignored);
                return;
            }
            p->buffer.append(p->chunk, n);
            on_data(p);
        });
    }

    void on_data(const std::shared_ptr<Pending> &p)
    {
        std::string &buffer = p->buffer;
        if (p->head_end == std::string::npos) {
            // Look for the blank line from a little before the new bytes.
            for (std::size_t i = p->scanned >= 3 ? p->scanned - 3 : 0; i < buffer.size(); ++i) {
                if (buffer[i] != '\n')
                    continue;
                if ((i >= 1 && buffer[i - 1] == '\n') || (i >= 2 && buffer[i - 1] == '\r' && buffer[i - 2] == '\n')) {
                    p->head_end = i + 1;
                    break;
                }
            }
            p->scanned = buffer.size();
            if (p->head_end == std::string::npos) {
                if (buffer.find('\n') == std::string::npos && buffer.size() > limits.max_target_length + 64)
                    return reject(p, 414, "request line too long");
                if (buffer.size() > limits.max_header_bytes)
                    return reject(p, 431, "request head larger than " + std::to_string(limits.max_header_bytes) +
                                              " bytes");
                if (static_cast<std::size_t>(std::count(buffer.begin(), buffer.end(), '\n')) > limits.max_headers + 1)
                    return reject(p, 431, "more than " + std::to_string(limits.max_headers) + " header lines");
                return read(p);
            }
            if (p->head_end > limits.max_header_bytes)
                return reject(p, 431, "request head larger than " + std::to_string(limits.max_header_bytes) +
                                          " bytes");
            const std::string_view head = std::string_view(buffer).substr(0, p->head_end);
            if (auto check = check_head(head, limits); check.status)
                return reject(p, check.status, check.reason);
            p->body_length = content_length(head);
        }
        // A small body is read here too, so a worker never waits for one;
        // a larger one is httplib's to refuse (413) at once.
        if (p->body_length <= server.payload_max_length_ && buffer.size() - p->head_end < p->body_length)
            return read(p);
        hand_over(p);
    }

    static std::size_t content_length(std::string_view head)
    {
        for (std::size_t pos = head.find('\n'); pos != std::string_view::npos && pos + 1 < head.size();
             pos = head.find('\n', pos + 1)) {
            std::string_view line = head.substr(pos + 1, head.find('\n', pos + 1) - pos - 1);
            static constexpr std::string_view name = "content-length:";
            if (line.size() <= name.size())
                continue;
            bool match = true;
            for (std::size_t i = 0; i < name.size() && match; ++i)
                match = std::tolower(static_cast<unsigned char>(line[i])) == name[i];
            if (!match)
                continue;
            std::size_t value = 0;
            for (char c : line.substr(name.size()))
                if (c >= '0' && c <= '9')
                    value = std::min<std::size_t>(value * 10 + static_cast<std::size_t>(c - '0'), 1u << 30);
            return value;
        }
        return 0;
    }

    void hand_over(const std::shared_ptr<Pending> &p)
    {
        unlist(p);
        asio::error_code ec;
        const int fd = p->socket.release(ec);
        if (ec || fd < 0)
            return;
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK); // httplib's reads and writes block (with poll)
        {
            std::lock_guard lock(mutex);
            if (!stopping && queue.size() < limits.max_queued) {
                queue.push_back({fd, std::move(p->buffer), p->accepted + limits.request_timeout});
                wake.notify_one();
                return;
            }
        }
        ++server.rejected_;
        const std::string reply = guard_reply(503, "busy", server.error_reply("too many requests waiting; try again"));
        (void)!::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
    }

    // Answer with the guard's own reply, then close: half-close first and
    // drain briefly, since closing with unread input sends a reset that can
    // destroy the reply before the client reads it.
    void reject(const std::shared_ptr<Pending> &p, int status, const std::string &reason)
    {
        unlist(p);
        ++server.rejected_;
        const std::string reply = guard_reply(status, reason, server.error_reply_(status, reason));
        const int fd = p->socket.native_handle();
        (void)!::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        asio::error_code ignored;
        if (closing >= GuardLimits::k_max_closing) {
            p->socket.close(ignored);
            return;
        }
        ++closing;
        ::shutdown(fd, SHUT_WR);
        p->timer.expires_after(std::chrono::milliseconds(200));
        p->timer.async_wait([p](const asio::error_code &) {
            asio::error_code ignored2;
            p->socket.close(ignored2);
        });
        drain(p);
    }

    void drain(const std::shared_ptr<Pending> &p)
    {
        p->socket.async_read_some(asio::buffer(p->chunk), [this, p](const asio::error_code &ec, std::size_t) {
            if (!ec)
                return drain(p);
            asio::error_code ignored;
            p->timer.cancel();
            p->socket.close(ignored);
            --closing;
        });
    }

    void worker()
    {
        for (;;) {
            Ready job;
            {
                std::unique_lock lock(mutex);
                wake.wait(lock, [&] { return stopping || !queue.empty(); });
                if (stopping)
                    return;
                job = std::move(queue.front());
                queue.pop_front();
                serving.insert(job.fd);
            }
            server.serve(job.fd, std::move(job.buffer), job.deadline);
            // Closed under the lock, so that stop() never shuts down a reused number.
            std::lock_guard lock(mutex);
            serving.erase(job.fd);
            ::close(job.fd);
        }
    }
};

GuardedServer::GuardedServer(GuardLimits limits, std::function<std::string(int, const std::string &)> error_reply)
    : limits_(limits), error_reply_(std::move(error_reply))
{
}

GuardedServer::~GuardedServer()
{
    stop();
}

std::string GuardedServer::error_reply(const std::string &reason) const
{
    return error_reply_ ? error_reply_(503, reason) : reason;
}

std::uint16_t GuardedServer::bind(const std::string &address, std::uint16_t port, std::error_code &ec)
{
    front_ = std::make_unique<FrontEnd>(*this);
    auto ip = asio::ip::make_address(address, ec);
    if (ec) {
        ec = std::make_error_code(std::errc::invalid_argument);
        return 0;
    }
    const asio::ip::tcp::endpoint endpoint(ip, port);
    auto &acceptor = front_->acceptor;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec)
        acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec)
        acceptor.bind(endpoint, ec);
    // A burst of clients must not see SYN retries of a second.
    if (!ec)
        acceptor.listen(512, ec);
    if (ec) {
        front_.reset();
        return 0;
    }
    // httplib stops writing a streamed reply once it sees no listening
    // socket (its "shutting down" test): it must see ours.
    svr_sock_ = acceptor.native_handle();
    return acceptor.local_endpoint(ec).port();
}

void GuardedServer::start()
{
    FrontEnd &f = *front_;
    f.accept();
    f.loop_thread = std::thread([&f] { f.io.run(); });
    for (unsigned i = 0; i < std::max(1u, limits_.threads); ++i)
        f.workers.emplace_back([&f] { f.worker(); });
}

void GuardedServer::stop()
{
    if (!front_)
        return;
    FrontEnd &f = *front_;
    svr_sock_ = INVALID_SOCKET; // streamed replies stop
    asio::post(f.io, [&f] {
        asio::error_code ignored;
        f.acceptor.close(ignored);
        f.accept_retry.cancel();
        while (!f.pending.empty()) {
            auto p = f.pending.front();
            f.unlist(p);
            p->socket.close(ignored);
        }
        f.io.stop();
    });
    if (f.loop_thread.joinable())
        f.loop_thread.join();
    {
        std::lock_guard lock(f.mutex);
        f.stopping = true;
        // Cut the requests being served short: a slow client cannot delay stop().
        for (int fd : f.serving)
            ::shutdown(fd, SHUT_RDWR);
        for (auto &job : f.queue)
            ::close(job.fd);
        f.queue.clear();
    }
    f.wake.notify_all();
    for (auto &worker : f.workers)
        worker.join();
    front_.reset();
}

void GuardedServer::serve(int fd, std::string buffered, Clock::time_point deadline)
{
    // One request per connection: a kept-alive idle connection would hold
    // a worker, and nothing here is hurt by a new TCP connection.
    GuardedStream stream(fd, std::move(buffered), deadline, limits_.write_timeout);
    bool connection_closed = false;
    process_request(stream, true, connection_closed, nullptr);
    ::shutdown(fd, SHUT_WR);
}

} // namespace pytun::detail
