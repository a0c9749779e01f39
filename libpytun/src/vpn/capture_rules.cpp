// SPDX-License-Identifier: MIT
// The capture's nft and iptables rules, written from a plan.
#include "vpn/capture_rules.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <functional>

namespace pytun::detail {
namespace {

constexpr std::size_t k_max_id = 20;
constexpr const char *k_reject = "reject with icmpx type admin-prohibited";

bool is_v6(const CapturePlan::Net &net)
{
    return net.rule.network.family == IpFamily::v6;
}

bool family_present(const CapturePlan &plan, bool v6)
{
    return v6 ? plan.ipv6 : plan.ipv4;
}

// Captured: an include of a family that is carried.
bool carried(const CapturePlan &plan, const CapturePlan::Net &net)
{
    return family_present(plan, is_v6(net)) && (!is_v6(net) || plan.carry_ipv6);
}

std::string cidr(const DestinationRule &rule)
{
    return rule.network.to_string() + "/" + std::to_string(rule.prefix_length);
}

std::string port_text(const PortRange &ports, char separator)
{
    if (ports.first == ports.last)
        return std::to_string(ports.first);
    return std::to_string(ports.first) + separator + std::to_string(ports.last);
}

// --- nft ---------------------------------------------------------------------

std::string nft_daddr(const IpAddress &address)
{
    return std::string(address.family == IpFamily::v4 ? "ip" : "ip6") + " daddr " + address.to_string();
}

std::string nft_daddr(const DestinationRule &rule)
{
    return std::string(rule.network.family == IpFamily::v4 ? "ip" : "ip6") + " daddr " + cidr(rule);
}

// "tcp dport 80-90" or "meta l4proto tcp" for a rule without ports.
std::string nft_tcp(const PortRange &ports)
{
    return ports.any() ? "meta l4proto tcp" : "tcp dport " + port_text(ports, '-');
}

void nft_nat_chain(std::string &out, const CapturePlan &plan, const std::vector<CapturePlan::Net> &nets,
                   const char *name, const char *hook)
{
    out += "    chain " + std::string(name) + " {\n";
    out += "        type nat hook " + std::string(hook) + " priority -100; policy accept;\n";
    if (std::string(hook) == "output") // our own SSH connections (SO_MARK), whatever their destination
        out += "        meta mark " + std::to_string(k_capture_mark) + " return\n";
    for (const auto &[address, port] : plan.bastions)
        if (family_present(plan, address.family == IpFamily::v6))
            out += "        " + nft_daddr(address) + " tcp dport " + std::to_string(port) + " return\n";
    if (plan.dns_port != 0)
        for (const IpAddress &ns : plan.nameservers)
            if (family_present(plan, ns.family == IpFamily::v6))
                for (const char *proto : {"udp", "tcp"})
                    out += "        " + nft_daddr(ns) + " " + proto + " dport 53 redirect to :" +
                           std::to_string(plan.dns_port) + "\n";
    // Never a local destination (the DNS stub 127.0.0.53 above is the exception).
    out += "        fib daddr type local return\n";
    for (const auto &net : nets) {
        if (!family_present(plan, is_v6(net)))
            continue;
        const std::string match = "        " + nft_daddr(net.rule) + " " + nft_tcp(net.rule.ports);
        if (net.exclude)
            out += match + " return\n";
        else if (carried(plan, net))
            out += match + " redirect to :" + std::to_string(plan.tcp_port) + "\n";
    }
    out += "    }\n";
}

void nft_filter_chain(std::string &out, const CapturePlan &plan, const std::vector<CapturePlan::Net> &nets,
                      const char *name, const char *hook)
{
    out += "    chain " + std::string(name) + " {\n";
    out += "        type filter hook " + std::string(hook) + " priority 0; policy accept;\n";
    if (std::string(hook) == "output") {
        out += "        meta mark " + std::to_string(k_capture_mark) + " accept\n";
        out += "        oifname \"lo\" accept\n";
    }
    // Local, broadcast (DHCP) and multicast traffic is never the subnets'
    // unicast traffic; neighbour discovery keeps IPv6 itself working.
    out += "        fib daddr type { local, broadcast, multicast } accept\n";
    if (plan.ipv6)
        out += "        icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept\n";
    for (const auto &net : nets) {
        if (!family_present(plan, is_v6(net)))
            continue;
        const std::string daddr = "        " + nft_daddr(net.rule);
        if (net.exclude)
            out += daddr + (net.rule.ports.any() ? "" : " th dport " + port_text(net.rule.ports, '-')) + " accept\n";
        else if (!carried(plan, net)) // IPv6 not carried: nothing of it passes
            out += daddr + (net.rule.ports.any() ? "" : " th dport " + port_text(net.rule.ports, '-')) + " " +
                   k_reject + "\n";
        else if (net.rule.ports.any()) // TCP is captured; the rest cannot be carried
            out += daddr + " meta l4proto != tcp " + k_reject + "\n";
        else
            out += daddr + " udp dport " + port_text(net.rule.ports, '-') + " " + k_reject + "\n";
    }
    if (plan.blocks_all_ipv6())
        out += std::string("        meta nfproto ipv6 ") + k_reject + "\n";
    out += "    }\n";
}

// --- iptables ----------------------------------------------------------------

std::string ipt_daddr(const DestinationRule &rule)
{
    return "-d " + cidr(rule);
}

std::string ipt_dport(const PortRange &ports)
{
    return ports.any() ? "" : " --dport " + port_text(ports, ':');
}

std::uint32_t fnv1a(const std::string &text)
{
    std::uint32_t h = 2166136261u;
    for (unsigned char c : text) {
        h ^= c;
        h *= 16777619u;
    }
    return h;
}

} // namespace

bool CapturePlan::blocks_all_ipv6() const
{
    if (!ipv6)
        return false;
    auto whole = [](const Net &n, IpFamily family) {
        return !n.exclude && n.rule.network.family == family && n.rule.prefix_length == 0 && n.rule.ports.any();
    };
    const bool all_v4 = std::any_of(nets.begin(), nets.end(), [&](const Net &n) { return whole(n, IpFamily::v4); });
    const bool all_v6 = std::any_of(nets.begin(), nets.end(), [&](const Net &n) { return whole(n, IpFamily::v6); });
    return all_v4 && !(carry_ipv6 && all_v6);
}

std::string nft_table(const std::string &id)
{
    return "pytun_vpn_" + id;
}

std::string iptables_chain(const std::string &id)
{
    return "PYTUN-" + id;
}

std::string capture_id(const std::string &tunnel_name)
{
    std::string id;
    for (unsigned char c : tunnel_name)
        id += std::isalnum(c) ? static_cast<char>(std::tolower(c)) : '_';
    if (id.empty())
        id = "vpn";
    if (id.size() > k_max_id || id != tunnel_name) {
        // Distinct names stay distinct after the characters were replaced
        // or the name was cut.
        char hash[8];
        std::snprintf(hash, sizeof hash, "%06x", fnv1a(tunnel_name) & 0xffffffu);
        id = id.substr(0, k_max_id - 7) + "_" + hash;
    }
    return id;
}

std::vector<CapturePlan::Net> sorted_nets(const std::vector<CapturePlan::Net> &nets)
{
    auto sorted = nets;
    std::stable_sort(sorted.begin(), sorted.end(), [](const CapturePlan::Net &a, const CapturePlan::Net &b) {
        const int width_a = a.rule.ports.last - a.rule.ports.first;
        const int width_b = b.rule.ports.last - b.rule.ports.first;
        if (width_a != width_b)
            return width_a < width_b;
        if (a.rule.prefix_length != b.rule.prefix_length)
            return a.rule.prefix_length > b.rule.prefix_length;
        return a.exclude && !b.exclude;
    });
    return sorted;
}

std::string nft_install_script(const CapturePlan &plan, const std::string &comment)
{
    const std::string table = nft_table(plan.id);
    const auto nets = sorted_nets(plan.nets);
    std::string quoted_comment;
    for (char c : comment)
        if (c != '"' && c != '\\' && c >= ' ')
            quoted_comment += c;
    // "add" then "delete": the table goes whether or not a crashed run left
    // it, and the new one replaces it in the same transaction.
    std::string out = "add table inet " + table + "\ndelete table inet " + table + "\n";
    out += "table inet " + table + " {\n";
    out += "    comment \"" + quoted_comment + "\"\n";
    nft_nat_chain(out, plan, nets, "nat_output", "output");
    nft_filter_chain(out, plan, nets, "filter_output", "output");
    if (plan.router) {
        nft_nat_chain(out, plan, nets, "nat_prerouting", "prerouting");
        nft_filter_chain(out, plan, nets, "filter_forward", "forward");
    }
    out += "}\n";
    return out;
}

std::string nft_remove_script(const std::string &id)
{
    const std::string table = nft_table(id);
    return "add table inet " + table + "\ndelete table inet " + table + "\n";
}

std::string iptables_install_script(const CapturePlan &plan, bool v6)
{
    const std::string chain = iptables_chain(plan.id);
    const auto nets = sorted_nets(plan.nets);
    const IpFamily family = v6 ? IpFamily::v6 : IpFamily::v4;
    const std::string mark = "-m mark --mark " + std::to_string(k_capture_mark);
    const std::string reject = v6 ? "-j REJECT --reject-with icmp6-adm-prohibited"
                                  : "-j REJECT --reject-with icmp-admin-prohibited";
    const std::string add = "-A " + chain + " ";
    std::string out = "*nat\n:" + chain + " - [0:0]\n";
    out += add + mark + " -j RETURN\n";
    for (const auto &[address, port] : plan.bastions)
        if (address.family == family)
            out += add + "-d " + address.to_string() + " -p tcp --dport " + std::to_string(port) + " -j RETURN\n";
    if (plan.dns_port != 0)
        for (const IpAddress &ns : plan.nameservers)
            if (ns.family == family)
                for (const char *proto : {"udp", "tcp"})
                    out += add + "-d " + ns.to_string() + " -p " + proto + " --dport 53 -j REDIRECT --to-ports " +
                           std::to_string(plan.dns_port) + "\n";
    out += add + "-m addrtype --dst-type LOCAL -j RETURN\n";
    for (const auto &net : nets) {
        if (net.rule.network.family != family)
            continue;
        const std::string match = add + ipt_daddr(net.rule) + " -p tcp" + ipt_dport(net.rule.ports);
        if (net.exclude)
            out += match + " -j RETURN\n";
        else if (carried(plan, net))
            out += match + " -j REDIRECT --to-ports " + std::to_string(plan.tcp_port) + "\n";
    }
    out += "-I OUTPUT 1 -j " + chain + "\n";
    if (plan.router)
        out += "-I PREROUTING 1 -j " + chain + "\n";
    out += "COMMIT\n*filter\n:" + chain + " - [0:0]\n";
    out += add + mark + " -j RETURN\n";
    out += add + "-o lo -j RETURN\n";
    for (const char *type : {"LOCAL", "BROADCAST", "MULTICAST"})
        if (!v6 || std::string_view(type) != "BROADCAST") // IPv6 has none: ip6tables refuses the match
            out += add + "-m addrtype --dst-type " + type + " -j RETURN\n";
    if (v6)
        for (const char *type : {"router-solicitation", "neighbour-solicitation", "neighbour-advertisement"})
            out += add + "-p ipv6-icmp --icmpv6-type " + type + " -j RETURN\n";
    for (const auto &net : nets) {
        if (net.rule.network.family != family)
            continue;
        const std::string daddr = add + ipt_daddr(net.rule);
        const std::string ports = ipt_dport(net.rule.ports);
        if (net.exclude) {
            if (ports.empty())
                out += daddr + " -j RETURN\n";
            else
                for (const char *proto : {"udp", "tcp"})
                    out += daddr + " -p " + proto + ports + " -j RETURN\n";
        } else if (!carried(plan, net)) {
            if (ports.empty())
                out += daddr + " " + reject + "\n";
            else
                for (const char *proto : {"udp", "tcp"})
                    out += daddr + " -p " + proto + ports + " " + reject + "\n";
        } else if (ports.empty()) {
            out += daddr + " ! -p tcp " + reject + "\n";
        } else {
            out += daddr + " -p udp" + ports + " " + reject + "\n";
        }
    }
    if (v6 && plan.blocks_all_ipv6())
        out += add + reject + "\n";
    out += "-I OUTPUT 1 -j " + chain + "\n";
    if (plan.router)
        out += "-I FORWARD 1 -j " + chain + "\n";
    out += "COMMIT\n";
    return out;
}

std::vector<IptablesCommand> iptables_remove_commands(const std::string &id)
{
    const std::string chain = iptables_chain(id);
    std::vector<IptablesCommand> out;
    for (const auto &[table, hooks] :
         {std::pair<const char *, std::vector<const char *>>{"nat", {"OUTPUT", "PREROUTING"}},
          std::pair<const char *, std::vector<const char *>>{"filter", {"OUTPUT", "FORWARD"}}}) {
        for (const char *hook : hooks)
            out.push_back({{"-w", "-t", table, "-D", hook, "-j", chain}, true});
        out.push_back({{"-w", "-t", table, "-F", chain}, false});
        out.push_back({{"-w", "-t", table, "-X", chain}, false});
    }
    return out;
}

} // namespace pytun::detail
