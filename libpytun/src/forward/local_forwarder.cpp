// SPDX-License-Identifier: MIT
// The local forward, and the listening socket shared by forwards that serve
// local clients.
#include "forward/local_forwarder.h"

#include <pytun/error.h>

#include "forward/admission.h"
#include "forward/relay.h"
#include "util/fd_budget.h"

namespace pytun::detail {

// --- LocalListener -----------------------------------------------------------

bool LocalListener::open(const std::string &bind, std::uint16_t port, std::string &message, bool v6_only)
{
    const std::string where = (bind.find(':') != std::string::npos ? "[" + bind + "]" : bind) + ":" +
                              std::to_string(port);
    asio::error_code ec;
    const auto address = asio::ip::make_address(bind, ec);
    if (ec) {
        open_error_ = asio::error::invalid_argument;
        message = "cannot listen on " + where + ": '" + bind + "' is not an IP address";
        return false;
    }
    const asio::ip::tcp::endpoint endpoint(address, port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec)
        acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec && v6_only && address.is_v6())
        acceptor_.set_option(asio::ip::v6_only(true), ec);
    if (!ec)
        acceptor_.bind(endpoint, ec);
    if (!ec)
        acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    open_error_ = ec;
    if (ec) {
        asio::error_code ignored;
        acceptor_.close(ignored);
        message = "cannot listen on " + where + ": " + ec.message();
        return false;
    }
    return true;
}

std::uint16_t LocalListener::port() const
{
    asio::error_code ec;
    auto endpoint = acceptor_.local_endpoint(ec);
    return ec ? 0 : endpoint.port();
}

void LocalListener::accept(std::function<void(asio::ip::tcp::socket)> on_client)
{
    on_client_ = std::move(on_client);
    accept_next();
}

void LocalListener::accept_next()
{
    acceptor_.async_accept([self = shared_from_this()](const asio::error_code &ec, asio::ip::tcp::socket socket) {
        if (!self->on_client_ || ec == asio::error::operation_aborted)
            return; // closed
        if (!ec) {
            self->on_client_(std::move(socket));
            if (self->on_client_)
                self->accept_next();
            return;
        }
        // Out of descriptors (or another transient error): the client waits
        // in the backlog; accepting again at once would spin.
        if (is_fd_exhaustion(ec))
            FdBudget::instance().note_exhausted();
        self->pause_.expires_after(std::chrono::milliseconds(100));
        self->pause_.async_wait([self](const asio::error_code &timer_ec) {
            if (!timer_ec && self->on_client_)
                self->accept_next();
        });
    });
}

void LocalListener::close()
{
    asio::error_code ignored;
    pause_.cancel();
    acceptor_.close(ignored);
    on_client_ = nullptr;
}

// --- LocalForwarder --------------------------------------------------------------

LocalForwarder::LocalForwarder(asio::io_context &io, pytun::LocalForward spec, std::shared_ptr<spdlog::logger> log,
                           std::shared_ptr<TrafficCounters> counters)
    : io_(io), spec_(std::move(spec)), log_(std::move(log)), counters_(std::move(counters)),
      listener_(std::make_shared<LocalListener>(io))
{
}

void LocalForwarder::start(ForwardContext context, Handlers handlers)
{
    ChannelOpener &opener = context.opener;
    Admission &admission = context.admission;
    std::string message;
    if (!listener_->open(spec_.bind_address, spec_.listen_port, message)) {
        handlers.failed(Errc::local_port_unavailable, message);
        return;
    }
    pytun::LocalForward bound = spec_;
    bound.listen_port = listener_->port();
    log_->info("forward serving: {}", describe(ForwardSpec(bound)));
    // The listener's callback holds the forward; stop_accepting() drops it.
    listener_->accept([this, self = shared_from_this(), &opener, &admission](asio::ip::tcp::socket socket) {
        asio::error_code ec;
        const auto peer = socket.remote_endpoint(ec);
        auto relay = std::make_shared<Relay>(io_, log_, counters_);
        relay->start(std::move(socket));
        if (!admission.admit(*relay))
            return;
        log_->debug("connection #{}: from {} to {}:{}", relay->id(), ec ? std::string("?") : peer.address().to_string(),
                    spec_.target_host, spec_.target_port);
        opener.open_direct_tcpip(relay, spec_.target_host, spec_.target_port,
                                 ec ? std::string("127.0.0.1") : peer.address().to_string(),
                                 ec ? std::uint16_t(0) : peer.port());
    });
    handlers.ready(listener_->port());
}

void LocalForwarder::stop_accepting(std::function<void()> done)
{
    listener_->close();
    done();
}

} // namespace pytun::detail
