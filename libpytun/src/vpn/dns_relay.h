// SPDX-License-Identifier: MIT
// DnsRelay: the VPN mode's DNS. It listens on a local UDP and TCP port (the
// capture rules redirect the client's port-53 traffic there) and carries
// every query as DNS over TCP through the tunnel to the server's resolver:
// a few long-lived direct-tcpip channels opened through the tunnel's
// ChannelOpener, queries of all clients pipelined on them with IDs
// rewritten per channel and mapped back. A UDP answer larger than what the
// client takes comes back truncated (TC set) so the client asks again over
// TCP; a UDP answer leaves from the address the query was sent to
// (IP_PKTINFO / IPV6_PKTINFO), so conntrack turns it back into the
// nameserver the client asked. While no tunnel is attached every query is
// answered SERVFAIL at once: the relay never sends a query anywhere but
// into the tunnel. Queries in flight are bounded, and each has a deadline.
//
// The relay outlives SSH connections: attach() when a connection is ready
// (its opener and the resolver it should reach), detach() before that
// opener goes away. All calls on one loop thread, the one the opener's
// sessions run on. docs/vpn.md, "DNS".
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <asio.hpp>
#include <spdlog/logger.h>

namespace pytun::detail {

class ChannelOpener;
class DnsRelayImpl;

struct DnsRelayOptions {
    /// Addresses to listen on (UDP and TCP, one port for all). The output
    /// hook's redirect lands on 127.0.0.1 / ::1; router mode's prerouting
    /// redirect lands on the receiving interface's address: listen on
    /// 0.0.0.0 / :: then. An IPv6 address the host lacks is skipped with a
    /// warning.
    std::vector<std::string> listen{"127.0.0.1", "::1"};
    std::uint16_t port = 0; ///< 0: one the kernel finds free (on every address)
    unsigned channels = 2;  ///< DNS-over-TCP channels to the resolver, at most
    unsigned max_in_flight = 512; ///< queries waiting for the resolver; beyond: SERVFAIL at once
    std::chrono::milliseconds query_timeout{5000}; ///< then SERVFAIL (a stub resolver's own timeout is 5 s)
    unsigned max_tcp_clients = 64;                 ///< more are closed on arrival
    unsigned max_queries_per_tcp_client = 32;      ///< in flight; its socket is not read beyond
    std::chrono::milliseconds tcp_idle_timeout{10000}; ///< a TCP client with nothing in flight
};

/// Counts since the relay started: written on the loop thread, read from any.
struct DnsCounters {
    std::atomic<std::uint64_t> queries{0};     ///< received (UDP datagrams and TCP frames), malformed included
    std::atomic<std::uint64_t> answered{0};    ///< answers from the resolver passed on
    std::atomic<std::uint64_t> truncated{0};   ///< of those, cut for UDP (TC)
    std::atomic<std::uint64_t> servfail{0};    ///< answered SERVFAIL here: no tunnel, timeout, overload, channel lost
    std::atomic<std::uint64_t> timeouts{0};    ///< of those, no answer in query_timeout
    std::atomic<std::uint64_t> rejected{0};    ///< answered FORMERR / NOTIMP / REFUSED here, or dropped
    std::atomic<std::uint64_t> channels_opened{0};
    std::atomic<std::uint64_t> channel_failures{0}; ///< opens refused or failed, channels lost with queries
};

class DnsRelay {
public:
    DnsRelay(asio::io_context &io, DnsRelayOptions options, std::shared_ptr<spdlog::logger> log);
    ~DnsRelay();
    DnsRelay(const DnsRelay &) = delete;
    DnsRelay &operator=(const DnsRelay &) = delete;

    /// Bind UDP and TCP on every listen address and start serving (SERVFAIL
    /// until attach()). False and a message naming the address when it
    /// cannot.
    bool open(std::string &message);
    /// The port every socket listens on (after open()).
    std::uint16_t port() const;

    /// A tunnel is up: queries go to `resolver_host`:`resolver_port` (as the
    /// server resolves it: the server's own nameserver, often 127.0.0.53)
    /// through channels `opener` opens. The opener must stay valid until
    /// detach().
    void attach(ChannelOpener &opener, std::string resolver_host, std::uint16_t resolver_port);
    /// The tunnel is gone: queries in flight and from now on are answered
    /// SERVFAIL at once; the channels are closed. Idempotent.
    void detach();
    bool attached() const;
    /// "host:port" of the resolver while attached, else "".
    std::string resolver() const;

    /// Stop serving: detach, close the sockets and every TCP client.
    /// Idempotent; also done by the destructor.
    void close();

    /// Shared with status readers on other threads.
    std::shared_ptr<const DnsCounters> counters() const;
    /// Queries waiting for the resolver now.
    std::size_t in_flight() const;

private:
    std::shared_ptr<DnsRelayImpl> impl_; ///< shared with the relay's pending socket waits and channels
};

} // namespace pytun::detail
