// SPDX-License-Identifier: MIT
// The VPN capture's firewall rules as text: what `nft -f -` or
// iptables-restore is given to redirect TCP to captured subnets to pytun's
// listener, DNS to the relay, and to block what is not carried. Pure: a
// resolved plan in, scripts out (vpn/capture.h runs them).
#pragma once

#include "internal.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "forward/destination.h"

namespace pytun::detail {

/// SO_MARK of pytun's SSH sockets when a tunnel captures ("pytu"): the rules
/// let marked packets through first, so the capture never takes its own
/// bastion connection, a reconnect's included.
inline constexpr std::uint32_t k_capture_mark = 0x70797475;

/// What one capture redirects and blocks, every name resolved.
struct CapturePlan {
    struct Net {
        DestinationRule rule; ///< a network rule (address, prefix, ports)
        bool exclude = false;
    };
    /// Names the table and chains (capture_id()): unique per tunnel.
    std::string id;
    std::uint16_t tcp_port = 0;            ///< the listener (both families)
    std::uint16_t dns_port = 0;            ///< the DNS relay (UDP and TCP); 0: DNS is not captured
    std::vector<IpAddress> nameservers;    ///< DNS to these, port 53, goes to dns_port
    std::vector<Net> nets;                 ///< any order: the writers sort them (sorted_nets)
    std::vector<std::pair<IpAddress, std::uint16_t>> bastions; ///< exact returns for the bastion's address and port
    bool router = false;                   ///< capture forwarded traffic too (prerouting, forward)
    bool ipv4 = true;                      ///< the machine has IPv4 / IPv6 (rules of a missing family are left out)
    bool ipv6 = true;
    bool carry_ipv6 = true;                ///< false: IPv6 nets are blocked instead of captured

    /// 0/0 is captured but IPv6 is not carried as a whole: every IPv6
    /// packet leaving (except pytun's own and neighbour discovery) is
    /// rejected rather than leaked.
    bool blocks_all_ipv6() const;
};

/// "pytun_vpn_<id>": the nft table of a capture.
std::string nft_table(const std::string &id);
/// "PYTUN-<id>": the iptables chain (nat and filter tables) of a capture.
std::string iptables_chain(const std::string &id);
/// A capture id from a tunnel name: letters, digits and '_' (others become
/// '_'), at most 20 characters (a hash keeps truncated names apart).
std::string capture_id(const std::string &tunnel_name);

/// The nets in match order (the first match decides): narrower port ranges
/// first, then longer prefixes, an exclude before an include on a tie.
std::vector<CapturePlan::Net> sorted_nets(const std::vector<CapturePlan::Net> &nets);

/// One nft transaction that replaces the capture's table (whatever a crashed
/// run left of it goes in the same step). `comment` goes into the table.
std::string nft_install_script(const CapturePlan &plan, const std::string &comment);
/// One nft transaction that removes the table whether or not it exists.
std::string nft_remove_script(const std::string &id);

/// iptables-restore --noflush input for one family (false: IPv4, true:
/// IPv6), the nat and filter tables. Run the removal commands first: an
/// install adds jumps from the built-in chains.
std::string iptables_install_script(const CapturePlan &plan, bool v6);
/// One iptables (or ip6tables) command of a removal: it may fail when there
/// is nothing to remove; a `repeat`ed one runs until it fails (a jump added
/// twice by two crashed runs goes too).
struct IptablesCommand {
    std::vector<std::string> args; ///< without the program
    bool repeat = false;
};
/// The commands that remove a capture's chains, jumps first.
std::vector<IptablesCommand> iptables_remove_commands(const std::string &id);

} // namespace pytun::detail
