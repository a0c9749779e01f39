// SPDX-License-Identifier: MIT
// A TCP connect that races a deadline.
#include "loop/connect.h"

#include <memory>

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
                           std::function<bool(const asio::ip::address &)> allowed)
{
    struct Attempt {
        asio::ip::tcp::socket &socket;
        asio::ip::tcp::resolver resolver;
        asio::steady_timer timer;
        std::function<void(const ConnectOutcome &)> done;
        bool finished = false;

        Attempt(asio::ip::tcp::socket &s, std::function<void(const ConnectOutcome &)> d)
            : socket(s), resolver(s.get_executor()), timer(s.get_executor()), done(std::move(d))
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
        void connected(const asio::error_code &ec, const asio::ip::tcp::endpoint &endpoint)
        {
            finish(ec ? ConnectOutcome::Failure::connect : ConnectOutcome::Failure::none, ec, endpoint);
        }
    };
    auto attempt = std::make_shared<Attempt>(socket, std::move(done));
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
        const asio::ip::tcp::endpoint endpoint(address, port);
        if (allowed && !allowed(address)) {
            asio::post(socket.get_executor(), [attempt, endpoint] {
                attempt->finish(ConnectOutcome::Failure::connect, asio::error::access_denied, endpoint);
            });
            return;
        }
        attempt->socket.async_connect(
            endpoint, [attempt, endpoint](const asio::error_code &ec) { attempt->connected(ec, endpoint); });
        return;
    }
    attempt->resolver.async_resolve(
        host, std::to_string(port),
        [attempt, allowed = std::move(allowed)](const asio::error_code &ec,
                                                asio::ip::tcp::resolver::results_type results) {
            if (ec) {
                attempt->finish(ConnectOutcome::Failure::resolve, ec);
                return;
            }
            auto on_connect = [attempt](const asio::error_code &cec, const asio::ip::tcp::endpoint &endpoint) {
                attempt->connected(cec == asio::error::not_found ? asio::error::access_denied : cec, endpoint);
            };
            if (!allowed) {
                asio::async_connect(attempt->socket, results, on_connect);
                return;
            }
            // not_found: every address was refused by `allowed`.
            asio::async_connect(
                attempt->socket, results,
                [allowed](const asio::error_code &, const asio::ip::tcp::endpoint &e) { return allowed(e.address()); },
                on_connect);
        });
}

} // namespace pytun::detail
