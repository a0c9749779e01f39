// SPDX-License-Identifier: MIT
// Destination rules: parsing (sshuttle's syntax plus names) and matching.
#include "forward/destination.h"

#include <arpa/inet.h>

#include <algorithm>

#include "util/text.h"

namespace pytun::detail {
namespace {

constexpr std::size_t k_max_name = 253; // RFC 1035 §2.3.4, without the final dot
constexpr std::size_t k_max_label = 63;
constexpr int k_no_mask = -1;

std::string quoted(std::string_view text)
{
    return "'" + printable(text) + "'";
}

// A plain decimal number (no sign, at most five digits), at most `max`.
std::optional<unsigned> parse_number(std::string_view text, unsigned max)
{
    if (text.empty() || text.size() > 5)
        return std::nullopt;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9')
            return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > max)
        return std::nullopt;
    return value;
}

// "PORT" or "PORT-PORT". Port 0 is refused: sshuttle reads it as "every
// port", which is what leaving the port out already says.
bool parse_ports(std::string_view text, PortRange &ports, std::string &message)
{
    if (text.empty()) {
        message = "missing port after ':' (PORT or PORT-PORT, 1-65535)";
        return false;
    }
    const auto dash = text.find('-');
    const auto first_text = text.substr(0, dash);
    const auto last_text = dash == std::string_view::npos ? first_text : text.substr(dash + 1);
    const auto first = parse_number(first_text, 65535);
    const auto last = parse_number(last_text, 65535);
    for (auto [value, part] : {std::pair{first, first_text}, std::pair{last, last_text}}) {
        if (!value || *value == 0) {
            message = "port " + quoted(part) + " must be 1-65535";
            return false;
        }
    }
    if (*first > *last) {
        message = "port range " + printable(text) + " is reversed (write " + std::to_string(*last) + "-" +
                  std::to_string(*first) + ")";
        return false;
    }
    ports = {static_cast<std::uint16_t>(*first), static_cast<std::uint16_t>(*last)};
    return true;
}

bool parse_mask(std::string_view text, int max, int &mask, std::string &message)
{
    const auto value = parse_number(text, static_cast<unsigned>(max));
    if (!value) {
        message = "mask must be 0-" + std::to_string(max);
        return false;
    }
    mask = static_cast<int>(*value);
    return true;
}

void clear_host_bits(IpAddress &address, int prefix)
{
    for (std::size_t i = 0; i < address.size(); ++i) {
        const int bits = std::clamp(prefix - static_cast<int>(i) * 8, 0, 8);
        address.bytes[i] &= static_cast<std::uint8_t>(0xff00 >> bits);
    }
}

// Compares only the address's own bytes: an IPv4 address a caller filled in
// may carry anything after its first four.
bool in_prefix(const IpAddress &network, int prefix, const IpAddress &address)
{
    IpAddress masked = address;
    clear_host_bits(masked, prefix);
    return std::equal(masked.bytes.begin(), masked.bytes.begin() + masked.size(), network.bytes.begin());
}

// Host names: letters, digits, '-' and '_' (sshuttle accepts \w), labels of
// 1-63, 253 in all; stored in lower case without a trailing dot.
bool parse_name(std::string_view text, std::string &name, std::string &message)
{
    if (!text.empty() && text.back() == '.')
        text.remove_suffix(1);
    if (text.empty() || text.size() > k_max_name) {
        message = "a host name must be 1-253 characters";
        return false;
    }
    name.clear();
    std::size_t label = 0;
    for (char c : text) {
        const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
        if (lower == '.') {
            if (label == 0) {
                message = "empty label in host name " + quoted(text);
                return false;
            }
            label = 0;
        } else if ((lower >= 'a' && lower <= 'z') || (lower >= '0' && lower <= '9') || lower == '-' || lower == '_') {
            if (++label > k_max_label) {
                message = "a label of host name " + quoted(text) + " is longer than 63 characters";
                return false;
            }
        } else {
            message = quoted(text) + " is not an IP address or a host name (letters, digits, '-', '_', '.')";
            return false;
        }
        name += lower;
    }
    if (label == 0) {
        message = "empty label in host name " + quoted(text);
        return false;
    }
    return true;
}

std::string lower_host(std::string_view host)
{
    if (!host.empty() && host.back() == '.')
        host.remove_suffix(1);
    std::string out(host);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string ports_text(const PortRange &ports)
{
    if (ports.any())
        return {};
    if (ports.first == ports.last)
        return ":" + std::to_string(ports.first);
    return ":" + std::to_string(ports.first) + "-" + std::to_string(ports.last);
}

// The address part of a rule (the text before ':PORT', brackets removed).
bool parse_host_part(std::string_view host_part, bool bracketed, DestinationRule &rule, std::string &message)
{
    const auto slash = host_part.find('/');
    const auto address_text = host_part.substr(0, slash);
    const std::optional<std::string_view> mask_text =
        slash == std::string_view::npos ? std::nullopt : std::optional(host_part.substr(slash + 1));
    const bool ipv6_text = address_text.find(':') != std::string_view::npos;
    if (address_text.empty()) {
        message = "missing address or host name";
        return false;
    }

    if (auto address = IpAddress::parse(address_text)) {
        if (bracketed && !ipv6_text) {
            message = "brackets are only for IPv6 addresses (write " + printable(host_part) + ":PORT)";
            return false;
        }
        rule.kind = DestinationRule::Kind::network;
        rule.network = *address;
        // An IPv4-mapped address is written as IPv6 but parsed as IPv4: its
        // mask counts the 96 bits of the ::ffff:0:0/96 prefix too.
        const bool mapped = ipv6_text && address->family == IpFamily::v4;
        rule.prefix_length = address->max_prefix();
        if (mask_text) {
            if (!parse_mask(*mask_text, mapped ? 128 : address->max_prefix(), rule.prefix_length, message))
                return false;
            if (mapped) {
                if (rule.prefix_length < 96) {
                    message = "an IPv4-mapped address needs a mask of 96-128";
                    return false;
                }
                rule.prefix_length -= 96;
            }
        }
        clear_host_bits(rule.network, rule.prefix_length);
        return true;
    }
    // sshuttle's "0/0": everything IPv4.
    if (address_text == "0" && mask_text == "0") {
        rule.kind = DestinationRule::Kind::network;
        rule.network = IpAddress{};
        rule.prefix_length = 0;
        return true;
    }
    if (ipv6_text || bracketed) {
        message = quoted(address_text) + " is not a valid IPv6 address";
        return false;
    }
    if (address_text.find_first_not_of("0123456789.") == std::string_view::npos) {
        message = quoted(address_text) + " is not a valid IPv4 address (write all four parts, e.g. 10.0.0.0/8)";
        return false;
    }
    if (address_text.starts_with("*.")) {
        if (mask_text) {
            message = "a wildcard name takes no mask";
            return false;
        }
        rule.kind = DestinationRule::Kind::wildcard;
        rule.prefix_length = k_no_mask;
        return parse_name(address_text.substr(2), rule.name, message);
    }
    if (address_text.find('*') != std::string_view::npos) {
        message = "'*' may only stand for the first label ('*.corp.example')";
        return false;
    }
    rule.kind = DestinationRule::Kind::name;
    rule.prefix_length = k_no_mask;
    if (mask_text && !parse_mask(*mask_text, 128, rule.prefix_length, message))
        return false;
    return parse_name(address_text, rule.name, message);
}

} // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text)
{
    char buffer[64];
    if (text.empty() || text.size() >= sizeof buffer)
        return std::nullopt;
    text.copy(buffer, text.size());
    buffer[text.size()] = '\0';
    IpAddress address;
    if (text.find(':') == std::string_view::npos) {
        if (::inet_pton(AF_INET, buffer, address.bytes.data()) != 1)
            return std::nullopt;
        return address;
    }
    if (::inet_pton(AF_INET6, buffer, address.bytes.data()) != 1)
        return std::nullopt;
    address.family = IpFamily::v6;
    static constexpr std::uint8_t k_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::equal(std::begin(k_mapped_prefix), std::end(k_mapped_prefix), address.bytes.begin())) {
        IpAddress v4;
        std::copy_n(address.bytes.begin() + 12, 4, v4.bytes.begin());
        return v4;
    }
    return address;
}

std::string IpAddress::to_string() const
{
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(family == IpFamily::v4 ? AF_INET : AF_INET6, bytes.data(), text, sizeof text);
    return text;
}

bool DestinationRule::matches(const IpAddress &address, std::uint16_t port) const
{
    return kind == Kind::network && address.family == network.family && ports.contains(port) &&
           in_prefix(network, prefix_length, address);
}

bool DestinationRule::matches_name(std::string_view host, std::uint16_t port) const
{
    if (kind == Kind::network || !ports.contains(port))
        return false;
    const std::string h = lower_host(host);
    if (kind == Kind::name)
        return h == name;
    return h.size() > name.size() + 1 && h.ends_with(name) && h[h.size() - name.size() - 1] == '.';
}

std::string DestinationRule::to_string() const
{
    const std::string ports_part = ports_text(ports);
    switch (kind) {
    case Kind::network: {
        const std::string cidr = network.to_string() + "/" + std::to_string(prefix_length);
        if (network.family == IpFamily::v6 && !ports_part.empty())
            return "[" + cidr + "]" + ports_part;
        return cidr + ports_part;
    }
    case Kind::name: return name + (prefix_length == k_no_mask ? "" : "/" + std::to_string(prefix_length)) + ports_part;
    case Kind::wildcard: return "*." + name + ports_part;
    }
    return {};
}

std::optional<DestinationRule> parse_destination(std::string_view text, std::string &error)
{
    if (text.empty()) {
        error = "empty destination (expected IP/MASK[:PORT[-PORT]], a host name or *.domain)";
        return std::nullopt;
    }
    const auto fail = [&](const std::string &message) {
        error = quoted(text) + ": " + message;
        return std::nullopt;
    };
    for (unsigned char c : text)
        if (c <= ' ' || c >= 0x7f)
            return fail("unexpected character " + quoted(std::string_view(reinterpret_cast<const char *>(&c), 1)));

    std::string_view host_part;
    std::optional<std::string_view> ports_part;
    bool bracketed = false;
    if (text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos)
            return fail("missing ']' after the IPv6 address");
        host_part = text.substr(1, close - 1);
        const auto rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':')
                return fail("expected ':PORT' after ']' (a mask goes inside: [fd00::/64]:80)");
            ports_part = rest.substr(1);
        }
        bracketed = true;
    } else if (std::count(text.begin(), text.end(), ':') > 1) {
        host_part = text; // a bare IPv6 address: no port without brackets
    } else {
        const auto colon = text.find(':');
        host_part = text.substr(0, colon);
        if (colon != std::string_view::npos)
            ports_part = text.substr(colon + 1);
    }

    DestinationRule rule;
    std::string message;
    if (!parse_host_part(host_part, bracketed, rule, message))
        return fail(message);
    if (ports_part && !parse_ports(*ports_part, rule.ports, message))
        return fail(message);
    return rule;
}

std::optional<std::vector<DestinationRule>> resolve_name_rule(const DestinationRule &rule,
                                                              std::span<const IpAddress> addresses, std::string &error)
{
    const std::string name = quoted(rule.to_string());
    if (rule.kind != DestinationRule::Kind::name) {
        error = name + ": only a host name rule can be resolved to addresses";
        return std::nullopt;
    }
    if (addresses.empty()) {
        error = name + ": the name has no addresses";
        return std::nullopt;
    }
    const bool has_v4 =
        std::any_of(addresses.begin(), addresses.end(), [](const IpAddress &a) { return a.family == IpFamily::v4; });
    const bool has_v6 =
        std::any_of(addresses.begin(), addresses.end(), [](const IpAddress &a) { return a.family == IpFamily::v6; });
    if (rule.prefix_length != k_no_mask && has_v4 && has_v6) {
        error = name + ": the name has IPv4 and IPv6 addresses, so a mask cannot apply to both; "
                       "give the addresses with their masks instead";
        return std::nullopt;
    }
    std::vector<DestinationRule> rules;
    for (const IpAddress &address : addresses) {
        DestinationRule resolved;
        resolved.network = address;
        resolved.prefix_length = rule.prefix_length == k_no_mask ? address.max_prefix() : rule.prefix_length;
        if (resolved.prefix_length > address.max_prefix()) {
            error = name + ": mask must be 0-" + std::to_string(address.max_prefix()) + " for " + address.to_string();
            return std::nullopt;
        }
        clear_host_bits(resolved.network, resolved.prefix_length);
        resolved.ports = rule.ports;
        if (std::find(rules.begin(), rules.end(), resolved) == rules.end())
            rules.push_back(std::move(resolved));
    }
    return rules;
}

bool DestinationSet::add(std::string_view text, std::string &error)
{
    auto rule = parse_destination(text, error);
    if (!rule)
        return false;
    rules_.push_back(std::move(*rule));
    return true;
}

bool DestinationSet::add_lines(std::string_view text, std::string_view source, std::vector<std::string> &errors)
{
    const std::size_t errors_before = errors.size();
    int number = 0;
    while (!text.empty()) {
        const auto newline = text.find('\n');
        std::string_view line = text.substr(0, newline);
        text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
        ++number;
        line = line.substr(0, line.find('#'));
        constexpr std::string_view k_blanks = " \t\r\f\v";
        while (true) {
            const auto start = line.find_first_not_of(k_blanks);
            if (start == std::string_view::npos)
                break;
            line.remove_prefix(start);
            const auto word = line.substr(0, line.find_first_of(k_blanks));
            line.remove_prefix(word.size());
            std::string error;
            if (!add(word, error))
                errors.push_back(std::string(source) + ":" + std::to_string(number) + ": " + error);
        }
    }
    return errors.size() == errors_before;
}

bool DestinationSet::matches(const IpAddress &address, std::uint16_t port) const
{
    return std::any_of(rules_.begin(), rules_.end(),
                       [&](const DestinationRule &rule) { return rule.matches(address, port); });
}

bool DestinationSet::matches(std::string_view host, std::uint16_t port) const
{
    if (auto address = IpAddress::parse(host))
        return matches(*address, port);
    return std::any_of(rules_.begin(), rules_.end(),
                       [&](const DestinationRule &rule) { return rule.matches_name(host, port); });
}

} // namespace pytun::detail
