// SPDX-License-Identifier: MIT
// Unit tests of vpn/server_info.h's parsers, on real outputs: resolv.conf
// as systemd-resolved and a DHCP client write it, and `ip -j route`,
// /proc/net/route and /proc/net/ipv6_route captured in a network namespace
// set up like a bastion (a lan behind it, a gateway route, a host route, a
// blackhole, unreachable routes, IPv6 link-local and local-table entries).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "vpn/server_info.h"

using namespace pytun::detail;

namespace {

std::string data(const std::string &name)
{
    std::ifstream in(std::string(PYTUN_TEST_DATA) + "/" + name, std::ios::binary);
    REQUIRE(in);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::vector<std::string> texts(const std::vector<DestinationRule> &rules)
{
    std::vector<std::string> out;
    for (const auto &r : rules)
        out.push_back(r.to_string());
    return out;
}

std::vector<std::string> hosts(const std::vector<Nameserver> &nameservers)
{
    std::vector<std::string> out;
    for (const auto &n : nameservers)
        out.push_back(n.to_string());
    return out;
}

const std::vector<std::string> k_lab_v4 = {"198.18.0.0/24", "198.18.1.0/24", "198.18.7.0/24", "198.18.9.9/32"};
const std::vector<std::string> k_lab_v6 = {"fd00:198:18::/64", "fd00:198:18:1::/64", "fd00:198:18:7::/64"};

} // namespace

TEST_CASE("resolv.conf: the nameserver lines that hold IP addresses, in order")
{
    CHECK(hosts(parse_resolv_conf(data("resolv-stub.conf"))) == std::vector<std::string>{"127.0.0.53:53"});
    CHECK(hosts(parse_resolv_conf(data("resolv-classic.conf"))) ==
          std::vector<std::string>{"198.18.1.2:53", "[fd00:198:18:1::2]:53", "[fe80::1%to-lan]:53",
                                   "198.18.1.3:53"});
    CHECK(parse_resolv_conf("").empty());
    CHECK(parse_resolv_conf(std::string(100000, 'n')).empty());
    std::string many;
    for (int i = 0; i < 100; ++i)
        many += "nameserver 198.18.1." + std::to_string(i) + "\n";
    CHECK(parse_resolv_conf(many).size() == 32);
    CHECK(parse_resolv_conf("nameserver 10.1.1.1").size() == 1); // no final new line
    CHECK(parse_resolv_conf("nameserver 10.1.1.1%eth0").empty()); // a zone only for IPv6
}

TEST_CASE("choose_nameserver: one at random; 127.0.0.1 without any")
{
    const auto list = parse_resolv_conf(data("resolv-classic.conf"));
    CHECK(choose_nameserver(list, 0).host == "198.18.1.2");
    CHECK(choose_nameserver(list, 1).host == "fd00:198:18:1::2");
    CHECK(choose_nameserver(list, 7).host == "198.18.1.3");
    CHECK(choose_nameserver({}, 5).to_string() == "127.0.0.1:53");
}

TEST_CASE("--to-ns IP[:PORT]")
{
    std::string error;
    CHECK(parse_nameserver("198.18.1.2", error)->to_string() == "198.18.1.2:53");
    CHECK(parse_nameserver("198.18.1.2:5353", error)->to_string() == "198.18.1.2:5353");
    CHECK(parse_nameserver("fd00::1", error)->to_string() == "[fd00::1]:53");
    CHECK(parse_nameserver("[fd00::1]:5353", error)->to_string() == "[fd00::1]:5353");
    CHECK(parse_nameserver("[fd00::1]", error)->to_string() == "[fd00::1]:53");
    CHECK(parse_nameserver("fe80::1%eth0", error)->to_string() == "[fe80::1%eth0]:53");
    for (const char *bad : {"", "dns.example", "198.18.1.2:0", "198.18.1.2:65536", "198.18.1.2:", "[198.18.1.2]:53",
                            "[fd00::1]x", "[fd00::1", "1.2.3.4:53:53", "fd00::1]:53", "[fd00::1]:5x"}) {
        CAPTURE(bad);
        error.clear();
        CHECK_FALSE(parse_nameserver(bad, error));
        CHECK(error.find("is not IP[:PORT]") != std::string::npos);
    }
}

TEST_CASE("ip -j route: unicast routes of the family asked")
{
    std::string error;
    auto v4 = parse_ip_route_json(data("ip-j-4-route.json"), IpFamily::v4, error);
    REQUIRE(v4);
    REQUIRE(v4->size() == 5); // default + 4; the blackhole and the unreachable route are left out
    CHECK(v4->front().network.to_string() == "0.0.0.0/0");
    CHECK(v4->front().device == "to-client");
    CHECK(texts(auto_nets(*v4)) == k_lab_v4);
    auto with_default = k_lab_v4;
    with_default.insert(with_default.begin(), "0.0.0.0/0");
    CHECK(texts(auto_nets(*v4, {.include_default = true})) == with_default);

    auto v6 = parse_ip_route_json(data("ip-j-6-route.json"), IpFamily::v6, error);
    REQUIRE(v6);
    CHECK(texts(auto_nets(*v6)) == k_lab_v6);
    CHECK(texts(auto_nets(*v6, {.include_default = true})).back() == "::/0");

    // The other family's routes are not taken.
    CHECK(parse_ip_route_json(data("ip-j-4-route.json"), IpFamily::v6, error)->size() == 1); // only "default"
    CHECK(parse_ip_route_json(data("ip-j-6-route.json"), IpFamily::v4, error)->size() == 1);
}

TEST_CASE("ip -j route: what is not such JSON")
{
    std::string error;
    CHECK_FALSE(parse_ip_route_json("Option \"-j\" is unknown, try \"ip -help\".", IpFamily::v4, error));
    CHECK(error.find("not the JSON array") != std::string::npos);
    CHECK_FALSE(parse_ip_route_json("{\"dst\":\"default\"}", IpFamily::v4, error));
    CHECK_FALSE(parse_ip_route_json("[" + std::string(100000, '['), IpFamily::v4, error));
    CHECK(error.size() < 300); // the server's text is quoted bounded
    auto odd = parse_ip_route_json(R"([1, "x", {"dst": 5}, {"dst": "10.0.0.0/33"}, {"dst": "10.0.0.0/x"},
        {"dst": "10.1.0.0/16", "type": 7}, {"dst": "10.2.0.0/16", "type": "unicast", "dev": "e\u001bth0"},
        {"dst": "10.3.0.5/16"}, {"dst": "::ffff:10.0.0.0/104"}, {"dst": "ldap.example"}])",
                                   IpFamily::v4, error);
    REQUIRE(odd);
    REQUIRE(odd->size() == 2);
    CHECK((*odd)[0].network.to_string() == "10.2.0.0/16");
    CHECK((*odd)[0].device == "e\\x1bth0");
    CHECK((*odd)[1].network.to_string() == "10.3.0.0/16"); // host bits cleared
}

TEST_CASE("/proc/net/route: the same routes as ip -j")
{
    std::string error;
    auto v4 = parse_proc_net_route(data("proc-net-route.txt"), error);
    REQUIRE(v4);
    CHECK(v4->size() == 5);
    CHECK(texts(auto_nets(*v4)) == k_lab_v4);
    CHECK((*v4)[1].device == "to-client");
    // A big-endian server prints each address in its own order; the masks tell.
    const std::string big_endian = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                                   "eth0\tC6120100\t00000000\t0001\t0\t0\t0\tFFFFFF00\n"
                                   "eth0\tC6120909\tC6120102\t0007\t0\t0\t0\tFFFFFFFF\n";
    auto be = parse_proc_net_route(big_endian, error);
    REQUIRE(be);
    CHECK(texts(auto_nets(*be)) == std::vector<std::string>{"198.18.1.0/24", "198.18.9.9/32"});
    // Bad lines are skipped; a text without the header is not this file.
    auto bad = parse_proc_net_route("Iface x\neth0 zz 0 1 0 0 0 00FFFFFF\neth0 000112C6 0 1 0 0 0 00FF00FF\n"
                                    "eth0 000112C6 0 1\n",
                                    error);
    REQUIRE(bad);
    CHECK(bad->empty());
    CHECK_FALSE(parse_proc_net_route("cat: /proc/net/route: No such file or directory", error));
}

TEST_CASE("/proc/net/ipv6_route: the main table's routes, not the local table's")
{
    std::string error;
    auto v6 = parse_proc_net_ipv6_route(data("proc-net-ipv6_route.txt"), error);
    REQUIRE(v6);
    CHECK(texts(auto_nets(*v6)) == k_lab_v6);
    CHECK(texts(auto_nets(*v6, {.include_default = true})).back() == "::/0");
    auto empty = parse_proc_net_ipv6_route("", error);
    REQUIRE(empty);
    CHECK(empty->empty());
    CHECK_FALSE(parse_proc_net_ipv6_route("junk\n", error));
    auto odd = parse_proc_net_ipv6_route(
        "fd0001980018000700000000000000zz 40 0 00 0 00000400 00000001 00000000 00000003 eth0\n"
        "fd000198001800070000000000000000 81 0 00 0 00000400 00000001 00000000 00000003 eth0\n"
        "fd000198001800070000000000000000 40 0 00 0 00000400 00000001 00000000 00000003 eth0\n",
        error);
    REQUIRE(odd);
    CHECK(texts(auto_nets(*odd)) == std::vector<std::string>{"fd00:198:18:7::/64"});
}

TEST_CASE("auto_nets leaves out loopback, link-local, multicast and duplicates")
{
    std::string error;
    auto routes = parse_ip_route_json(R"([
        {"dst":"127.0.0.0/8","dev":"eth0"}, {"dst":"127.0.0.1","dev":"eth0"}, {"dst":"169.254.0.0/16","dev":"eth0"},
        {"dst":"224.0.0.0/4","dev":"eth0"}, {"dst":"239.1.1.1","dev":"eth0"}, {"dst":"0.0.0.0/8","dev":"eth0"},
        {"dst":"255.255.255.255","dev":"eth0"}, {"dst":"10.0.0.0/8","dev":"lo"},
        {"dst":"10.1.0.0/16","dev":"eth0"}, {"dst":"10.1.0.0/16","dev":"eth1"}, {"dst":"0.0.0.0/1","dev":"tun0"}])",
                                      IpFamily::v4, error);
    REQUIRE(routes);
    CHECK(texts(auto_nets(*routes)) == std::vector<std::string>{"10.1.0.0/16", "0.0.0.0/1"});
    auto v6 = parse_ip_route_json(R"([{"dst":"::1","dev":"lo"}, {"dst":"::1","dev":"eth0"}, {"dst":"fe80::/10"},
        {"dst":"febf::/16"}, {"dst":"ff02::/16"}, {"dst":"fd00::/8"}, {"dst":"2001:db8::/32"}])",
                                  IpFamily::v6, error);
    REQUIRE(v6);
    CHECK(texts(auto_nets(*v6)) == std::vector<std::string>{"fd00::/8", "2001:db8::/32"});
}
