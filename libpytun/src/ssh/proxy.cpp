// SPDX-License-Identifier: MIT
// HTTP CONNECT and SOCKS5 through a proxy, before the SSH handshake.
#include "ssh/proxy.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>

#include <pytun/error.h>
#include <pytun/version.h>

#include "forward/socks.h"
#include "util/base64.h"
#include "util/text.h"

namespace pytun::detail {
namespace {

std::string endpoint(const std::string &host, std::uint16_t port)
{
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool is_token_char(unsigned char c)
{
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// How much of the proxy's answer a message quotes.
constexpr std::size_t k_quoted_answer = 60;
// Proxy-Authenticate schemes kept for the message.
constexpr std::size_t k_max_auth_schemes = 8;

} // namespace

// ---- HTTP CONNECT, pure -------------------------------------------------------

HttpConnectHandshake::HttpConnectHandshake(std::string host, std::uint16_t port, std::string username,
                                           std::string password)
    : host_(std::move(host)), port_(port), username_(std::move(username)), password_(std::move(password))
{
}

std::string HttpConnectHandshake::request() const
{
    const bool clean = !host_.empty() && std::none_of(host_.begin(), host_.end(), [](unsigned char c) {
        return c <= ' ' || c == 0x7f;
    });
    if (!clean)
        return {};
    const std::string target = endpoint(host_, port_);
    std::string r = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\nUser-Agent: pytun/" + version() +
                    "\r\n";
    if (!username_.empty()) {
        const std::string credentials = username_ + ":" + password_;
        r += "Proxy-Authorization: Basic " +
             base64_encode(reinterpret_cast<const unsigned char *>(credentials.data()), credentials.size()) + "\r\n";
    }
    return r + "\r\n";
}

HttpConnectHandshake::Step HttpConnectHandshake::finish(Step::Kind kind, std::string reason)
{
    end_ = Step{kind, std::move(reason)};
    partial_.clear();
    return *end_;
}

HttpConnectHandshake::Step HttpConnectHandshake::feed(std::string_view bytes)
{
    if (end_) {
        if (end_->kind == Step::Kind::complete)
            early_.append(bytes);
        return *end_;
    }
    while (!bytes.empty()) {
        const auto newline = bytes.find('\n');
        const std::size_t taken = newline == std::string_view::npos ? bytes.size() : newline + 1;
        header_bytes_ += taken;
        if (header_bytes_ > k_max_header_bytes)
            return finish(Step::Kind::refused, "its answer's header is longer than " +
                                                   std::to_string(k_max_header_bytes / 1024) + " KiB");
        partial_.append(bytes.substr(0, newline == std::string_view::npos ? bytes.size() : newline));
        bytes.remove_prefix(taken);
        if (newline == std::string_view::npos)
            break;
        std::string text = std::exchange(partial_, {});
        if (!text.empty() && text.back() == '\r')
            text.pop_back();
        Step step = line(text);
        if (step.kind != Step::Kind::need_more) {
            if (step.kind == Step::Kind::complete)
                early_.assign(bytes);
            return step;
        }
    }
    return {};
}

// One line of the answer, without its end.
HttpConnectHandshake::Step HttpConnectHandshake::line(std::string_view text)
{
    if (status_ == 0) {
        if (text.empty() && header_lines_ == 0)
            return {}; // an empty line before the status line may be ignored (RFC 9112 §2.2)
        // HTTP/1.x NNN[ reason]
        const bool shaped = text.size() >= 12 && text.substr(0, 7) == "HTTP/1." &&
                            std::isdigit(static_cast<unsigned char>(text[7])) && text[8] == ' ' &&
                            std::all_of(text.begin() + 9, text.begin() + 12,
                                        [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) &&
                            (text.size() == 12 || text[12] == ' ');
        if (!shaped)
            return finish(Step::Kind::refused,
                          "it answered '" + printable(text, k_quoted_answer) + "', which is not an HTTP status line");
        status_ = (text[9] - '0') * 100 + (text[10] - '0') * 10 + (text[11] - '0');
        reason_phrase_ = text.size() > 13 ? printable(text.substr(13), k_quoted_answer) : std::string();
        ++header_lines_;
        return {};
    }
    if (text.empty()) { // the end of this answer's header
        if (status_ >= 100 && status_ < 200 && status_ != 101) { // interim: the real answer follows
            status_ = 0;
            header_lines_ = 0;
            auth_schemes_.clear();
            return {};
        }
        if (status_ >= 200 && status_ < 300)
            return finish(Step::Kind::complete, {});
        // 407 is the proxy's "who are you"; some proxies (tinyproxy) answer
        // wrong credentials with 401.
        const bool auth = status_ == 407 || (status_ == 401 && !username_.empty());
        return finish(auth ? Step::Kind::auth_failed : Step::Kind::refused, failure_reason());
    }
    if (++header_lines_ > k_max_header_lines)
        return finish(Step::Kind::refused, "its answer has more than " + std::to_string(k_max_header_lines) +
                                               " header lines");
    if (text.front() == ' ' || text.front() == '\t')
        return finish(Step::Kind::refused, "its answer folds a header line over two (obsolete in HTTP/1.1)");
    const auto colon = text.find(':');
    const std::string_view name = text.substr(0, colon);
    if (colon == std::string_view::npos || name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char c) { return is_token_char(static_cast<unsigned char>(c)); }))
        return finish(Step::Kind::refused,
                      "its answer has a malformed header line '" + printable(text, k_quoted_answer) + "'");
    if (iequals(name, "Proxy-Authenticate") && auth_schemes_.size() < k_max_auth_schemes) {
        std::string_view value = text.substr(colon + 1);
        value.remove_prefix(std::min(value.size(), value.find_first_not_of(" \t")));
        const auto scheme = value.substr(0, value.find_first_of(" \t,"));
        if (!scheme.empty())
            auth_schemes_.push_back(printable(scheme, 20));
    }
    return {};
}

std::string HttpConnectHandshake::failure_reason() const
{
    std::string reason = "HTTP " + std::to_string(status_) + (reason_phrase_.empty() ? "" : " " + reason_phrase_);
    if (status_ == 407 && !auth_schemes_.empty()) {
        std::string schemes;
        bool basic = false;
        for (const auto &s : auth_schemes_) {
            schemes += (schemes.empty() ? "" : ", ") + s;
            basic = basic || iequals(s, "Basic");
        }
        reason += basic ? "" : "; it asks for " + schemes + ", and pytun speaks Basic only";
    }
    return reason;
}

// ---- the step, on a socket --------------------------------------------------

namespace {

class ProxyStep : public std::enable_shared_from_this<ProxyStep> {
public:
    ProxyStep(asio::ip::tcp::socket &socket, const ProxyOptions &proxy, const std::string &host, std::uint16_t port,
              ProxyDone done)
        : socket_(socket), timer_(socket.get_executor()), proxy_(proxy), target_(endpoint(host, port)),
          name_(describe(proxy)), done_(std::move(done))
    {
        if (proxy.kind == ProxyOptions::Kind::http) {
            http_ = std::make_unique<HttpConnectHandshake>(host, port, proxy.username, proxy.password);
        } else {
            std::optional<SocksCredentials> credentials;
            if (!proxy.username.empty())
                credentials = SocksCredentials{proxy.username, proxy.password};
            socks_ = std::make_unique<Socks5ClientHandshake>(host, port, std::move(credentials));
        }
    }

    void start(std::chrono::steady_clock::time_point deadline)
    {
        timer_.expires_at(deadline);
        timer_.async_wait([self = shared_from_this()](const asio::error_code &ec) {
            if (ec || self->finished_)
                return;
            asio::error_code ignored;
            self->socket_.close(ignored); // pending waits complete with operation_aborted
            self->finish(Errc::proxy_failed, "the proxy " + self->name_ + " did not answer within the connect "
                                                                          "timeout (connect_timeout)");
        });
        std::string first;
        if (http_) {
            first = http_->request();
        } else {
            SocksStep step = socks_->start();
            if (step.kind == SocksStep::Kind::failed) {
                post_failure(Errc::proxy_failed, "cannot use the SOCKS5 proxy " + name_ + ": " + step.reason);
                return;
            }
            first = std::move(step.send);
        }
        if (first.empty()) {
            post_failure(Errc::proxy_failed, "cannot ask the proxy " + name_ + " for '" + printable(target_) +
                                                 "': the host name has blanks or control characters");
            return;
        }
        send(std::move(first));
    }

private:
    void post_failure(Errc code, std::string message)
    {
        asio::post(socket_.get_executor(), [self = shared_from_this(), code, message = std::move(message)] {
            self->finish(code, message);
        });
    }

    void send(std::string bytes)
    {
        auto buffer = std::make_shared<std::string>(std::move(bytes));
        asio::async_write(socket_, asio::buffer(*buffer),
                          [self = shared_from_this(), buffer](const asio::error_code &ec, std::size_t) {
                              if (self->finished_)
                                  return;
                              if (ec) {
                                  self->finish(Errc::proxy_failed,
                                               "the proxy " + self->name_ + " closed the connection: " + ec.message());
                                  return;
                              }
                              self->wait_answer();
                          });
    }

    void wait_answer()
    {
        socket_.async_wait(asio::ip::tcp::socket::wait_read, [self = shared_from_this()](const asio::error_code &ec) {
            if (self->finished_)
                return;
            if (ec) {
                self->finish(Errc::proxy_failed, "the proxy " + self->name_ + " failed: " + ec.message());
                return;
            }
            self->read_answer();
        });
    }

    // Looks at what arrived without taking it, and takes only the proxy's
    // part: what follows the answer is the SSH server's and stays queued.
    void read_answer()
    {
        std::array<char, 4096> buffer;
        const int fd = socket_.native_handle();
        const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            wait_answer();
            return;
        }
        if (n <= 0) {
            finish(Errc::proxy_failed, "the proxy " + name_ + " closed the connection before it answered" +
                                           (n < 0 ? std::string(": ") + std::strerror(errno) : std::string()));
            return;
        }
        const std::string_view seen(buffer.data(), static_cast<std::size_t>(n));
        if (http_)
            take(*http_, seen);
        else
            take(*socks_, seen);
    }

    void consume(std::size_t bytes)
    {
        std::array<char, 4096> sink;
        if (bytes > 0)
            (void)::recv(socket_.native_handle(), sink.data(), bytes, MSG_DONTWAIT); // peeked: it is there
    }

    void take(HttpConnectHandshake &http, std::string_view seen)
    {
        const auto step = http.feed(seen);
        consume(seen.size() - http.take_early_data().size());
        using Kind = HttpConnectHandshake::Step::Kind;
        switch (step.kind) {
        case Kind::need_more:
            wait_answer();
            return;
        case Kind::complete:
            finish({}, {});
            return;
        case Kind::auth_failed:
            finish(Errc::proxy_auth_failed,
                   proxy_.username.empty()
                       ? "the HTTP proxy " + name_ + " asks for a user name and password (" + step.reason +
                             "): write them into the proxy URL, http://USER:PASSWORD@" +
                             endpoint(proxy_.host, proxy_.port)
                       : "the HTTP proxy " + name_ + " did not accept the user name '" + printable(proxy_.username) +
                             "' and its password (" + step.reason + ")");
            return;
        case Kind::refused:
            finish(Errc::proxy_failed, "the HTTP proxy " + name_ + " did not connect to " + target_ + ": " +
                                           step.reason);
            return;
        }
    }

    void take(Socks5ClientHandshake &socks, std::string_view seen)
    {
        SocksStep step = socks.feed(seen);
        consume(seen.size() - (step.kind == SocksStep::Kind::complete ? socks.take_early_data().size() : 0));
        switch (step.kind) {
        case SocksStep::Kind::need_more:
            wait_answer();
            return;
        case SocksStep::Kind::send_and_continue:
            send(std::move(step.send));
            return;
        case SocksStep::Kind::complete:
            finish({}, {});
            return;
        case SocksStep::Kind::failed:
            finish(socks.credentials_refused() ? Errc::proxy_auth_failed : Errc::proxy_failed,
                   "the SOCKS5 proxy " + name_ + ": " + step.reason);
            return;
        }
    }

    void finish(std::error_code ec, const std::string &message)
    {
        if (finished_)
            return;
        finished_ = true;
        timer_.cancel();
        auto done = std::move(done_);
        done(ec, message);
    }

    asio::ip::tcp::socket &socket_;
    asio::steady_timer timer_;
    ProxyOptions proxy_;
    std::string target_;
    std::string name_;
    ProxyDone done_;
    std::unique_ptr<HttpConnectHandshake> http_; ///< one of the two
    std::unique_ptr<Socks5ClientHandshake> socks_;
    bool finished_ = false;
};

} // namespace

void proxy_handshake(asio::ip::tcp::socket &socket, const ProxyOptions &proxy, const std::string &host,
                     std::uint16_t port, std::chrono::steady_clock::time_point deadline, ProxyDone done)
{
    std::make_shared<ProxyStep>(socket, proxy, host, port, std::move(done))->start(deadline);
}

} // namespace pytun::detail
