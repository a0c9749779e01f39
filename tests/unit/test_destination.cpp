// SPDX-License-Identifier: MIT
// Unit tests of destination rules (forward/destination.h): every form of the
// syntax, the error for each bad part, matching edge cases, name resolution.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "forward/destination.h"

using pytun::detail::DestinationRule;
using pytun::detail::DestinationSet;
using pytun::detail::IpAddress;
using pytun::detail::IpFamily;
using pytun::detail::PortRange;
using Kind = DestinationRule::Kind;

namespace {

DestinationRule parse_ok(const std::string &text)
{
    std::string error;
    auto rule = pytun::detail::parse_destination(text, error);
    INFO(text, " -> ", error);
    REQUIRE(rule);
    CHECK(error.empty());
    // The canonical text parses back to the same rule.
    std::string again_error;
    auto again = pytun::detail::parse_destination(rule->to_string(), again_error);
    INFO("canonical: ", rule->to_string(), " -> ", again_error);
    REQUIRE(again);
    CHECK(*again == *rule);
    return *rule;
}

std::string parse_error(const std::string &text)
{
    std::string error;
    auto rule = pytun::detail::parse_destination(text, error);
    INFO(text, " parsed as ", rule ? rule->to_string() : "");
    CHECK_FALSE(rule);
    CHECK_FALSE(error.empty());
    return error;
}

IpAddress ip(const std::string &text)
{
    auto address = IpAddress::parse(text);
    INFO(text);
    REQUIRE(address);
    return *address;
}

DestinationSet set_of(std::initializer_list<const char *> texts)
{
    DestinationSet set;
    for (const char *text : texts) {
        std::string error;
        INFO(text);
        REQUIRE(set.add(text, error));
    }
    return set;
}

} // namespace

TEST_CASE("addresses: IPv4, IPv6, IPv4-mapped IPv6 read as IPv4, malformed refused")
{
    const auto v4 = ip("10.1.2.3");
    CHECK(v4.family == IpFamily::v4);
    CHECK(v4.bytes[0] == 10);
    CHECK(v4.bytes[3] == 3);
    CHECK(v4.to_string() == "10.1.2.3");

    const auto v6 = ip("FD00:0:0::1");
    CHECK(v6.family == IpFamily::v6);
    CHECK(v6.to_string() == "fd00::1");

    const auto mapped = ip("::ffff:10.1.2.3");
    CHECK(mapped == v4);

    for (const char *bad : {"", "10.1.2", "10.1.2.256", "010.1.2.3", "10.1.2.3 ", "fd00::1%eth0", "fd00:::1",
                            "[fd00::1]", "host.example", "1.2.3.4.5"}) {
        INFO(bad);
        CHECK_FALSE(IpAddress::parse(bad));
    }
}

TEST_CASE("rules: IPv4 networks, plain addresses, ports and port ranges")
{
    auto rule = parse_ok("10.0.0.0/8");
    CHECK(rule.kind == Kind::network);
    CHECK(rule.network == ip("10.0.0.0"));
    CHECK(rule.prefix_length == 8);
    CHECK(rule.ports.any());
    CHECK(rule.to_string() == "10.0.0.0/8");

    rule = parse_ok("10.1.2.3");
    CHECK(rule.network == ip("10.1.2.3"));
    CHECK(rule.prefix_length == 32);

    // Host bits are cleared, as iptables and nft do with such a rule.
    rule = parse_ok("10.1.2.3/8");
    CHECK(rule.network == ip("10.0.0.0"));

    rule = parse_ok("10.0.0.0/8:389");
    CHECK(rule.ports == PortRange{389, 389});
    CHECK(rule.to_string() == "10.0.0.0/8:389");

    rule = parse_ok("192.168.1.7:8000-8080");
    CHECK(rule.prefix_length == 32);
    CHECK(rule.ports == PortRange{8000, 8080});
    CHECK(rule.to_string() == "192.168.1.7/32:8000-8080");

    rule = parse_ok("10.0.0.0/8:1-65535");
    CHECK_FALSE(rule.ports.any());

    rule = parse_ok("0/0");
    CHECK(rule.network == ip("0.0.0.0"));
    CHECK(rule.prefix_length == 0);
    CHECK(rule.to_string() == "0.0.0.0/0");
    CHECK(parse_ok("0.0.0.0/0") == rule);
    CHECK(parse_ok("0/0:443").ports == PortRange{443, 443});
}

TEST_CASE("rules: IPv6 bare, in brackets with ports, ::/0, IPv4-mapped")
{
    auto rule = parse_ok("fd00::/64");
    CHECK(rule.network.family == IpFamily::v6);
    CHECK(rule.prefix_length == 64);
    CHECK(rule.to_string() == "fd00::/64");

    rule = parse_ok("fd00::1");
    CHECK(rule.prefix_length == 128);

    rule = parse_ok("[fd00::/64]:80-90");
    CHECK(rule.network == ip("fd00::"));
    CHECK(rule.prefix_length == 64);
    CHECK(rule.ports == PortRange{80, 90});
    CHECK(rule.to_string() == "[fd00::/64]:80-90");

    rule = parse_ok("[fd00::1]:443");
    CHECK(rule.prefix_length == 128);
    CHECK(rule.ports == PortRange{443, 443});
    CHECK(parse_ok("[fd00::1/128]") == parse_ok("fd00::1"));

    rule = parse_ok("::/0");
    CHECK(rule.network.family == IpFamily::v6);
    CHECK(rule.prefix_length == 0);

    rule = parse_ok("fd00:1:2:3:4:5:6:7/33");
    CHECK(rule.network == ip("fd00:1::"));

    // Mapped addresses are IPv4 traffic: the rule becomes an IPv4 rule.
    rule = parse_ok("::ffff:10.0.0.0/104");
    CHECK(rule.network == ip("10.0.0.0"));
    CHECK(rule.prefix_length == 8);
    rule = parse_ok("[::ffff:10.1.2.3]:22");
    CHECK(rule.network == ip("10.1.2.3"));
    CHECK(rule.prefix_length == 32);
}

TEST_CASE("rules: host names and wildcards, with ports and masks")
{
    auto rule = parse_ok("LDAP.Corp.Example.");
    CHECK(rule.kind == Kind::name);
    CHECK(rule.name == "ldap.corp.example");
    CHECK(rule.prefix_length == -1);
    CHECK(rule.ports.any());

    rule = parse_ok("ldap.corp.example:389");
    CHECK(rule.ports == PortRange{389, 389});
    CHECK(rule.to_string() == "ldap.corp.example:389");

    rule = parse_ok("db_01.corp-2.example/24:5432-5433");
    CHECK(rule.name == "db_01.corp-2.example");
    CHECK(rule.prefix_length == 24);
    CHECK(rule.ports == PortRange{5432, 5433});

    rule = parse_ok("localhost");
    CHECK(rule.name == "localhost");

    rule = parse_ok("*.Corp.Example:1-1024");
    CHECK(rule.kind == Kind::wildcard);
    CHECK(rule.name == "corp.example");
    CHECK(rule.ports == PortRange{1, 1024});
    CHECK(rule.to_string() == "*.corp.example:1-1024");

    const std::string label63(63, 'a');
    CHECK(parse_ok(label63 + ".example").name == label63 + ".example");
}

TEST_CASE("rules: each bad part gets a message that quotes the rule and names the part")
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"10.0.0.0/33", "mask must be 0-32"},
        {"10.0.0.0/-1", "mask must be 0-32"},
        {"10.0.0.0/", "mask must be 0-32"},
        {"fd00::/129", "mask must be 0-128"},
        {"[fd00::/x]:80", "mask must be 0-128"},
        {"10.0.0.0/8:0", "port '0' must be 1-65535"},
        {"10.0.0.0/8:65536", "port '65536' must be 1-65535"},
        {"10.0.0.0/8:http", "port 'http' must be 1-65535"},
        {"10.0.0.0/8:80-", "port '' must be 1-65535"},
        {"10.0.0.0/8:80-90-100", "port '90-100' must be 1-65535"},
        {"10.0.0.0/8:90-80", "port range 90-80 is reversed (write 80-90)"},
        {"10.0.0.0/8:", "missing port after ':' (PORT or PORT-PORT, 1-65535)"},
        {"10/8", "'10' is not a valid IPv4 address (write all four parts, e.g. 10.0.0.0/8)"},
        {"0", "'0' is not a valid IPv4 address (write all four parts, e.g. 10.0.0.0/8)"},
        {"10.0.0.256", "'10.0.0.256' is not a valid IPv4 address (write all four parts, e.g. 10.0.0.0/8)"},
        {"fd00::g/64", "'fd00::g' is not a valid IPv6 address"},
        {"fd00::1%eth0", "'fd00::1%eth0' is not a valid IPv6 address"},
        {"[fd00::1", "missing ']' after the IPv6 address"},
        {"[fd00::1]80", "expected ':PORT' after ']' (a mask goes inside: [fd00::/64]:80)"},
        {"[fd00::]/64:80", "expected ':PORT' after ']' (a mask goes inside: [fd00::/64]:80)"},
        {"[10.0.0.1]:80", "brackets are only for IPv6 addresses (write 10.0.0.1:PORT)"},
        {"[]:80", "missing address or host name"},
        {":80", "missing address or host name"},
        {"::ffff:10.0.0.0/80", "an IPv4-mapped address needs a mask of 96-128"},
        {"*.corp.example/24", "a wildcard name takes no mask"},
        {"ldap.*.example", "'*' may only stand for the first label ('*.corp.example')"},
        {"*", "'*' may only stand for the first label ('*.corp.example')"},
        {"*.", "a host name must be 1-253 characters"},
        {"a..example", "empty label in host name 'a..example'"},
        {".example", "empty label in host name '.example'"},
        {"ldap!.example", "'ldap!.example' is not an IP address or a host name (letters, digits, '-', '_', '.')"},
        {"ldap.example/129", "mask must be 0-128"},
        {"10.0.0.0/8 ", "unexpected character ' '"},
        {"host:80:90", "'host:80:90' is not a valid IPv6 address"},
    };
    for (const auto &[text, message] : cases)
        CHECK(parse_error(text) == "'" + text + "': " + message);

    CHECK(parse_error(std::string(64, 'a') + ".example").find("longer than 63 characters") != std::string::npos);
    std::string long_name;
    for (int i = 0; i < 50; ++i)
        long_name += "abcd.";
    long_name += "example"; // 257 characters
    CHECK(parse_error(long_name).ends_with("a host name must be 1-253 characters"));
    CHECK(parse_error("") == "empty destination (expected IP/MASK[:PORT[-PORT]], a host name or *.domain)");
    // Control bytes are escaped in the message, never copied into a log line.
    CHECK(parse_error(std::string("ldap\n.example")) == "'ldap\\n.example': unexpected character '\\n'");
}

TEST_CASE("matching: prefixes, port ranges, /0 and families")
{
    const auto rule = parse_ok("10.0.0.0/9:8000-8080");
    CHECK(rule.matches(ip("10.0.0.0"), 8000));
    CHECK(rule.matches(ip("10.127.255.255"), 8080));
    CHECK_FALSE(rule.matches(ip("10.128.0.0"), 8000));
    CHECK_FALSE(rule.matches(ip("9.255.255.255"), 8000));
    CHECK_FALSE(rule.matches(ip("10.0.0.1"), 7999));
    CHECK_FALSE(rule.matches(ip("10.0.0.1"), 8081));
    CHECK_FALSE(rule.matches_name("10.0.0.1", 8000)); // address rules never match names

    const auto all4 = parse_ok("0/0");
    CHECK(all4.matches(ip("255.255.255.255"), 0));
    CHECK(all4.matches(ip("1.2.3.4"), 65535));
    CHECK_FALSE(all4.matches(ip("fd00::1"), 80));
    const auto all6 = parse_ok("::/0");
    CHECK(all6.matches(ip("fd00::1"), 80));
    CHECK(all6.matches(ip("::1"), 80));
    CHECK_FALSE(all6.matches(ip("10.0.0.1"), 80));
    // An IPv4-mapped destination is IPv4: 0/0 covers it, ::/0 does not.
    CHECK(all4.matches(ip("::ffff:10.0.0.1"), 80));
    CHECK_FALSE(all6.matches(ip("::ffff:10.0.0.1"), 80));

    const auto v6 = parse_ok("[fd00:0:0:1::/127]:22");
    CHECK(v6.matches(ip("fd00:0:0:1::"), 22));
    CHECK(v6.matches(ip("fd00:0:0:1::1"), 22));
    CHECK_FALSE(v6.matches(ip("fd00:0:0:1::2"), 22));
    CHECK_FALSE(v6.matches(ip("fd00:0:0:1::1"), 23));

    // An IPv4 address filled in by a caller with junk after its four bytes.
    auto filled = ip("10.0.0.1");
    filled.bytes[4] = 0xff;
    filled.bytes[15] = 0x01;
    CHECK(rule.matches(filled, 8000));

    const auto host = parse_ok("192.168.1.7");
    CHECK(host.matches(ip("192.168.1.7"), 1));
    CHECK_FALSE(host.matches(ip("192.168.1.6"), 1));
    CHECK_FALSE(host.matches(ip("192.168.1.8"), 1));
}

TEST_CASE("matching: names exactly (any case), wildcards below their suffix only")
{
    const auto name = parse_ok("ldap.corp.example:389");
    CHECK(name.matches_name("ldap.corp.example", 389));
    CHECK(name.matches_name("LDAP.Corp.EXAMPLE.", 389));
    CHECK_FALSE(name.matches_name("ldap.corp.example", 636));
    CHECK_FALSE(name.matches_name("ldap.corp.example.evil", 389));
    CHECK_FALSE(name.matches_name("x.ldap.corp.example", 389));
    CHECK_FALSE(name.matches(ip("10.0.0.1"), 389));

    const auto wildcard = parse_ok("*.corp.example");
    CHECK(wildcard.matches_name("a.corp.example", 1));
    CHECK(wildcard.matches_name("a.b.CORP.example.", 65535));
    CHECK_FALSE(wildcard.matches_name("corp.example", 1));
    CHECK_FALSE(wildcard.matches_name("xcorp.example", 1));
    CHECK_FALSE(wildcard.matches_name(".corp.example", 1));
    CHECK_FALSE(wildcard.matches_name("a.corp.example.evil", 1));
    CHECK_FALSE(wildcard.matches_name("", 1));
}

TEST_CASE("a rule set: IP literals against address rules, names against name rules")
{
    const auto set = set_of({"10.0.0.0/8:389", "[fd00::/64]:80-90", "*.corp.example:443", "smtp.example:25"});
    CHECK(set.matches("10.1.2.3", 389));
    CHECK(set.matches("::ffff:10.1.2.3", 389));
    CHECK_FALSE(set.matches("10.1.2.3", 390));
    CHECK(set.matches("fd00::5", 85));
    CHECK_FALSE(set.matches("fd00:1::5", 85));
    CHECK(set.matches("web.corp.example", 443));
    CHECK_FALSE(set.matches("web.corp.example", 80));
    CHECK(set.matches("SMTP.example", 25));
    CHECK_FALSE(set.matches("smtp.example.", 26));
    // A name rule does not let an address through, nor an address rule a name.
    CHECK_FALSE(set.matches("192.0.2.1", 25));
    CHECK_FALSE(set.matches("ldap.example", 389));
    CHECK(set.matches(ip("10.200.0.1"), 389));

    DestinationSet empty;
    CHECK(empty.empty());
    CHECK_FALSE(empty.matches("10.0.0.1", 80));
    CHECK_FALSE(empty.matches(ip("10.0.0.1"), 80));

    std::string error;
    DestinationSet bad;
    CHECK_FALSE(bad.add("10.0.0.0/40", error));
    CHECK(error == "'10.0.0.0/40': mask must be 0-32");
    CHECK(bad.empty());
}

TEST_CASE("resolving a name rule: one address rule per address, sshuttle's mask rules")
{
    std::string error;
    const std::vector<IpAddress> addresses = {ip("10.0.0.5"), ip("fd00::5"), ip("10.0.0.5")};
    auto rules = pytun::detail::resolve_name_rule(parse_ok("ldap.corp.example:389"), addresses, error);
    REQUIRE(rules);
    REQUIRE(rules->size() == 2); // the duplicate is dropped
    CHECK((*rules)[0].to_string() == "10.0.0.5/32:389");
    CHECK((*rules)[1].to_string() == "[fd00::5/128]:389");

    const std::vector<IpAddress> two_in_one_net = {ip("10.0.0.5"), ip("10.0.0.77"), ip("10.0.1.1")};
    rules = pytun::detail::resolve_name_rule(parse_ok("db.example/24"), two_in_one_net, error);
    REQUIRE(rules);
    REQUIRE(rules->size() == 2);
    CHECK((*rules)[0].to_string() == "10.0.0.0/24");
    CHECK((*rules)[1].to_string() == "10.0.1.0/24");
    DestinationSet set;
    for (auto &rule : *rules)
        set.add(rule);
    CHECK(set.matches(ip("10.0.1.200"), 5432));

    CHECK_FALSE(pytun::detail::resolve_name_rule(parse_ok("db.example/24"), addresses, error));
    CHECK(error == "'db.example/24': the name has IPv4 and IPv6 addresses, so a mask cannot apply to both; give "
                   "the addresses with their masks instead");
    const std::vector<IpAddress> v4 = {ip("10.0.0.5")};
    CHECK_FALSE(pytun::detail::resolve_name_rule(parse_ok("db.example/40"), v4, error));
    CHECK(error == "'db.example/40': mask must be 0-32 for 10.0.0.5");
    CHECK_FALSE(pytun::detail::resolve_name_rule(parse_ok("db.example"), {}, error));
    CHECK(error == "'db.example': the name has no addresses");
    CHECK_FALSE(pytun::detail::resolve_name_rule(parse_ok("*.example"), v4, error));
    CHECK(error == "'*.example': only a host name rule can be resolved to addresses");
    CHECK_FALSE(pytun::detail::resolve_name_rule(parse_ok("10.0.0.0/8"), v4, error));
}

TEST_CASE("rule files: several rules a line, comments, every bad rule with its line")
{
    DestinationSet set;
    std::vector<std::string> errors;
    CHECK(
        set.add_lines("# LAN\n10.0.0.0/8:389  [fd00::/64]:443\r\n\n\t*.corp.example # intranet\n", "lan.txt", errors));
    CHECK(errors.empty());
    REQUIRE(set.rules().size() == 3);
    CHECK(set.rules()[2].to_string() == "*.corp.example");
    CHECK(set.matches("fd00::1", 443));

    CHECK_FALSE(set.add_lines("10.0.0.0/33\n\nsmtp.example:25 10.0.0.0/8:0\n10/8", "/etc/x", errors));
    CHECK(errors == std::vector<std::string>{"/etc/x:1: '10.0.0.0/33': mask must be 0-32",
                                             "/etc/x:3: '10.0.0.0/8:0': port '0' must be 1-65535",
                                             "/etc/x:4: '10/8': '10' is not a valid IPv4 address (write all four "
                                             "parts, e.g. 10.0.0.0/8)"});
    CHECK(set.rules().size() == 4); // the good rule among them is added
    CHECK(set.add_lines("", "empty", errors));
}
