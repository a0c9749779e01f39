// SPDX-License-Identifier: MIT
// Destination rules: which (address or host name, port) a SOCKS allowlist,
// a reverse SOCKS forward or the VPN mode's SUBNET / -x arguments cover.
// Pure: text in, decisions out; no sockets, no resolver (a host-name rule
// becomes address rules only when the caller has resolved the name).
//
// Syntax (sshuttle's, extended with names; docs/configuration.md has the
// operator's version):
//   10.0.0.0/8   10.1.2.3   10.0.0.0/8:389   10.0.0.0/8:8000-8080   0/0
//   fd00::/64    fd00::1    [fd00::/64]:80-90   [fd00::1]:443       ::/0
//   ldap.corp.example   ldap.corp.example:389   ldap.corp.example/24
//   *.corp.example      *.corp.example:1-1024
#pragma once

#include "internal.h"

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pytun::detail {

enum class IpFamily : std::uint8_t { v4, v6 };

/// An IPv4 or IPv6 address as bytes in network order.
struct IpAddress {
    IpFamily family = IpFamily::v4;
    std::array<std::uint8_t, 16> bytes{}; ///< IPv4: the first 4 (parse() zeroes the rest; matching ignores it)

    /// Dotted IPv4 ("10.0.0.1") or IPv6 text ("fd00::1", no brackets, no zone).
    /// An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is returned as the IPv4
    /// address it carries: on the wire it is IPv4 traffic.
    PYTUN_CONNECTOR_USES static std::optional<IpAddress> parse(std::string_view text);
    std::size_t size() const { return family == IpFamily::v4 ? 4 : 16; }
    int max_prefix() const { return family == IpFamily::v4 ? 32 : 128; }
    /// "10.0.0.1" or "fd00::1" (RFC 5952 form).
    std::string to_string() const;
    bool operator==(const IpAddress &) const = default;
};

/// Inclusive port range; a rule without ports covers 0-65535.
struct PortRange {
    std::uint16_t first = 0;
    std::uint16_t last = 65535;
    bool any() const { return first == 0 && last == 65535; }
    bool contains(std::uint16_t port) const { return port >= first && port <= last; }
    bool operator==(const PortRange &) const = default;
};

/// One parsed rule. Its parts are public because the VPN mode turns network
/// rules into nftables rules.
struct DestinationRule {
    enum class Kind : std::uint8_t {
        network,  ///< `network`/`prefix_length`: an address or CIDR block
        name,     ///< `name`: exactly this host (case-insensitive)
        wildcard, ///< `name` is a suffix: any host strictly below it
    };
    Kind kind = Kind::network;
    IpAddress network;     ///< network: host bits cleared
    int prefix_length = 0; ///< network: 0-32 / 0-128; name: mask for its resolved addresses, -1 if none
    std::string name;      ///< name: lower case, no trailing dot; wildcard: "corp.example" for "*.corp.example"
    PortRange ports;

    /// An address rule covers `address`:`port` (name rules never do).
    bool matches(const IpAddress &address, std::uint16_t port) const;
    /// A name or wildcard rule covers host name `host`:`port` (any case,
    /// trailing dot ignored; network rules never do).
    bool matches_name(std::string_view host, std::uint16_t port) const;
    /// Canonical text that parses back to this rule ("10.0.0.0/8:80-90",
    /// "[fd00::/64]:443", "*.corp.example").
    std::string to_string() const;
    bool operator==(const DestinationRule &) const = default;
};

/// Parses one rule. On failure returns nothing and sets `error` to a message
/// that quotes the rule and names the bad part ("'10.0.0.0/33': mask must be 0-32").
PYTUN_CONNECTOR_USES std::optional<DestinationRule> parse_destination(std::string_view text, std::string &error);

/// The address rules a name rule stands for once the caller has resolved the
/// name to `addresses` (sshuttle's "a host name: all its addresses"): one per
/// address, with the rule's mask (else /32 or /128) and its ports. Fails
/// (nothing, `error` set) for a wildcard, for no addresses, and, as sshuttle
/// does, for a mask given to a name that has both IPv4 and IPv6 addresses.
std::optional<std::vector<DestinationRule>> resolve_name_rule(const DestinationRule &rule,
                                                              std::span<const IpAddress> addresses, std::string &error);

/// A list of rules; a destination is in the set when any rule covers it.
class DestinationSet {
public:
    /// Parses and adds one rule; false (and `error`) if it does not parse.
    bool add(std::string_view text, std::string &error);
    void add(DestinationRule rule) { rules_.push_back(std::move(rule)); }
    /// Adds the rules of a file's `text`, read as sshuttle reads -s / -X
    /// files: rules separated by white space or new lines, blank lines, '#'
    /// to the end of a line a comment. Each bad rule adds
    /// "SOURCE:LINE: message" to `errors` (the good ones are added); false
    /// when there was any.
    bool add_lines(std::string_view text, std::string_view source, std::vector<std::string> &errors);
    const std::vector<DestinationRule> &rules() const { return rules_; }
    bool empty() const { return rules_.empty(); }

    bool matches(const IpAddress &address, std::uint16_t port) const;
    /// `host` as a SOCKS request carries it: an IP literal is matched against
    /// the address rules, anything else as a host name against the name rules.
    bool matches(std::string_view host, std::uint16_t port) const;

private:
    std::vector<DestinationRule> rules_;
};

} // namespace pytun::detail
