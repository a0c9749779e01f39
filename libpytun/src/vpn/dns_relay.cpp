// SPDX-License-Identifier: MIT
// The DNS relay: UDP and TCP clients on a local port, DNS over TCP through
// the tunnel, IDs kept apart, answers cut for UDP, SERVFAIL without a tunnel.
#include "vpn/dns_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <random>
#include <unordered_map>

#include "forward/forward.h"
#include "log/aggregate.h"
#include "ssh/channel_stream.h"
#include "util/text.h"
#include "vpn/dns_message.h"

namespace pytun::detail {
namespace {

using Clock = std::chrono::steady_clock;

/// Datagrams read per wake-up of a UDP socket, so one flooding client
/// cannot hold the loop.
constexpr int k_udp_batch = 64;
/// A query is sent at most this often: again once if its channel ended
/// before the answer (a resolver closing an idle connection, RFC 7766 §6.2.3).
constexpr unsigned k_max_sends = 2;
/// A channel carries at most this many queries at once (its ID space).
constexpr unsigned k_max_ids = 60000;
constexpr std::size_t k_tcp_read_chunk = 16 * 1024;
constexpr int k_bind_attempts = 10;

long long ms_since(Clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::string endpoint_text(const sockaddr_storage &address)
{
    char text[INET6_ADDRSTRLEN] = "?";
    std::uint16_t port = 0;
    if (address.ss_family == AF_INET) {
        const auto &a = reinterpret_cast<const sockaddr_in &>(address);
        ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
        port = ntohs(a.sin_port);
        return std::string(text) + ":" + std::to_string(port);
    }
    const auto &a = reinterpret_cast<const sockaddr_in6 &>(address);
    ::inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    port = ntohs(a.sin6_port);
    return "[" + std::string(text) + "]:" + std::to_string(port);
}

} // namespace

class DnsTcpClient;
class DnsChannel;

/// Who asked: a UDP client (answered from the address it sent to) or a TCP
/// client of the relay.
struct DnsOrigin {
    // UDP
    std::size_t socket = 0; ///< index into the relay's UDP sockets
    sockaddr_storage peer{};
    socklen_t peer_length = 0;
    bool has_local = false;
    in_pktinfo local4{};
    in6_pktinfo local6{};
    // TCP
    std::weak_ptr<DnsTcpClient> tcp;
    bool is_tcp = false;
};

class DnsRelayImpl : public std::enable_shared_from_this<DnsRelayImpl> {
public:
    DnsRelayImpl(asio::io_context &io, DnsRelayOptions options, std::shared_ptr<spdlog::logger> log)
        : io_(io), options_(std::move(options)), log_(std::move(log)), counters_(std::make_shared<DnsCounters>()),
          deadline_timer_(io)
    {
        options_.channels = std::max(1u, options_.channels);
        options_.max_in_flight = std::clamp(options_.max_in_flight, 1u, k_max_ids);
        options_.max_queries_per_tcp_client = std::max(1u, options_.max_queries_per_tcp_client);
    }

    bool open(std::string &message);
    void attach(ChannelOpener &opener, std::string host, std::uint16_t port);
    void detach();
    void close();

    /// A message from a client: forwarded, answered here, or dropped.
    void on_message(DnsOrigin origin, std::string_view message);
    /// An answer came from a channel.
    void on_answer(DnsChannel &channel, std::string_view message);
    /// A channel is finished: `error` when it never opened.
    void on_channel_closed(DnsChannel &channel, OpenError error);
    void on_tcp_client_closed(DnsTcpClient *client);

    struct Query {
        DnsOrigin origin;
        std::string message; ///< as the client sent it
        std::size_t question_end = 0;
        std::size_t udp_size = dns::k_classic_udp_size;
        std::string name;
        std::uint16_t qtype = 0;
        Clock::time_point arrived;
        Clock::time_point deadline;
        std::weak_ptr<DnsChannel> channel;
        std::uint16_t upstream_id = 0;
        unsigned sends = 0;
    };

    asio::io_context &io_;
    DnsRelayOptions options_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<DnsCounters> counters_;
    std::uint16_t port_ = 0;

    ChannelOpener *opener_ = nullptr;
    std::string resolver_host_;
    std::uint16_t resolver_port_ = 53;

    std::vector<std::unique_ptr<asio::ip::udp::socket>> udp_;
    std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> tcp_;
    std::vector<std::shared_ptr<DnsTcpClient>> tcp_clients_;
    std::vector<std::shared_ptr<DnsChannel>> channels_;
    std::unordered_map<std::uint64_t, Query> queries_;
    std::deque<std::pair<Clock::time_point, std::uint64_t>> deadlines_; ///< by arrival: the timeout is the same for all
    asio::steady_timer deadline_timer_;
    bool deadline_armed_ = false;
    std::uint64_t last_serial_ = 0;
    std::vector<char> datagram_ = std::vector<char>(65536);
    bool closed_ = false;

private:
    bool bind_all(std::uint16_t port, std::string &message, bool &retry);
    void read_udp(std::size_t index);
    void arm_udp(std::size_t index);
    void accept_tcp(std::size_t index);
    void send_query(std::uint64_t serial);
    std::shared_ptr<DnsChannel> pick_channel();
    void respond(const DnsOrigin &origin, std::string message);
    void servfail(std::uint64_t serial, const char *why);
    void servfail_now(const DnsOrigin &origin, std::string_view query, const std::string &why);
    void arm_deadline();
    void expire();
};

// --- a DNS-over-TCP channel to the resolver -----------------------------------

/// One direct-tcpip channel to the resolver: frames queries into the upload
/// buffer, reads answers out of the download buffer. The queries it carries
/// are known by the IDs it gave them.
class DnsChannel final : public ChannelStream {
public:
    DnsChannel(std::shared_ptr<spdlog::logger> log, std::weak_ptr<DnsRelayImpl> relay, std::uint16_t first_id)
        : ChannelStream(std::move(log)), relay_(std::move(relay)), next_id_(first_id)
    {
    }

    /// Upstream ID -> the relay's query.
    std::unordered_map<std::uint16_t, std::uint64_t> in_flight;
    Clock::time_point created = Clock::now();
    bool ended = false; ///< the resolver closed its side, or we gave up on it: no new queries

    bool usable() const
    {
        return !ended && (phase() == Phase::opening || phase() == Phase::open) && in_flight.size() < k_max_ids;
    }
    std::uint16_t allocate_id()
    {
        while (in_flight.count(next_id_))
            ++next_id_;
        return next_id_++;
    }
    void send(std::string framed)
    {
        outbox_.push_back(std::move(framed));
        flush();
    }
    /// The relay lets go of this channel (detach, close): nothing is
    /// reported back any more.
    void disown(const char *why)
    {
        relay_.reset();
        in_flight.clear();
        outbox_.clear();
        begin_close(why);
    }
    void give_up(const char *why)
    {
        ended = true;
        begin_close(why);
    }

private:
    void flush()
    {
        bool progress = false;
        while (!outbox_.empty()) {
            std::span<char> space = upload_space();
            if (space.empty())
                break; // the rest goes in on_upload_space()
            std::string &front = outbox_.front();
            const std::size_t n = std::min(space.size(), front.size() - sent_of_front_);
            std::memcpy(space.data(), front.data() + sent_of_front_, n);
            uploaded(n);
            progress = true;
            sent_of_front_ += n;
            if (sent_of_front_ == front.size()) {
                outbox_.pop_front();
                sent_of_front_ = 0;
            }
        }
        if (progress)
            wake();
    }

    void on_download() override
    {
        for (std::span<char> data = download_data(); !data.empty(); data = download_data()) {
            reader_.feed(std::string_view(data.data(), data.size()));
            delivered(data.size());
            while (auto message = reader_.next()) {
                auto relay = relay_.lock();
                if (!relay)
                    return;
                relay->on_answer(*this, *message);
            }
        }
        if (download_ended()) {
            // The resolver closed its side (idle, or done with us): we send
            // nothing more either; unanswered queries go elsewhere.
            ended = true;
            local_eof();
            local_shut();
        }
    }
    void on_upload_space() override { flush(); }
    void on_closed(OpenError error) override
    {
        ended = true;
        if (auto relay = relay_.lock())
            relay->on_channel_closed(*this, error);
    }

    std::weak_ptr<DnsRelayImpl> relay_;
    std::uint16_t next_id_;
    std::deque<std::string> outbox_; ///< frames not yet in the upload buffer (bounded by the relay's in-flight limit)
    std::size_t sent_of_front_ = 0;
    dns::FrameReader reader_;
};

// --- a TCP client of the relay ---------------------------------------------------

class DnsTcpClient : public std::enable_shared_from_this<DnsTcpClient> {
public:
    DnsTcpClient(asio::ip::tcp::socket socket, std::weak_ptr<DnsRelayImpl> relay, unsigned max_in_flight,
                 std::chrono::milliseconds idle_timeout)
        : socket_(std::move(socket)), relay_(std::move(relay)), max_in_flight_(max_in_flight),
          idle_timeout_(idle_timeout), idle_timer_(socket_.get_executor())
    {
        asio::error_code ec;
        auto peer = socket_.remote_endpoint(ec);
        peer_ = ec ? "?" : (peer.address().is_v6() ? "[" + peer.address().to_string() + "]"
                                                   : peer.address().to_string()) +
                               ":" + std::to_string(peer.port());
    }

    const std::string &peer() const { return peer_; }

    void start()
    {
        touch();
        read();
    }

    /// An answer for one of this client's queries (framed here).
    void answer(std::string_view message)
    {
        if (closed_)
            return;
        out_.push_back(dns::frame(message));
        write();
    }

    /// One of its queries is over: answered (written) or dropped.
    void query_done()
    {
        if (in_flight_ > 0)
            --in_flight_;
        if (taking_)
            return; // take_queries() goes on by itself
        read();
        maybe_finish();
    }

    void close()
    {
        if (closed_)
            return;
        closed_ = true;
        asio::error_code ignored;
        idle_timer_.cancel();
        socket_.close(ignored);
        out_.clear();
        if (auto relay = relay_.lock())
            relay->on_tcp_client_closed(this);
    }

private:
    void touch()
    {
        idle_timer_.expires_after(idle_timeout_);
        idle_timer_.async_wait([weak = weak_from_this()](const asio::error_code &ec) {
            if (auto self = weak.lock(); self && !ec)
                self->close(); // no byte either way for the whole timeout
        });
    }

    void read()
    {
        if (closed_ || reading_ || eof_)
            return;
        // Backpressure: queries whose answers are not written yet are bounded.
        if (in_flight_ >= max_in_flight_)
            return;
        take_queries(); // frames already here first
        if (in_flight_ >= max_in_flight_ || closed_)
            return;
        reading_ = true;
        socket_.async_read_some(asio::buffer(buffer_),
                                [self = shared_from_this()](const asio::error_code &ec, std::size_t n) {
                                    self->reading_ = false;
                                    if (self->closed_)
                                        return;
                                    if (ec) {
                                        self->eof_ = true;
                                        self->maybe_finish();
                                        return;
                                    }
                                    self->touch();
                                    self->reader_.feed(std::string_view(self->buffer_.data(), n));
                                    self->read();
                                });
    }

    void take_queries()
    {
        taking_ = true;
        while (in_flight_ < max_in_flight_ && !closed_) {
            auto message = reader_.next();
            if (!message)
                return;
            auto relay = relay_.lock();
            if (!relay) {
                close();
                return;
            }
            ++in_flight_;
            DnsOrigin origin;
            origin.is_tcp = true;
            origin.tcp = weak_from_this();
            relay->on_message(std::move(origin), *message);
        }
        taking_ = false;
    }

    void write()
    {
        if (writing_ || out_.empty() || closed_)
            return;
        writing_ = true;
        asio::async_write(socket_, asio::buffer(out_.front()),
                          [self = shared_from_this()](const asio::error_code &ec, std::size_t) {
                              self->writing_ = false;
                              if (self->closed_)
                                  return;
                              if (ec) {
                                  self->close();
                                  return;
                              }
                              self->touch();
                              self->out_.pop_front();
                              self->query_done(); // answered
                              self->write();
                          });
    }

    /// The client sent its EOF: close once every answer is out.
    void maybe_finish()
    {
        if (eof_ && in_flight_ == 0 && out_.empty() && !writing_)
            close();
    }

    asio::ip::tcp::socket socket_;
    std::weak_ptr<DnsRelayImpl> relay_;
    unsigned max_in_flight_;
    std::chrono::milliseconds idle_timeout_;
    asio::steady_timer idle_timer_;
    std::string peer_;
    std::array<char, k_tcp_read_chunk> buffer_{};
    dns::FrameReader reader_;
    std::deque<std::string> out_;
    unsigned in_flight_ = 0; ///< queries taken whose answers are not written yet
    bool reading_ = false;
    bool writing_ = false;
    bool eof_ = false;
    bool taking_ = false; ///< inside take_queries(): a query answered at once must not recurse
    bool closed_ = false;
};

// --- the relay --------------------------------------------------------------------

bool DnsRelayImpl::open(std::string &message)
{
    for (int attempt = 0; attempt < k_bind_attempts; ++attempt) {
        bool retry = false;
        if (bind_all(options_.port, message, retry))
            break;
        udp_.clear();
        tcp_.clear();
        if (!retry)
            return false;
    }
    if (udp_.empty())
        return false;
    for (std::size_t i = 0; i < udp_.size(); ++i)
        arm_udp(i);
    for (std::size_t i = 0; i < tcp_.size(); ++i)
        accept_tcp(i);
    return true;
}

// Binds UDP and TCP on every address, all on one port (the first bind picks
// it when `port` is 0; `retry` when a later bind found that port taken).
bool DnsRelayImpl::bind_all(std::uint16_t port, std::string &message, bool &retry)
{
    for (const std::string &text : options_.listen) {
        const std::string where = (text.find(':') != std::string::npos ? "[" + text + "]" : text) + ":";
        asio::error_code ec;
        const auto address = asio::ip::make_address(text, ec);
        if (ec) {
            message = "DNS relay: cannot listen on '" + printable(text) + "': not an IP address";
            return false;
        }
        auto udp = std::make_unique<asio::ip::udp::socket>(io_);
        auto tcp = std::make_unique<asio::ip::tcp::acceptor>(io_);
        const asio::ip::udp::endpoint udp_end(address, port);
        udp->open(udp_end.protocol(), ec);
        if (!ec && address.is_v6())
            udp->set_option(asio::ip::v6_only(true), ec);
        if (!ec)
            udp->bind(udp_end, ec);
        if (ec == std::errc::address_not_available || ec == asio::error::address_family_not_supported) {
            if (address.is_v6()) { // a host without IPv6 (sshuttle #738): go on without it
                log_->warn("DNS relay: no IPv6 here ({}: {}); serving IPv4 only", where + std::to_string(port),
                           ec.message());
                continue;
            }
        }
        if (ec) {
            retry = ec == asio::error::address_in_use && options_.port == 0 && port != 0;
            message = "DNS relay: cannot listen on UDP " + where + std::to_string(port) + ": " + ec.message();
            return false;
        }
        if (port == 0)
            port = udp->local_endpoint().port();
        const asio::ip::tcp::endpoint tcp_end(address, port);
        tcp->open(tcp_end.protocol(), ec);
        if (!ec && address.is_v6())
            tcp->set_option(asio::ip::v6_only(true), ec);
        if (!ec)
            tcp->set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
        if (!ec)
            tcp->bind(tcp_end, ec);
        if (!ec)
            tcp->listen(asio::socket_base::max_listen_connections, ec);
        if (ec) {
            retry = ec == asio::error::address_in_use && options_.port == 0;
            message = "DNS relay: cannot listen on TCP " + where + std::to_string(port) + ": " + ec.message();
            return false;
        }
        // Learn the address each datagram was sent to, to answer from it.
        const int one = 1;
        const int fd = udp->native_handle();
        if (address.is_v6())
            ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
        else
            ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
        udp->non_blocking(true, ec);
        udp_.push_back(std::move(udp));
        tcp_.push_back(std::move(tcp));
    }
    if (udp_.empty()) {
        message = "DNS relay: no address to listen on";
        return false;
    }
    port_ = port;
    return true;
}

void DnsRelayImpl::arm_udp(std::size_t index)
{
    udp_[index]->async_wait(asio::ip::udp::socket::wait_read,
                            [weak = weak_from_this(), index](const asio::error_code &ec) {
                                auto self = weak.lock();
                                if (!self || ec || self->closed_)
                                    return;
                                self->read_udp(index);
                            });
}

void DnsRelayImpl::read_udp(std::size_t index)
{
    const int fd = udp_[index]->native_handle();
    for (int i = 0; i < k_udp_batch && !closed_; ++i) {
        DnsOrigin origin;
        origin.socket = index;
        iovec iov{datagram_.data(), datagram_.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(in_pktinfo))];
        msghdr msg{};
        msg.msg_name = &origin.peer;
        msg.msg_namelen = sizeof origin.peer;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break; // EAGAIN, or an error queued for the socket (ICMP): wait for more
        }
        origin.peer_length = msg.msg_namelen;
        for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                std::memcpy(&origin.local4, CMSG_DATA(c), sizeof origin.local4);
                origin.has_local = true;
            } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                std::memcpy(&origin.local6, CMSG_DATA(c), sizeof origin.local6);
                origin.has_local = true;
            }
        }
        // A datagram larger than our buffer cannot be a query of ours.
        const bool cut = msg.msg_flags & MSG_TRUNC;
        on_message(std::move(origin), std::string_view(datagram_.data(), cut ? 0 : static_cast<std::size_t>(n)));
    }
    if (!closed_)
        arm_udp(index);
}

void DnsRelayImpl::accept_tcp(std::size_t index)
{
    tcp_[index]->async_accept([weak = weak_from_this(), index](const asio::error_code &ec,
                                                               asio::ip::tcp::socket socket) {
        auto self = weak.lock();
        if (!self || self->closed_ || ec == asio::error::operation_aborted)
            return;
        if (!ec) {
            if (self->tcp_clients_.size() >= self->options_.max_tcp_clients) {
                log_aggregated(*self->log_, spdlog::level::warn, "dns tcp clients",
                               "DNS relay: more than " + std::to_string(self->options_.max_tcp_clients) +
                                   " TCP clients at once; closing the newest");
            } else {
                auto client = std::make_shared<DnsTcpClient>(std::move(socket), weak, self->options_.max_queries_per_tcp_client,
                                                             self->options_.tcp_idle_timeout);
                self->tcp_clients_.push_back(client);
                client->start();
            }
            self->accept_tcp(index);
            return;
        }
        // Out of descriptors or the like: try again shortly rather than spin.
        auto pause = std::make_shared<asio::steady_timer>(self->io_, std::chrono::milliseconds(100));
        pause->async_wait([weak, index, pause](const asio::error_code &timer_ec) {
            if (auto s = weak.lock(); s && !timer_ec && !s->closed_)
                s->accept_tcp(index);
        });
    });
}

void DnsRelayImpl::on_tcp_client_closed(DnsTcpClient *client)
{
    std::erase_if(tcp_clients_, [client](const auto &c) { return c.get() == client; });
}

void DnsRelayImpl::on_message(DnsOrigin origin, std::string_view message)
{
    counters_->queries.fetch_add(1, std::memory_order_relaxed);
    dns::QueryCheck check = dns::check_query(message);
    if (check.verdict != dns::QueryCheck::Verdict::forward) {
        counters_->rejected.fetch_add(1, std::memory_order_relaxed);
        const std::string who = origin.is_tcp ? "a TCP client" : endpoint_text(origin.peer);
        log_aggregated(*log_, spdlog::level::debug, "dns rejected",
                       "DNS relay: " +
                           std::string(check.verdict == dns::QueryCheck::Verdict::drop ? "dropped" : "refused") +
                           " a message from " + who + ": " + check.why);
        if (check.verdict == dns::QueryCheck::Verdict::answer)
            respond(origin, std::move(check.reply));
        else if (auto client = origin.tcp.lock())
            client->query_done();
        return;
    }
    if (!opener_) {
        servfail_now(origin, message, "no tunnel: answered SERVFAIL (nothing is sent anywhere else)");
        return;
    }
    if (queries_.size() >= options_.max_in_flight) {
        servfail_now(origin, message,
                     "more than " + std::to_string(options_.max_in_flight) + " queries in flight: answered SERVFAIL");
        return;
    }
    const std::uint64_t serial = ++last_serial_;
    Query &q = queries_[serial];
    q.origin = std::move(origin);
    q.message = std::string(message);
    q.question_end = check.info.question_end;
    q.udp_size = check.info.udp_size;
    q.name = std::move(check.info.name);
    q.qtype = check.info.qtype;
    q.arrived = Clock::now();
    q.deadline = q.arrived + options_.query_timeout;
    deadlines_.emplace_back(q.deadline, serial);
    arm_deadline();
    send_query(serial);
}

std::shared_ptr<DnsChannel> DnsRelayImpl::pick_channel()
{
    std::shared_ptr<DnsChannel> best;
    for (auto &channel : channels_)
        if (channel->usable() && (!best || channel->in_flight.size() < best->in_flight.size()))
            best = channel;
    if (best && (best->in_flight.empty() || channels_.size() >= options_.channels))
        return best;
    // None, or all busy and room for another: pipelining goes on over a few
    // channels, so one slow answer does not hold up the rest (RFC 7766 §6.2.1.1).
    static thread_local std::minstd_rand random{std::random_device{}()};
    auto channel = std::make_shared<DnsChannel>(log_, weak_from_this(), static_cast<std::uint16_t>(random()));
    channels_.push_back(channel);
    counters_->channels_opened.fetch_add(1, std::memory_order_relaxed);
    log_->debug("DNS relay: opening a channel to the resolver {}", resolver_host_ + ":" + std::to_string(resolver_port_));
    opener_->open_direct_tcpip(channel, resolver_host_, resolver_port_, "127.0.0.1", port_);
    return channel;
}

void DnsRelayImpl::send_query(std::uint64_t serial)
{
    auto it = queries_.find(serial);
    if (it == queries_.end())
        return;
    Query &q = it->second;
    if (!opener_) {
        servfail(serial, "no tunnel");
        return;
    }
    auto channel = pick_channel();
    q.upstream_id = channel->allocate_id();
    q.channel = channel;
    ++q.sends;
    channel->in_flight[q.upstream_id] = serial;
    std::string wire = q.message;
    dns::set_message_id(wire, q.upstream_id);
    channel->send(dns::frame(wire));
}

void DnsRelayImpl::on_answer(DnsChannel &channel, std::string_view message)
{
    auto header = dns::read_header(message);
    if (!header) {
        log_aggregated(*log_, spdlog::level::warn, "dns bad answer",
                       "DNS relay: the resolver sent " + std::to_string(message.size()) +
                           " bytes that are no DNS message; ignored");
        return;
    }
    auto slot = channel.in_flight.find(header->id);
    if (slot == channel.in_flight.end())
        return; // its query timed out already
    const std::uint64_t serial = slot->second;
    channel.in_flight.erase(slot);
    auto it = queries_.find(serial);
    if (it == queries_.end())
        return;
    Query &q = it->second;
    const std::string_view question = std::string_view(q.message).substr(dns::k_header_size,
                                                                          q.question_end - dns::k_header_size);
    if (!dns::answer_matches(message, question)) {
        log_aggregated(*log_, spdlog::level::warn, "dns mismatched answer",
                       "DNS relay: an answer from the resolver does not match its query for " + q.name +
                           "; answering SERVFAIL");
        servfail(serial, "mismatched answer");
        return;
    }
    std::string answer(message);
    dns::set_message_id(answer, dns::message_id(q.message));
    bool truncated = false;
    if (!q.origin.is_tcp && answer.size() > q.udp_size) {
        answer = dns::truncate_for_udp(answer, q.udp_size);
        truncated = true;
        counters_->truncated.fetch_add(1, std::memory_order_relaxed);
    }
    counters_->answered.fetch_add(1, std::memory_order_relaxed);
    if (log_->should_log(spdlog::level::debug))
        log_->debug("DNS relay: {} (type {}) from {}: {}, {} bytes{} in {} ms", q.name, q.qtype,
                    q.origin.is_tcp ? "TCP" : endpoint_text(q.origin.peer), dns::rcode_name(header->rcode),
                    message.size(), truncated ? " (cut for UDP: TC)" : "", ms_since(q.arrived));
    DnsOrigin origin = std::move(q.origin);
    queries_.erase(it);
    respond(origin, std::move(answer));
}

void DnsRelayImpl::on_channel_closed(DnsChannel &channel, OpenError error)
{
    auto self_channel = std::find_if(channels_.begin(), channels_.end(),
                                     [&channel](const auto &c) { return c.get() == &channel; });
    if (self_channel == channels_.end())
        return;
    std::shared_ptr<DnsChannel> keep = *self_channel;
    channels_.erase(self_channel);
    const std::string resolver = resolver_host_ + ":" + std::to_string(resolver_port_);
    if (error != OpenError::none) {
        counters_->channel_failures.fetch_add(1, std::memory_order_relaxed);
        log_aggregated(*log_, spdlog::level::warn, "dns channel " + std::string(to_string(error)),
                       "DNS relay: no channel to the server's resolver " + resolver + ": " + to_string(error) +
                           "; answering SERVFAIL (check --to-ns, and that the bastion allows TCP forwarding)");
    } else if (!channel.in_flight.empty()) {
        counters_->channel_failures.fetch_add(1, std::memory_order_relaxed);
        log_->debug("DNS relay: the channel to {} ended with {} queries unanswered", resolver,
                    channel.in_flight.size());
    }
    // A failed open means the resolver cannot be reached: SERVFAIL. A lost
    // channel: its queries go once more on another, after the loop has run
    // (a lost session is first reported to its tunnel, which may detach us).
    std::vector<std::uint64_t> orphans;
    for (const auto &[id, serial] : channel.in_flight)
        orphans.push_back(serial);
    channel.in_flight.clear();
    std::sort(orphans.begin(), orphans.end()); // in arrival order
    for (std::uint64_t serial : orphans) {
        auto it = queries_.find(serial);
        if (it == queries_.end())
            continue;
        if (error != OpenError::none || it->second.sends >= k_max_sends) {
            servfail(serial, error != OpenError::none ? "no channel to the resolver" : "channel lost twice");
            continue;
        }
        it->second.channel.reset();
        asio::post(io_, [weak = weak_from_this(), serial] {
            if (auto self = weak.lock())
                self->send_query(serial);
        });
    }
}

void DnsRelayImpl::respond(const DnsOrigin &origin, std::string message)
{
    if (origin.is_tcp) {
        if (auto client = origin.tcp.lock())
            client->answer(message);
        return;
    }
    if (origin.socket >= udp_.size() || !udp_[origin.socket]->is_open())
        return;
    iovec iov{message.data(), message.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
    msghdr msg{};
    msg.msg_name = const_cast<sockaddr_storage *>(&origin.peer);
    msg.msg_namelen = origin.peer_length;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    // From the address the query was sent to: after a redirect, conntrack
    // then turns it back into the nameserver the client asked.
    if (origin.has_local) {
        msg.msg_control = control;
        cmsghdr *c = reinterpret_cast<cmsghdr *>(control);
        if (origin.peer.ss_family == AF_INET) {
            in_pktinfo info{};
            info.ipi_spec_dst = origin.local4.ipi_addr;
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof info);
            std::memcpy(CMSG_DATA(c), &info, sizeof info);
            msg.msg_controllen = CMSG_SPACE(sizeof info);
        } else {
            in6_pktinfo info{};
            info.ipi6_addr = origin.local6.ipi6_addr;
            if (IN6_IS_ADDR_LINKLOCAL(&info.ipi6_addr))
                info.ipi6_ifindex = origin.local6.ipi6_ifindex;
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof info);
            std::memcpy(CMSG_DATA(c), &info, sizeof info);
            msg.msg_controllen = CMSG_SPACE(sizeof info);
        }
    }
    // A full socket buffer drops the answer: the client asks again.
    if (::sendmsg(udp_[origin.socket]->native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        log_->debug("DNS relay: answer to {} not sent: {}", endpoint_text(origin.peer), std::strerror(errno));
}

void DnsRelayImpl::servfail(std::uint64_t serial, const char *why)
{
    auto it = queries_.find(serial);
    if (it == queries_.end())
        return;
    Query q = std::move(it->second);
    queries_.erase(it);
    if (auto channel = q.channel.lock())
        channel->in_flight.erase(q.upstream_id);
    counters_->servfail.fetch_add(1, std::memory_order_relaxed);
    log_->debug("DNS relay: {} (type {}): SERVFAIL ({}) after {} ms", q.name, q.qtype, why, ms_since(q.arrived));
    respond(q.origin, dns::make_reply(q.message, dns::Rcode::servfail));
}

void DnsRelayImpl::servfail_now(const DnsOrigin &origin, std::string_view query, const std::string &why)
{
    counters_->servfail.fetch_add(1, std::memory_order_relaxed);
    log_aggregated(*log_, spdlog::level::info, "dns servfail " + why, "DNS relay: " + why);
    respond(origin, dns::make_reply(query, dns::Rcode::servfail));
}

void DnsRelayImpl::arm_deadline()
{
    if (deadline_armed_ || deadlines_.empty() || closed_)
        return;
    deadline_armed_ = true;
    deadline_timer_.expires_at(deadlines_.front().first);
    deadline_timer_.async_wait([weak = weak_from_this()](const asio::error_code &ec) {
        auto self = weak.lock();
        if (!self)
            return;
        self->deadline_armed_ = false;
        if (!ec)
            self->expire();
        self->arm_deadline();
    });
}

void DnsRelayImpl::expire()
{
    const auto now = Clock::now();
    while (!deadlines_.empty() && deadlines_.front().first <= now) {
        const std::uint64_t serial = deadlines_.front().second;
        deadlines_.pop_front();
        auto it = queries_.find(serial);
        if (it == queries_.end())
            continue; // answered
        // A channel that could not even open in this time is given up: the
        // next query opens a new one.
        if (auto channel = it->second.channel.lock();
            channel && channel->phase() == ChannelStream::Phase::opening && now - channel->created >= options_.query_timeout)
            channel->give_up("the resolver did not answer in time");
        counters_->timeouts.fetch_add(1, std::memory_order_relaxed);
        log_aggregated(*log_, spdlog::level::warn, "dns timeout",
                       "DNS relay: no answer from the server's resolver " + resolver_host_ + ":" +
                           std::to_string(resolver_port_) + " within " +
                           std::to_string(options_.query_timeout.count()) + " ms (" + it->second.name +
                           "); answered SERVFAIL");
        servfail(serial, "timed out");
    }
}

void DnsRelayImpl::attach(ChannelOpener &opener, std::string host, std::uint16_t port)
{
    if (opener_)
        detach();
    opener_ = &opener;
    resolver_host_ = std::move(host);
    resolver_port_ = port;
    log_->info("DNS relay: queries go to the server's resolver {}:{} through the tunnel", resolver_host_,
               resolver_port_);
}

void DnsRelayImpl::detach()
{
    if (!opener_)
        return;
    opener_ = nullptr;
    auto channels = std::move(channels_);
    channels_.clear();
    for (auto &channel : channels)
        channel->disown("the tunnel is down");
    std::vector<std::uint64_t> serials;
    for (const auto &[serial, q] : queries_)
        serials.push_back(serial);
    std::sort(serials.begin(), serials.end());
    for (std::uint64_t serial : serials)
        servfail(serial, "the tunnel went down");
    deadlines_.clear();
    log_->info("DNS relay: no tunnel; answering SERVFAIL until it is back");
}

void DnsRelayImpl::close()
{
    if (closed_)
        return;
    detach();
    closed_ = true;
    deadline_timer_.cancel();
    asio::error_code ignored;
    for (auto &s : udp_)
        s->close(ignored);
    for (auto &a : tcp_)
        a->close(ignored);
    auto clients = std::move(tcp_clients_);
    tcp_clients_.clear();
    for (auto &client : clients)
        client->close();
}

// --- the public face ----------------------------------------------------------------

DnsRelay::DnsRelay(asio::io_context &io, DnsRelayOptions options, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_shared<DnsRelayImpl>(io, std::move(options), std::move(log)))
{
}

DnsRelay::~DnsRelay()
{
    close();
}

bool DnsRelay::open(std::string &message)
{
    return impl_->open(message);
}

std::uint16_t DnsRelay::port() const
{
    return impl_->port_;
}

void DnsRelay::attach(ChannelOpener &opener, std::string resolver_host, std::uint16_t resolver_port)
{
    impl_->attach(opener, std::move(resolver_host), resolver_port);
}

void DnsRelay::detach()
{
    impl_->detach();
}

bool DnsRelay::attached() const
{
    return impl_->opener_ != nullptr;
}

std::string DnsRelay::resolver() const
{
    if (!impl_->opener_)
        return {};
    const std::string &host = impl_->resolver_host_;
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
           std::to_string(impl_->resolver_port_);
}

void DnsRelay::close()
{
    impl_->close();
}

std::shared_ptr<const DnsCounters> DnsRelay::counters() const
{
    return impl_->counters_;
}

std::size_t DnsRelay::in_flight() const
{
    return impl_->queries_.size();
}

} // namespace pytun::detail
