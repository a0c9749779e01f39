// SPDX-License-Identifier: MIT
// What the VPN mode asks the server, through commands run over exec
// channels (ssh/command.h), and the pure parsers of their output:
// - its nameservers (`cat /etc/resolv.conf`), one of which the DNS relay
//   reaches (chosen at random as sshuttle does; --to-ns overrides);
// - its routes for -N (`ip -j -4 route show` and `ip -j -6 route show`,
//   falling back to /proc/net/route and /proc/net/ipv6_route where `ip` is
//   missing or too old for -j), minus loopback, link-local, multicast and,
//   unless asked, the default route.
// The parsers take text from a server we do not control: every field is
// checked, a line that does not parse is skipped, nothing is trusted to be
// short.
#pragma once

#include "internal.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "forward/destination.h"

namespace pytun::detail {

class SshSession;

// --- nameservers -----------------------------------------------------------

/// A resolver as the DNS relay reaches it through the tunnel.
struct Nameserver {
    std::string host;       ///< an IP address as the server understands it ("fe80::1%eth0" keeps its zone)
    std::uint16_t port = 53;
    /// "198.18.1.2:53", "[fd00::1]:53".
    std::string to_string() const;
};

/// The `nameserver` lines of a resolv.conf, in order; lines whose value is
/// not an IP address are skipped.
std::vector<Nameserver> parse_resolv_conf(std::string_view text);

/// The one the relay uses: a random one of `nameservers` (`random` picks),
/// as sshuttle does; 127.0.0.1 when the list is empty (what the C library
/// does without a nameserver line).
Nameserver choose_nameserver(const std::vector<Nameserver> &nameservers, std::uint32_t random);

/// sshuttle's --to-ns IP[:PORT]: "198.18.1.2", "198.18.1.2:5353", "fd00::1",
/// "[fd00::1]:5353". Nothing and `error` (quoting the text) when it does
/// not parse.
std::optional<Nameserver> parse_nameserver(std::string_view text, std::string &error);

// --- routes ------------------------------------------------------------------

struct ServerRoute {
    DestinationRule network; ///< kind network, every port
    std::string device;      ///< "eth0"; "" when the source does not say
    bool operator==(const ServerRoute &) const = default;
};

/// `ip -j route show` output of one family (a JSON array of objects with
/// "dst", "dev", "type"...): the unicast routes ("default", "10.0.0.0/8",
/// "10.1.2.3"). Nothing and `error` when it is not such JSON.
std::optional<std::vector<ServerRoute>> parse_ip_route_json(std::string_view json, IpFamily family,
                                                           std::string &error);
/// /proc/net/route: the routes that are up and not rejects.
std::optional<std::vector<ServerRoute>> parse_proc_net_route(std::string_view text, std::string &error);
/// /proc/net/ipv6_route (every table: the local table's entries are on
/// "lo" and go with the filter below).
std::optional<std::vector<ServerRoute>> parse_proc_net_ipv6_route(std::string_view text, std::string &error);

struct AutoNetsOptions {
    bool include_default = false; ///< keep 0.0.0.0/0 and ::/0
};
/// The subnets -N captures: `routes` minus default routes (unless asked),
/// routes on "lo", loopback (127/8, ::1), link-local (169.254/16,
/// fe80::/10), multicast (224/4, ff00::/8) and the unspecified address,
/// without duplicates, in the order first seen.
std::vector<DestinationRule> auto_nets(const std::vector<ServerRoute> &routes, AutoNetsOptions options = {});

// --- asking the server (on the session's loop thread) ------------------------

struct ServerNameservers {
    std::string error; ///< empty when read; else why not (the relay then needs --to-ns)
    std::vector<Nameserver> nameservers;
};
/// `cat /etc/resolv.conf` on the server; `done` runs once (posted).
void read_server_nameservers(SshSession &session, std::function<void(ServerNameservers)> done);

struct ServerRoutes {
    std::string error;              ///< empty when the IPv4 routes were read
    std::vector<ServerRoute> routes; ///< IPv4, then IPv6
    std::vector<std::string> notes; ///< what fell back or was left out, for the log ("no IPv6 routes: ...")
};
/// The server's IPv4 and IPv6 routes (four commands at most, one after the
/// other); `done` runs once (posted).
void read_server_routes(SshSession &session, std::function<void(ServerRoutes)> done);

} // namespace pytun::detail
