// SPDX-License-Identifier: MIT
// Request limits and path checks in front of cpp-httplib (see http_guard.h).
#include "observe/http_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include <pytun/version.h>

namespace pytun::detail {

namespace {

using Clock = std::chrono::steady_clock;

// When the listener accepted the connection a worker is now serving: the
// request deadline counts from there, so a client that waited in the queue
// behind slow ones does not get a fresh allowance, and a slow client's time
// in the queue counts against it.
thread_local Clock::time_point t_accepted_at;
thread_local bool t_overloaded = false;

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

// Runs httplib's jobs on a ThreadPool and stamps each with its accept time
// and whether the queue was over its limit then.
class StampingQueue final : public httplib::TaskQueue {
public:
    StampingQueue(unsigned threads, std::size_t max_pending, std::atomic<std::size_t> &pending)
        : pool_(threads), max_pending_(max_pending), pending_(pending)
    {
    }

    void enqueue(std::function<void()> fn) override
    {
        const bool overloaded = pending_.fetch_add(1) >= max_pending_;
        pool_.enqueue([fn = std::move(fn), accepted = Clock::now(), overloaded, this] {
            pending_.fetch_sub(1);
            t_accepted_at = accepted;
            t_overloaded = overloaded;
            fn();
        });
    }
    void shutdown() override { pool_.shutdown(); }

private:
    httplib::ThreadPool pool_;
    std::size_t max_pending_;
    std::atomic<std::size_t> &pending_;
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

GuardedServer::GuardedServer(GuardLimits limits, std::function<std::string(int, const std::string &)> error_reply)
    : limits_(limits), error_reply_(std::move(error_reply))
{
    new_task_queue = [this] { return new StampingQueue(limits_.threads, limits_.max_pending, pending_); };
    // httplib's default also sets SO_REUSEPORT, which lets a second pytun
    // bind the same port silently and share the requests: only
    // SO_REUSEADDR (restart while old connections linger in TIME_WAIT).
    set_socket_options([](socket_t sock) {
        int one = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    });
}

GuardedServer::~GuardedServer() = default;

void GuardedServer::raise_backlog(int backlog)
{
    // listen() on a listening socket only updates its backlog.
    if (svr_sock_ != INVALID_SOCKET)
        ::listen(svr_sock_, backlog);
}

void GuardedServer::reply_and_close(socket_t sock, int status, const std::string &reason)
{
    ++rejected_;
    std::string body = error_reply_ ? error_reply_(status, reason) : reason;
    std::string reply = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
                        "\r\nServer: Pytun Introspection web server/" + version() +
                        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\nConnection: close\r\n\r\n" + body;
    GuardedStream stream(sock, {}, Clock::now(), std::chrono::milliseconds(1000));
    stream.write(reply.data(), reply.size());
    // Half-close, then drain briefly: closing with unread input would send
    // a reset that can destroy the reply before the client reads it.
    ::shutdown(sock, SHUT_WR);
    char sink[4096];
    const auto drain_until = Clock::now() + std::chrono::milliseconds(200);
    while (wait_for(sock, POLLIN, drain_until) && ::recv(sock, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
}

void GuardedServer::shutdown_clients()
{
    std::lock_guard lock(clients_mutex_);
    for (int fd : clients_)
        ::shutdown(fd, SHUT_RDWR);
}

bool GuardedServer::process_and_close_socket(socket_t sock)
{
    // Known while served, so that stop() can cut it short; closed under the
    // same lock, so that shutdown_clients() never touches a reused number.
    {
        std::lock_guard lock(clients_mutex_);
        clients_.insert(sock);
    }
    struct Closer {
        GuardedServer &server;
        int fd;
        ~Closer()
        {
            std::lock_guard lock(server.clients_mutex_);
            server.clients_.erase(fd);
            ::close(fd);
        }
    } closer{*this, sock};

    const auto deadline = t_accepted_at + limits_.request_timeout;
    if (t_overloaded) {
        reply_and_close(sock, 503, "too many clients waiting; try again");
        return false;
    }
    // Read the head: up to the empty line, within the limits.
    std::string buffer;
    std::size_t scanned = 0;
    std::size_t head_end = std::string::npos;
    char chunk[4096];
    while (head_end == std::string::npos) {
        if (const Wait w = wait_until(sock, POLLIN, deadline); w != Wait::ready) {
            if (w == Wait::error)
                return false;
            reply_and_close(sock, 408, "request not received within " +
                                           std::to_string(limits_.request_timeout.count()) + " ms");
            return false;
        }
        ssize_t n = ::recv(sock, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false; // gone before a complete head: nobody to answer
        buffer.append(chunk, static_cast<std::size_t>(n));
        // Look for the blank line from a little before the new bytes.
        std::size_t from = scanned >= 3 ? scanned - 3 : 0;
        for (std::size_t i = from; i < buffer.size(); ++i) {
            if (buffer[i] != '\n')
                continue;
            if (i >= 1 && buffer[i - 1] == '\n') {
                head_end = i + 1;
                break;
            }
            if (i >= 2 && buffer[i - 1] == '\r' && buffer[i - 2] == '\n') {
                head_end = i + 1;
                break;
            }
        }
        scanned = buffer.size();
        if (head_end == std::string::npos) {
            auto first_line = buffer.find('\n');
            if (first_line == std::string::npos && buffer.size() > limits_.max_target_length + 64) {
                reply_and_close(sock, 414, "request line too long");
                return false;
            }
            if (buffer.size() > limits_.max_header_bytes) {
                reply_and_close(sock, 431, "request head larger than " + std::to_string(limits_.max_header_bytes) +
                                               " bytes");
                return false;
            }
            if (static_cast<std::size_t>(std::count(buffer.begin(), buffer.end(), '\n')) > limits_.max_headers + 1) {
                reply_and_close(sock, 431, "more than " + std::to_string(limits_.max_headers) + " header lines");
                return false;
            }
        }
    }
    if (head_end > limits_.max_header_bytes) {
        reply_and_close(sock, 431, "request head larger than " + std::to_string(limits_.max_header_bytes) + " bytes");
        return false;
    }
    if (auto check = check_head(std::string_view(buffer).substr(0, head_end), limits_); check.status) {
        reply_and_close(sock, check.status, check.reason);
        return false;
    }

    // One request per connection: a kept-alive idle connection would hold
    // a worker, and nothing here is hurt by a new TCP connection.
    GuardedStream stream(sock, std::move(buffer), deadline, limits_.write_timeout);
    bool connection_closed = false;
    bool ok = process_request(stream, true, connection_closed, nullptr);
    ::shutdown(sock, SHUT_WR);
    return ok;
}

} // namespace pytun::detail
