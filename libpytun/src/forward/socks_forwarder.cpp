// SPDX-License-Identifier: MIT
// The SOCKS forward (-D) and the reverse SOCKS negotiation.
#include "forward/socks_forwarder.h"

#include <array>

#include <pytun/error.h>

#include "forward/admission.h"
#include "forward/local_forwarder.h"

namespace pytun::detail {
namespace {

// A client that has not finished its SOCKS request by then is dropped (it
// would hold a descriptor and a buffer for nothing).
constexpr std::chrono::seconds k_handshake_deadline{10};

SocksReply reply_for(OpenError error)
{
    switch (error) {
    case OpenError::none: return SocksReply::succeeded;
    case OpenError::prohibited: return SocksReply::not_allowed;
    case OpenError::connect_failed: return SocksReply::connection_refused;
    case OpenError::timed_out: return SocksReply::ttl_expired;
    case OpenError::resource_shortage:
    case OpenError::other: return SocksReply::general_failure;
    }
    return SocksReply::general_failure;
}

SocksReply reply_for(const ConnectOutcome &outcome)
{
    using Failure = ConnectOutcome::Failure;
    switch (outcome.failure) {
    case Failure::none: return SocksReply::succeeded;
    case Failure::timeout: return SocksReply::ttl_expired;
    case Failure::resolve: return SocksReply::host_unreachable;
    case Failure::connect: break;
    }
    const asio::error_code &ec = outcome.error;
    if (ec == asio::error::access_denied)
        return SocksReply::not_allowed; // no resolved address is on the allowlist
    if (ec == asio::error::connection_refused)
        return SocksReply::connection_refused;
    if (ec == asio::error::host_unreachable)
        return SocksReply::host_unreachable;
    if (ec == asio::error::network_unreachable)
        return SocksReply::network_unreachable;
    if (ec == asio::error::timed_out)
        return SocksReply::ttl_expired;
    return SocksReply::general_failure;
}

std::optional<SocksCredentials> credentials_of(const pytun::DynamicForward &spec)
{
    if (spec.username.empty() || spec.password.empty())
        return std::nullopt;
    return SocksCredentials{spec.username, spec.password};
}

} // namespace

bool parse_allowlist(const std::vector<std::string> &rules, DestinationSet &set, std::string &error)
{
    for (const auto &rule : rules)
        if (!set.add(rule, error))
            return false;
    return true;
}

// --- one client's handshake ----------------------------------------------------

class SocksForwarder::Client : public std::enable_shared_from_this<Client> {
public:
    Client(asio::ip::tcp::socket accepted, std::optional<SocksCredentials> credentials)
        : socket(std::move(accepted)), handshake(std::move(credentials)), timer_(socket.get_executor())
    {
    }

    void start(std::shared_ptr<SocksForwarder> forwarder)
    {
        forwarder_ = forwarder;
        timer_.expires_after(k_handshake_deadline);
        timer_.async_wait([self = shared_from_this()](const asio::error_code &ec) {
            if (!ec)
                self->close();
        });
        read();
    }

    /// Answer and close (a refusal after the request).
    void refuse(SocksReply reply)
    {
        auto bytes = std::make_shared<std::string>(handshake.reply(reply));
        asio::async_write(socket, asio::buffer(*bytes),
                          [self = shared_from_this(), bytes](const asio::error_code &, std::size_t) { self->close(); });
    }

    void close()
    {
        timer_.cancel();
        asio::error_code ignored;
        socket.close(ignored);
        forwarder_.reset();
    }

    asio::ip::tcp::socket socket;
    SocksServerHandshake handshake;

private:
    void read()
    {
        socket.async_read_some(asio::buffer(buffer_),
                               [self = shared_from_this()](const asio::error_code &ec, std::size_t n) {
                                   if (ec) {
                                       self->close();
                                       return;
                                   }
                                   self->act(self->handshake.feed(std::string_view(self->buffer_.data(), n)));
                               });
    }

    void act(SocksStep step)
    {
        auto bytes = std::make_shared<std::string>(std::move(step.send));
        auto next = [self = shared_from_this(), kind = step.kind, reason = std::move(step.reason)] {
            switch (kind) {
            case SocksStep::Kind::need_more:
            case SocksStep::Kind::send_and_continue:
                self->read();
                return;
            case SocksStep::Kind::complete:
                self->timer_.cancel();
                if (auto forwarder = self->forwarder_.lock())
                    forwarder->on_request(self);
                return;
            case SocksStep::Kind::failed:
                if (auto forwarder = self->forwarder_.lock())
                    forwarder->log_->debug("SOCKS client refused: {}", reason);
                self->close();
                return;
            }
        };
        if (bytes->empty()) {
            next();
            return;
        }
        asio::async_write(socket, asio::buffer(*bytes),
                          [self = shared_from_this(), bytes, next](const asio::error_code &ec, std::size_t) {
                              if (ec)
                                  self->close();
                              else
                                  next();
                          });
    }

    asio::steady_timer timer_;
    std::array<char, 512> buffer_{};
    std::weak_ptr<SocksForwarder> forwarder_;
};

// --- SocksForwarder --------------------------------------------------------------

SocksForwarder::SocksForwarder(asio::io_context &io, pytun::DynamicForward spec,
                               std::chrono::milliseconds open_timeout, std::shared_ptr<spdlog::logger> log,
                               std::shared_ptr<TrafficCounters> counters)
    : io_(io), spec_(std::move(spec)), open_timeout_(open_timeout), log_(std::move(log)),
      counters_(std::move(counters)), listener_(std::make_shared<LocalListener>(io))
{
}

SocksForwarder::~SocksForwarder() = default;

void SocksForwarder::start(ForwardContext context, Handlers handlers)
{
    std::string message;
    if (!parse_allowlist(spec_.allow, allow_, message)) {
        handlers.failed(Errc::invalid_options, describe(ForwardSpec(spec_)) + ": allow: " + message);
        return;
    }
    if (!listener_->open(spec_.bind_address, spec_.listen_port, message)) {
        handlers.failed(Errc::local_port_unavailable, message);
        return;
    }
    opener_ = &context.opener;
    admission_ = &context.admission;
    log_->info("forward serving: {}", describe(ForwardSpec(spec_)));
    listener_->accept([this, self = shared_from_this()](asio::ip::tcp::socket socket) { on_client(std::move(socket)); });
    handlers.ready(listener_->port());
}

void SocksForwarder::on_client(asio::ip::tcp::socket socket)
{
    std::erase_if(handshakes_, [](const std::weak_ptr<Client> &c) { return c.expired(); });
    auto client = std::make_shared<Client>(std::move(socket), credentials_of(spec_));
    handshakes_.push_back(client);
    client->start(shared_from_this());
}

void SocksForwarder::on_request(std::shared_ptr<Client> client)
{
    const SocksRequest &request = client->handshake.request();
    if (!allow_.empty() && !allow_.matches(request.host, request.port)) {
        counters_->failed.fetch_add(1, std::memory_order_relaxed);
        log_->info("SOCKS request for {}:{} refused: not on the allowlist", request.host, request.port);
        client->refuse(SocksReply::not_allowed);
        return;
    }
    asio::error_code ec;
    const auto peer = client->socket.remote_endpoint(ec);
    auto relay = std::make_shared<Relay>(io_, log_, counters_);
    if (!admission_->admit(*relay)) {
        client->refuse(SocksReply::general_failure);
        return;
    }
    relay->on_open(
        client->handshake.reply(SocksReply::succeeded),
        [client](Relay::Socket &socket, OpenError error) {
            asio::error_code ignored; // best effort: a few bytes into a fresh socket
            asio::write(socket, asio::buffer(client->handshake.reply(reply_for(error))), ignored);
        },
        open_timeout_);
    log_->debug("connection #{}: SOCKS{} from {} to {}:{}", relay->id(), request.version,
                ec ? std::string("?") : peer.address().to_string(), request.host, request.port);
    relay->start(std::move(client->socket), client->handshake.take_early_data());
    opener_->open_direct_tcpip(relay, request.host, request.port,
                               ec ? std::string("127.0.0.1") : peer.address().to_string(), ec ? 0 : peer.port());
}

void SocksForwarder::stop_accepting(std::function<void()> done)
{
    listener_->close();
    for (auto &weak : handshakes_)
        if (auto client = weak.lock())
            client->close();
    handshakes_.clear();
    done();
}

// --- reverse SOCKS ---------------------------------------------------------------

void negotiate_reverse_socks(Relay &relay, std::shared_ptr<const DestinationSet> allow,
                             std::chrono::milliseconds connect_timeout, std::shared_ptr<spdlog::logger> log)
{
    auto handshake = std::make_shared<SocksServerHandshake>();
    relay.negotiate(
        [handshake, allow, log, id = relay.id()](std::string_view bytes) {
            Relay::Negotiation next;
            SocksStep step = handshake->feed(bytes);
            next.reply = std::move(step.send);
            switch (step.kind) {
            case SocksStep::Kind::need_more:
            case SocksStep::Kind::send_and_continue:
                return next;
            case SocksStep::Kind::failed:
                log->debug("connection #{}: SOCKS client refused: {}", id, step.reason);
                next.kind = Relay::Negotiation::Kind::refuse;
                return next;
            case SocksStep::Kind::complete:
                break;
            }
            const SocksRequest &request = handshake->request();
            const std::uint16_t port = request.port;
            if (request.address_type != SocksRequest::AddressType::domain || !allow->matches(request.host, port)) {
                // An address, or a name no name rule allows: only addresses
                // the network rules allow may be used (a name is resolved here
                // and each of its addresses checked).
                if (request.address_type != SocksRequest::AddressType::domain &&
                    !allow->matches(request.host, port)) {
                    log->info("connection #{}: reverse SOCKS request for {}:{} refused: not on the allowlist", id,
                              request.host, port);
                    next.reply += handshake->reply(SocksReply::not_allowed);
                    next.kind = Relay::Negotiation::Kind::refuse;
                    return next;
                }
                next.allowed = [allow, port](const asio::ip::address &address) {
                    auto ip = IpAddress::parse(address.to_string());
                    return ip && allow->matches(*ip, port);
                };
            }
            next.kind = Relay::Negotiation::Kind::connect;
            next.host = request.host;
            next.port = port;
            next.early_data = handshake->take_early_data();
            return next;
        },
        [handshake](const ConnectOutcome &outcome) { return handshake->reply(reply_for(outcome)); },
        connect_timeout);
}

} // namespace pytun::detail
