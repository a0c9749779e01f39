// SPDX-License-Identifier: MIT
// Unit tests of the VPN capture's rule writer (vpn/capture_rules.h): match
// order, what is returned before anything is redirected, what is blocked,
// router mode, DNS, IPv6 not carried, the ids, both methods' scripts.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "vpn/capture_rules.h"

using namespace pytun::detail;

namespace {

CapturePlan::Net net(const std::string &text, bool exclude = false)
{
    std::string error;
    auto rule = parse_destination(text, error);
    INFO(text, " -> ", error);
    REQUIRE(rule);
    return {*rule, exclude};
}

IpAddress ip(const std::string &text)
{
    auto address = IpAddress::parse(text);
    REQUIRE(address);
    return *address;
}

CapturePlan plan()
{
    CapturePlan p;
    p.id = capture_id("office vpn");
    p.tcp_port = 12300;
    p.nets = {net("10.0.0.0/8"), net("10.1.0.0/16", true), net("fd00::/8")};
    p.bastions = {{ip("10.9.9.9"), 22}};
    return p;
}

// Where `needle` is in `text` (npos fails the check that uses it).
std::size_t at(const std::string &text, const std::string &needle)
{
    const auto position = text.find(needle);
    INFO("missing: ", needle, "\nin:\n", text);
    CHECK(position != std::string::npos);
    return position;
}

std::string chain(const std::string &script, const std::string &name)
{
    const auto begin = script.find("chain " + name + " {");
    REQUIRE(begin != std::string::npos);
    return script.substr(begin, script.find("    }\n", begin) - begin);
}

} // namespace

TEST_CASE("match order: narrower ports, then longer prefixes, an exclude before an include on a tie")
{
    const auto sorted = sorted_nets({net("0.0.0.0/0"), net("10.0.0.0/8"), net("10.0.0.0/8", true),
                                     net("10.0.0.0/8:443"), net("10.1.2.0/24")});
    REQUIRE(sorted.size() == 5);
    CHECK(sorted[0].rule.to_string() == "10.0.0.0/8:443");
    CHECK(sorted[1].rule.to_string() == "10.1.2.0/24");
    CHECK((sorted[2].rule.to_string() == "10.0.0.0/8" && sorted[2].exclude));
    CHECK((sorted[3].rule.to_string() == "10.0.0.0/8" && !sorted[3].exclude));
    CHECK(sorted[4].rule.to_string() == "0.0.0.0/0");
}

TEST_CASE("nft: pytun's own connections and the bastion come back before anything is redirected")
{
    const std::string script = nft_install_script(plan(), "pytun vpn test");
    // One transaction that replaces whatever a crashed run left.
    CHECK(script.rfind("add table inet " + nft_table(plan().id) + "\ndelete table inet ", 0) == 0);
    const std::string nat = chain(script, "nat_output");
    const auto mark = at(nat, "meta mark " + std::to_string(k_capture_mark) + " return");
    const auto bastion = at(nat, "ip daddr 10.9.9.9 tcp dport 22 return");
    const auto local = at(nat, "fib daddr type local return");
    const auto exclude = at(nat, "ip daddr 10.1.0.0/16 meta l4proto tcp return");
    const auto include = at(nat, "ip daddr 10.0.0.0/8 meta l4proto tcp redirect to :12300");
    at(nat, "ip6 daddr fd00::/8 meta l4proto tcp redirect to :12300");
    CHECK(mark < bastion);
    CHECK(bastion < local);
    CHECK(local < exclude);
    CHECK(exclude < include);
    // What is not TCP to a captured net is rejected, not leaked; pytun's own
    // packets and the excluded net pass.
    const std::string filter = chain(script, "filter_output");
    CHECK(at(filter, "meta mark " + std::to_string(k_capture_mark) + " accept") <
          at(filter, "ip daddr 10.0.0.0/8 meta l4proto != tcp reject"));
    CHECK(at(filter, "ip daddr 10.1.0.0/16 accept") < at(filter, "ip daddr 10.0.0.0/8 meta l4proto != tcp"));
    // Not a router: nothing on the prerouting and forward hooks.
    CHECK(script.find("prerouting") == std::string::npos);
    CHECK(script.find("hook forward") == std::string::npos);
}

TEST_CASE("nft: router mode, DNS, IPv6 not carried")
{
    CapturePlan p = plan();
    p.router = true;
    p.dns_port = 5353;
    p.nameservers = {ip("10.0.0.53"), ip("fd00::53")};
    p.carry_ipv6 = false;
    const std::string script = nft_install_script(p, "x");
    const std::string prerouting = chain(script, "nat_prerouting");
    at(prerouting, "type nat hook prerouting");
    at(prerouting, "ip daddr 10.0.0.0/8 meta l4proto tcp redirect to :12300");
    CHECK(prerouting.find("meta mark") == std::string::npos); // only our own output is marked
    at(chain(script, "filter_forward"), "ip daddr 10.0.0.0/8 meta l4proto != tcp reject");
    // DNS to the nameservers goes to the relay before the local-destination return.
    const std::string nat = chain(script, "nat_output");
    CHECK(at(nat, "ip daddr 10.0.0.53 udp dport 53 redirect to :5353") < at(nat, "fib daddr type local return"));
    at(nat, "ip daddr 10.0.0.53 tcp dport 53 redirect to :5353");
    // IPv6 is not carried: blocked, never redirected.
    CHECK(nat.find("fd00::/8 meta l4proto tcp redirect") == std::string::npos);
    at(chain(script, "filter_output"), "ip6 daddr fd00::/8 reject");
}

TEST_CASE("nft: 0/0 without IPv6 carried blocks all IPv6 but neighbour discovery")
{
    CapturePlan p = plan();
    p.nets = {net("0.0.0.0/0"), net("::/0")};
    p.carry_ipv6 = false;
    CHECK(p.blocks_all_ipv6());
    const std::string filter = chain(nft_install_script(p, "x"), "filter_output");
    CHECK(at(filter, "icmpv6 type { nd-router-solicit") < at(filter, "meta nfproto ipv6 reject"));
}

TEST_CASE("iptables: both families, jumps from the built-in chains, nothing IPv6 lacks")
{
    const CapturePlan p = plan();
    const std::string chain_name = iptables_chain(p.id);
    const std::string v4 = iptables_install_script(p, false);
    CHECK(at(v4, "-A " + chain_name + " -m mark --mark " + std::to_string(k_capture_mark) + " -j RETURN") <
          at(v4, "-d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 12300"));
    at(v4, "-I OUTPUT 1 -j " + chain_name);
    at(v4, "-d 10.9.9.9 -p tcp --dport 22 -j RETURN");
    CHECK(v4.find("fd00::") == std::string::npos);
    const std::string v6 = iptables_install_script(p, true);
    at(v6, "-d fd00::/8 -p tcp -j REDIRECT --to-ports 12300");
    CHECK(v6.find("10.0.0.0") == std::string::npos);
    CHECK(v6.find("BROADCAST") == std::string::npos); // ip6tables refuses it
    // The removal deletes the jumps (repeatedly: several crashed runs) before the chains.
    const auto commands = iptables_remove_commands(p.id);
    REQUIRE(!commands.empty());
    CHECK(commands.front().repeat);
    CHECK(commands.front().args[3] == "-D");
}

TEST_CASE("capture ids: safe in nft and iptables names, short, distinct")
{
    const std::string id = capture_id("ops@bastion.example.com:22");
    CHECK(id.size() <= 20);
    CHECK(id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == std::string::npos);
    CHECK(capture_id("a-very-long-tunnel-name-one") != capture_id("a-very-long-tunnel-name-two"));
    CHECK(capture_id("vpn") == capture_id("vpn"));
    CHECK(iptables_chain(id).size() <= 28); // iptables' limit on chain names
}
