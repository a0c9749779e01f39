// SPDX-License-Identifier: MIT
// The server's nameservers and routes: the commands, and parsers of their
// output.
#include "vpn/server_info.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <memory>

#include <nlohmann/json.hpp>

#include "ssh/command.h"
#include "ssh/session.h"
#include "util/text.h"

namespace pytun::detail {
namespace {

constexpr std::size_t k_max_nameservers = 32;
constexpr std::size_t k_max_routes = 4096;
constexpr std::size_t k_max_zone = 15; // IFNAMSIZ - 1

std::vector<std::string_view> split_lines(std::string_view text)
{
    std::vector<std::string_view> lines;
    while (!text.empty()) {
        const std::size_t end = text.find('\n');
        lines.push_back(text.substr(0, end));
        if (end == std::string_view::npos)
            break;
        text.remove_prefix(end + 1);
    }
    return lines;
}

std::vector<std::string_view> split_fields(std::string_view line)
{
    std::vector<std::string_view> fields;
    std::size_t at = 0;
    while (at < line.size()) {
        at = line.find_first_not_of(" \t\r", at);
        if (at == std::string_view::npos)
            break;
        const std::size_t end = std::min(line.find_first_of(" \t\r", at), line.size());
        fields.push_back(line.substr(at, end - at));
        at = end;
    }
    return fields;
}

/// An IP address, IPv6 with an optional %zone (an interface name).
bool is_nameserver_address(std::string_view text)
{
    const std::size_t percent = text.find('%');
    if (percent != std::string_view::npos) {
        const std::string_view zone = text.substr(percent + 1);
        if (zone.empty() || zone.size() > k_max_zone ||
            zone.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                std::string_view::npos)
            return false;
        text = text.substr(0, percent);
        auto address = IpAddress::parse(text);
        return address && address->family == IpFamily::v6;
    }
    return IpAddress::parse(text).has_value();
}

bool parse_port(std::string_view text, std::uint16_t &port)
{
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535)
        return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

/// A network rule for address/prefix (host bits cleared), if it is one of
/// `family`.
std::optional<ServerRoute> make_route(const IpAddress &address, int prefix, std::string device)
{
    if (prefix < 0 || prefix > address.max_prefix())
        return std::nullopt;
    std::string error;
    auto rule = parse_destination(address.to_string() + "/" + std::to_string(prefix), error);
    // An IPv4-mapped IPv6 network would read back as IPv4: not a route of ours.
    if (!rule || rule->kind != DestinationRule::Kind::network || rule->network.family != address.family)
        return std::nullopt;
    return ServerRoute{*rule, std::move(device)};
}

/// "default", "10.0.0.0/8" or "10.1.2.3" as `ip -j route` writes dst.
std::optional<ServerRoute> route_from_dst(std::string_view dst, IpFamily family, std::string device)
{
    if (dst == "default") {
        IpAddress zero;
        zero.family = family;
        return make_route(zero, 0, std::move(device));
    }
    const std::size_t slash = dst.find('/');
    auto address = IpAddress::parse(dst.substr(0, slash));
    if (!address || address->family != family)
        return std::nullopt;
    int prefix = address->max_prefix();
    if (slash != std::string_view::npos) {
        const std::string_view text = dst.substr(slash + 1);
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), prefix);
        if (ec != std::errc() || end != text.data() + text.size())
            return std::nullopt;
    }
    return make_route(*address, prefix, std::move(device));
}

bool parse_hex32(std::string_view text, std::uint32_t &value)
{
    if (text.size() != 8)
        return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + 8, value, 16);
    return ec == std::errc() && end == text.data() + 8;
}

/// The 4 bytes of an address /proc/net/route printed as one integer in the
/// server's byte order.
IpAddress ipv4_from_proc(std::uint32_t value, bool little_endian)
{
    IpAddress a;
    for (int i = 0; i < 4; ++i) {
        const int shift = little_endian ? 8 * i : 8 * (3 - i);
        a.bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>((value >> shift) & 0xff);
    }
    return a;
}

/// The prefix length of a contiguous mask, or -1.
int prefix_of(const IpAddress &mask)
{
    std::uint32_t bits = 0;
    for (int i = 0; i < 4; ++i)
        bits = (bits << 8) | mask.bytes[static_cast<std::size_t>(i)];
    const int ones = std::popcount(bits);
    const std::uint32_t contiguous = ones == 0 ? 0 : ~std::uint32_t{0} << (32 - ones);
    return bits == contiguous ? ones : -1;
}

struct Excluded {
    const char *network;
    int prefix;
};
// Never captured by -N: loopback, link-local, multicast, "this network",
// broadcast.
constexpr Excluded k_excluded[] = {
    {"127.0.0.0", 8}, {"169.254.0.0", 16}, {"224.0.0.0", 4}, {"0.0.0.0", 8}, {"255.255.255.255", 32},
    {"::1", 128},     {"::", 128},         {"fe80::", 10},   {"ff00::", 8},
};

bool is_excluded(const DestinationRule &rule)
{
    for (const auto &e : k_excluded) {
        DestinationRule range;
        range.network = *IpAddress::parse(e.network);
        range.prefix_length = e.prefix;
        if (rule.network.family == range.network.family && rule.prefix_length >= e.prefix &&
            range.matches(rule.network, 0))
            return true;
    }
    return false;
}

/// Server output quoted in a message: escaped and bounded.
std::string quote(std::string_view text)
{
    return "'" + printable(text) + "'";
}

std::string command_failure(const std::string &command, const CommandResult &r)
{
    if (r.failure != CommandResult::Failure::none)
        return r.message;
    if (r.exit_status < 0)
        return "'" + command + "' failed" + (r.message.empty() ? std::string() : ": " + r.message);
    return "'" + command + "' exited with status " + std::to_string(r.exit_status) +
           (r.exit_status == 127 ? " (not found on the server)" : "");
}

} // namespace

// --- nameservers ----------------------------------------------------------

std::string Nameserver::to_string() const
{
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::vector<Nameserver> parse_resolv_conf(std::string_view text)
{
    std::vector<Nameserver> out;
    for (std::string_view line : split_lines(text)) {
        line = line.substr(0, line.find_first_of("#;"));
        const auto fields = split_fields(line);
        if (fields.size() < 2 || fields[0] != "nameserver" || !is_nameserver_address(fields[1]))
            continue;
        if (out.size() == k_max_nameservers)
            break;
        out.push_back({std::string(fields[1]), 53});
    }
    return out;
}

Nameserver choose_nameserver(const std::vector<Nameserver> &nameservers, std::uint32_t random)
{
    if (nameservers.empty())
        return {"127.0.0.1", 53};
    return nameservers[random % nameservers.size()];
}

std::optional<Nameserver> parse_nameserver(std::string_view text, std::string &error)
{
    Nameserver ns;
    std::string_view host = text;
    bool ok = true;
    if (text.starts_with("[")) {
        const std::size_t close = text.find(']');
        ok = close != std::string_view::npos;
        if (ok) {
            host = text.substr(1, close - 1);
            const std::string_view rest = text.substr(close + 1);
            ok = host.find(':') != std::string_view::npos &&
                 (rest.empty() || (rest.starts_with(":") && parse_port(rest.substr(1), ns.port)));
        }
    } else if (std::count(text.begin(), text.end(), ':') == 1) {
        const std::size_t colon = text.find(':');
        host = text.substr(0, colon);
        ok = parse_port(text.substr(colon + 1), ns.port);
    }
    if (!ok || !is_nameserver_address(host)) {
        error = quote(text) + " is not IP[:PORT] (e.g. 198.18.1.2, 198.18.1.2:5353, fd00::1, [fd00::1]:5353)";
        return std::nullopt;
    }
    ns.host = std::string(host);
    return ns;
}

// --- routes -----------------------------------------------------------------

std::optional<std::vector<ServerRoute>> parse_ip_route_json(std::string_view json, IpFamily family,
                                                           std::string &error)
{
    auto doc = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
    if (doc.is_discarded() || !doc.is_array()) {
        error = "not the JSON array 'ip -j route' prints: " + quote(json);
        return std::nullopt;
    }
    std::vector<ServerRoute> routes;
    for (const auto &entry : doc) {
        if (!entry.is_object())
            continue;
        auto dst = entry.find("dst");
        if (dst == entry.end() || !dst->is_string())
            continue;
        auto type = entry.find("type");
        if (type != entry.end() && (!type->is_string() || type->get_ref<const std::string &>() != "unicast"))
            continue; // blackhole, unreachable, prohibit, local, broadcast...
        auto dev = entry.find("dev");
        std::string device = dev != entry.end() && dev->is_string() ? printable(dev->get_ref<const std::string &>(), 32)
                                                                    : std::string();
        if (auto route = route_from_dst(dst->get_ref<const std::string &>(), family, std::move(device))) {
            if (routes.size() == k_max_routes)
                break;
            routes.push_back(std::move(*route));
        }
    }
    return routes;
}

std::optional<std::vector<ServerRoute>> parse_proc_net_route(std::string_view text, std::string &error)
{
    struct Line {
        std::string_view device;
        std::uint32_t destination, mask;
    };
    std::vector<Line> lines;
    bool header = false;
    constexpr std::uint32_t k_rtf_up = 0x0001, k_rtf_reject = 0x0200;
    for (std::string_view line : split_lines(text)) {
        const auto f = split_fields(line);
        if (f.empty())
            continue;
        if (f[0] == "Iface") {
            header = true;
            continue;
        }
        std::uint32_t destination = 0, flags = 0, mask = 0;
        if (f.size() < 8 || !parse_hex32(f[1], destination) || f[3].size() > 8 ||
            std::from_chars(f[3].data(), f[3].data() + f[3].size(), flags, 16).ec != std::errc() ||
            !parse_hex32(f[7], mask))
            continue;
        // Blackhole and prohibit routes have no device ("*").
        if (!(flags & k_rtf_up) || (flags & k_rtf_reject) || f[0] == "*")
            continue;
        lines.push_back({f[0], destination, mask});
    }
    if (!header) {
        error = "not /proc/net/route (no 'Iface' header): " + quote(text);
        return std::nullopt;
    }
    // The kernel prints each address as an integer in its own byte order:
    // little-endian unless a mask is contiguous only when read big-endian.
    bool little_endian = true;
    for (const auto &l : lines)
        if (prefix_of(ipv4_from_proc(l.mask, true)) < 0 && prefix_of(ipv4_from_proc(l.mask, false)) >= 0)
            little_endian = false;
    std::vector<ServerRoute> routes;
    for (const auto &l : lines) {
        const int prefix = prefix_of(ipv4_from_proc(l.mask, little_endian));
        if (prefix < 0 || routes.size() == k_max_routes)
            continue;
        if (auto route = make_route(ipv4_from_proc(l.destination, little_endian), prefix, printable(l.device, 32)))
            routes.push_back(std::move(*route));
    }
    return routes;
}

std::optional<std::vector<ServerRoute>> parse_proc_net_ipv6_route(std::string_view text, std::string &error)
{
    // The local table is here too: the server's own addresses (RTF_LOCAL)
    // and anycast addresses, on the interface that has them.
    constexpr std::uint32_t k_rtf_up = 0x0001, k_rtf_reject = 0x0200, k_rtf_anycast = 0x00100000,
                            k_rtf_local = 0x80000000;
    std::vector<ServerRoute> routes;
    bool any_line = false;
    for (std::string_view line : split_lines(text)) {
        const auto f = split_fields(line);
        if (f.empty())
            continue;
        std::uint32_t flags = 0;
        unsigned prefix = 0;
        if (f.size() < 10 || f[0].size() != 32 || f[1].size() != 2 || !parse_hex32(f[8], flags) ||
            std::from_chars(f[1].data(), f[1].data() + 2, prefix, 16).ec != std::errc())
            continue;
        IpAddress address;
        address.family = IpFamily::v6;
        bool hex_ok = true;
        for (std::size_t i = 0; i < 16 && hex_ok; ++i) {
            unsigned byte = 0;
            auto [end, ec] = std::from_chars(f[0].data() + 2 * i, f[0].data() + 2 * i + 2, byte, 16);
            hex_ok = ec == std::errc() && end == f[0].data() + 2 * i + 2;
            address.bytes[i] = static_cast<std::uint8_t>(byte);
        }
        if (!hex_ok)
            continue;
        any_line = true;
        if (!(flags & k_rtf_up) || (flags & (k_rtf_reject | k_rtf_anycast | k_rtf_local)) ||
            routes.size() == k_max_routes)
            continue;
        if (auto route = make_route(address, static_cast<int>(prefix), printable(f[9], 32)))
            routes.push_back(std::move(*route));
    }
    if (!any_line && !text.empty()) {
        error = "not /proc/net/ipv6_route: " + quote(text);
        return std::nullopt;
    }
    return routes;
}

std::vector<DestinationRule> auto_nets(const std::vector<ServerRoute> &routes, AutoNetsOptions options)
{
    std::vector<DestinationRule> out;
    for (const auto &route : routes) {
        const DestinationRule &rule = route.network;
        if (rule.kind != DestinationRule::Kind::network || route.device == "lo")
            continue;
        if (rule.prefix_length == 0 ? !options.include_default : is_excluded(rule))
            continue;
        if (std::find(out.begin(), out.end(), rule) == out.end())
            out.push_back(rule);
    }
    return out;
}

// --- asking the server --------------------------------------------------------

namespace {

constexpr CommandLimits k_query_limits{256 * 1024, std::chrono::milliseconds(10000)};

/// Runs `command` unless the session is gone (then `done` gets a lost result).
void run_on(const std::shared_ptr<SshSession> &session, const std::string &command,
            std::function<void(CommandResult)> done)
{
    if (session->closed()) {
        CommandResult lost;
        lost.failure = CommandResult::Failure::lost;
        lost.message = "the connection to the bastion is closed";
        asio::post(session->io(), [done = std::move(done), lost] { done(lost); });
        return;
    }
    run_command(*session, command, k_query_limits, std::move(done));
}

/// One family's routes: `ip -j` first, the /proc file if that fails.
void read_family_routes(std::shared_ptr<SshSession> session, IpFamily family,
                        std::function<void(std::optional<std::vector<ServerRoute>>, std::string error,
                                           std::string note)>
                            done)
{
    const bool v4 = family == IpFamily::v4;
    const std::string ip_command = v4 ? "ip -j -4 route show" : "ip -j -6 route show";
    const std::string proc_file = v4 ? "/proc/net/route" : "/proc/net/ipv6_route";
    run_on(session, ip_command,
           [session, family, ip_command, proc_file, done = std::move(done)](CommandResult r) mutable {
               std::string error;
               if (r.ok() && !r.truncated) {
                   if (auto routes = parse_ip_route_json(r.output, family, error)) {
                       done(std::move(routes), {}, {});
                       return;
                   }
               } else {
                   error = command_failure(ip_command, r);
               }
               if (r.failure == CommandResult::Failure::lost) {
                   done(std::nullopt, error, {});
                   return;
               }
               std::string note = error + "; reading " + proc_file + " instead";
               run_on(session, "cat " + proc_file,
                      [family, proc_file, note = std::move(note), done = std::move(done)](CommandResult r2) {
                          std::string error2;
                          if (!r2.ok()) {
                              done(std::nullopt, command_failure("cat " + proc_file, r2), note);
                              return;
                          }
                          auto routes = family == IpFamily::v4 ? parse_proc_net_route(r2.output, error2)
                                                               : parse_proc_net_ipv6_route(r2.output, error2);
                          done(std::move(routes), error2, note);
                      });
           });
}

} // namespace

void read_server_nameservers(SshSession &session, std::function<void(ServerNameservers)> done)
{
    run_on(session.shared_from_this(), "cat /etc/resolv.conf", [done = std::move(done)](CommandResult r) {
        ServerNameservers out;
        if (!r.ok())
            out.error = "cannot read the server's /etc/resolv.conf: " + command_failure("cat /etc/resolv.conf", r);
        else
            out.nameservers = parse_resolv_conf(r.output);
        done(std::move(out));
    });
}

void read_server_routes(SshSession &session, std::function<void(ServerRoutes)> done)
{
    auto session_ptr = session.shared_from_this();
    auto out = std::make_shared<ServerRoutes>();
    read_family_routes(
        session_ptr, IpFamily::v4,
        [session_ptr, out, done = std::move(done)](std::optional<std::vector<ServerRoute>> v4, std::string error,
                                                   std::string note) mutable {
            if (!note.empty())
                out->notes.push_back(std::move(note));
            if (!v4) {
                out->error = "cannot read the server's IPv4 routes: " + error;
                done(std::move(*out));
                return;
            }
            out->routes = std::move(*v4);
            read_family_routes(session_ptr, IpFamily::v6,
                               [out, done = std::move(done)](std::optional<std::vector<ServerRoute>> v6,
                                                             std::string error6, std::string note6) {
                                   if (!note6.empty())
                                       out->notes.push_back(std::move(note6));
                                   if (v6)
                                       out->routes.insert(out->routes.end(), v6->begin(), v6->end());
                                   else
                                       out->notes.push_back("no IPv6 routes: " + error6);
                                   done(std::move(*out));
                               });
        });
}

} // namespace pytun::detail
