// SPDX-License-Identifier: MIT
// Forward specs as people write them (ssh's -L/-D/-R forms) and as pytun
// shows them.
#include <pytun/tunnel.h>

#include <charconv>

#include "forward/destination.h"

namespace pytun {
namespace {

std::string endpoint(const std::string &host, std::uint16_t port)
{
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string bind_text(const std::string &bind, std::uint16_t port)
{
    return endpoint(bind.empty() ? std::string("localhost") : bind, port);
}

// Splits at ':' outside brackets; "[fd00::1]" loses its brackets. Empty
// when brackets do not match.
std::vector<std::string> fields(std::string_view text, std::string &error)
{
    std::vector<std::string> out;
    std::string current;
    bool bracket = false, bracketed = false;
    for (char c : text) {
        if (c == '[' && !bracket && current.empty() && !bracketed) {
            bracket = bracketed = true;
        } else if (c == ']' && bracket) {
            bracket = false;
        } else if (c == ':' && !bracket) {
            out.push_back(std::move(current));
            current.clear();
            bracketed = false;
        } else if (bracketed && !bracket) {
            error = "'" + std::string(text) + "': unexpected text after ']'";
            return {};
        } else {
            current += c;
        }
    }
    if (bracket) {
        error = "'" + std::string(text) + "': '[' without ']'";
        return {};
    }
    out.push_back(std::move(current));
    return out;
}

bool parse_port(std::string_view text, std::uint16_t &port, bool zero_ok, const std::string &what, std::string &error)
{
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > 65535 ||
        (value == 0 && !zero_ok)) {
        error = what + " '" + std::string(text) + "' is not a port (1-65535" + (zero_ok ? ", or 0" : "") + ")";
        return false;
    }
    port = static_cast<std::uint16_t>(value);
    return true;
}

bool valid_host(const std::string &host)
{
    if (host.empty() || host.size() > 255)
        return false;
    for (unsigned char c : host)
        if (c <= ' ' || c == 0x7F)
            return false;
    return true;
}

} // namespace

std::string describe(const ForwardSpec &forward)
{
    struct Text {
        std::string operator()(const RemoteForward &f) const
        {
            return "R " + bind_text(f.bind_address, f.listen_port) + " -> " + endpoint(f.target_host, f.target_port);
        }
        std::string operator()(const LocalForward &f) const
        {
            return "L " + bind_text(f.bind_address, f.listen_port) + " -> " + endpoint(f.target_host, f.target_port);
        }
        std::string operator()(const DynamicForward &f) const
        {
            return "D " + bind_text(f.bind_address, f.listen_port) + " (SOCKS)";
        }
        std::string operator()(const RemoteDynamicForward &f) const
        {
            return "R " + bind_text(f.bind_address, f.listen_port) + " (SOCKS)";
        }
        std::string operator()(const TransparentForward &f) const
        {
            std::string out = "VPN";
            for (const auto &subnet : f.subnets)
                out += " " + subnet;
            if (f.auto_nets)
                out += " -N";
            for (const auto &excluded : f.exclude)
                out += " -x " + excluded;
            if (f.dns || !f.nameservers.empty())
                out += " (DNS)";
            return out;
        }
    };
    return std::visit(Text{}, forward);
}

std::vector<Bastion> all_bastions(const TunnelOptions &options)
{
    std::vector<Bastion> out{Bastion{options.server_host, options.server_port}};
    out.insert(out.end(), options.failover.begin(), options.failover.end());
    return out;
}

std::string describe(const Bastion &bastion)
{
    const bool v6 = bastion.host.find(':') != std::string::npos;
    return (v6 ? "[" + bastion.host + "]" : bastion.host) + ":" + std::to_string(bastion.port);
}

std::vector<ForwardSpec> all_forwards(const TunnelOptions &options)
{
    std::vector<ForwardSpec> out;
    if (!options.remote_host.empty())
        out.push_back(RemoteForward{options.bind_address, options.listen_port, options.remote_host,
                                    options.remote_port});
    out.insert(out.end(), options.forwards.begin(), options.forwards.end());
    return out;
}

std::optional<ForwardSpec> parse_forward(char kind, std::string_view text, std::string &error)
{
    error.clear();
    const std::string quoted = "'" + std::string(text) + "'";
    auto parts = fields(text, error);
    if (!error.empty())
        return std::nullopt;
    // [BIND:]PORT[:HOST:HOSTPORT]: the bind address is there when the field
    // count says so.
    const bool with_target = parts.size() >= 3;
    const std::size_t port_index = parts.size() == 2 || parts.size() == 4 ? 1 : 0;
    const bool has_bind = port_index == 1;
    if (parts.size() > 4 || (kind == 'D' && with_target) || (kind == 'L' && !with_target)) {
        error = quoted + ": expected " +
                std::string(kind == 'D' ? "[BIND:]PORT" : kind == 'L' ? "[BIND:]PORT:HOST:HOSTPORT"
                                                                        : "[BIND:]PORT[:HOST:HOSTPORT]");
        return std::nullopt;
    }
    std::string bind = has_bind ? parts[0] : std::string();
    if (bind == "*")
        bind = "0.0.0.0"; // every interface, as ssh's '*'
    std::uint16_t port = 0;
    if (!parse_port(parts[port_index], port, true, "listen port", error)) {
        error = quoted + ": " + error;
        return std::nullopt;
    }
    std::string host;
    std::uint16_t host_port = 0;
    if (with_target) {
        host = parts[port_index + 1];
        if (!valid_host(host)) {
            error = quoted + ": '" + host + "' is not a host name or address";
            return std::nullopt;
        }
        if (!parse_port(parts[port_index + 2], host_port, false, "target port", error)) {
            error = quoted + ": " + error;
            return std::nullopt;
        }
    }
    switch (kind) {
    case 'L':
        return LocalForward{bind.empty() ? std::string("127.0.0.1") : bind, port, host, host_port};
    case 'D': {
        DynamicForward d;
        d.bind_address = bind.empty() ? std::string("127.0.0.1") : bind;
        d.listen_port = port;
        return d;
    }
    case 'R':
        if (with_target)
            return RemoteForward{bind, port, host, host_port};
        return RemoteDynamicForward{bind, port, {}};
    default:
        error = "unknown forward kind '" + std::string(1, kind) + "' (L, D or R)";
        return std::nullopt;
    }
}

bool check_destination(std::string_view rule, std::string &error)
{
    error.clear();
    return detail::parse_destination(rule, error).has_value();
}

} // namespace pytun
