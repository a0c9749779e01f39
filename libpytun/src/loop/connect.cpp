// SPDX-License-Identifier: MIT
// A TCP connect that races a deadline.
#include "loop/connect.h"

#include <sys/socket.h>

#include <cerrno>
#include <memory>
#include <vector>

namespace pytun::detail {

std::string ConnectOutcome::describe(std::chrono::milliseconds timeout) const
{
    switch (failure) {
    case Failure::none:
        return {};
    case Failure::resolve:
        return "cannot resolve: " + error.message();
    case Failure::connect:
        return error.message();
    case Failure::timeout:
        return "no answer within " + std::to_string(timeout.count()) + " ms";
    }
    return error.message();
}

void connect_with_deadline(asio::ip::tcp::socket &socket, const std::string &host, std::uint16_t port,
                           std::chrono::milliseconds timeout, std::function<void(const ConnectOutcome &)> done,
                           std::function<bool(const asio::ip::address &)> allowed, std::uint32_t mark)
{
    // Each address in turn, as asio::async_connect does, but the socket is
    // opened here so that it can be marked before it connects.
    struct Attempt : std::enable_shared_from_this<Attempt> {
        asio::ip::tcp::socket &socket;
        asio::ip::tcp::resolver resolver;
        asio::steady_timer timer;
        std::function<void(const ConnectOutcome &)> done;
        std::function<bool(const asio::ip::address &)> allowed;
        std::uint32_t mark;
        std::vector<asio::ip::tcp::endpoint> endpoints;
        std::size_t next = 0;
        asio::error_code last_error = asio::error::access_denied; ///< if no address is allowed
        bool finished = false;

        Attempt(asio::ip::tcp::socket &s, std::function<void(const ConnectOutcome &)> d,
                std::function<bool(const asio::ip::address &)> a, std::uint32_t m)
            : socket(s), resolver(s.get_executor()), timer(s.get_executor()), done(std::move(d)),
              allowed(std::move(a)), mark(m)
        {
        }
        void finish(ConnectOutcome::Failure failure, const asio::error_code &ec,
                    const asio::ip::tcp::endpoint &endpoint = {})
        {
            if (finished)
                return;
            finished = true;
            timer.cancel();
            resolver.cancel();
            done(ConnectOutcome{failure, ec, endpoint});
        }
        void try_next()
        {
            if (finished)
                return;
            while (next < endpoints.size() && allowed && !allowed(endpoints[next].address()))
                ++next;
            if (next == endpoints.size()) {
                finish(ConnectOutcome::Failure::connect, last_error, endpoints.empty() ? asio::ip::tcp::endpoint{}
                                                                                        : endpoints.back());
                return;
            }
            const asio::ip::tcp::endpoint endpoint = endpoints[next++];
            asio::error_code ec;
            socket.close(ec);
            socket.open(endpoint.protocol(), ec);
            if (!ec && mark != 0 &&
                ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
                ec = asio::error_code(errno, asio::error::get_system_category());
            if (ec) {
                last_error = ec;
                asio::post(socket.get_executor(), [self = shared_from_this()] { self->try_next(); });
                return;
            }
            socket.async_connect(endpoint, [self = shared_from_this(), endpoint](const asio::error_code &cec) {
                if (self->finished)
                    return;
                if (!cec) {
                    self->finish(ConnectOutcome::Failure::none, cec, endpoint);
                    return;
                }
                self->last_error = cec;
                self->try_next();
            });
        }
    };
    auto attempt = std::make_shared<Attempt>(socket, std::move(done), std::move(allowed), mark);
    attempt->timer.expires_after(timeout);
    attempt->timer.async_wait([attempt](const asio::error_code &ec) {
        if (ec || attempt->finished)
            return;
        attempt->resolver.cancel();
        asio::error_code ignored;
        attempt->socket.close(ignored); // the pending connect completes with operation_aborted
        attempt->finish(ConnectOutcome::Failure::timeout, asio::error::timed_out);
    });
    asio::error_code parse_error;
    const auto address = asio::ip::make_address(host, parse_error);
    if (!parse_error) {
        attempt->endpoints.emplace_back(address, port);
        asio::post(socket.get_executor(), [attempt] { attempt->try_next(); }); // `done` never runs in here
        return;
    }
    attempt->resolver.async_resolve(host, std::to_string(port),
                                    [attempt](const asio::error_code &ec, asio::ip::tcp::resolver::results_type results) {
                                        if (ec) {
                                            attempt->finish(ConnectOutcome::Failure::resolve, ec);
                                            return;
                                        }
                                        for (const auto &entry : results)
                                            attempt->endpoints.push_back(entry.endpoint());
                                        attempt->try_next();
                                    });
}

} // namespace pytun::detail
