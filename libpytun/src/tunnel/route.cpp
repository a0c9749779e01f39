// SPDX-License-Identifier: MIT
// Proxy URLs, jump hosts and no_proxy lists as people write them.
#include <pytun/route.h>
#include <pytun/tunnel.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "forward/destination.h"
#include "util/text.h"

namespace pytun {
namespace {

using detail::DestinationRule;
using detail::IpAddress;

std::string lower(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

std::string_view trim_blanks(std::string_view s)
{
    const auto first = s.find_first_not_of(" \t");
    if (first == std::string_view::npos)
        return {};
    return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::string endpoint(const std::string &host, std::uint16_t port)
{
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// A DNS name (letters, digits, '-', '_', '.') or an IP literal.
bool valid_host(std::string_view host)
{
    if (host.empty() || host.size() > 253)
        return false;
    if (IpAddress::parse(host))
        return true;
    return std::all_of(host.begin(), host.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '_' || c == '.';
    });
}

std::optional<std::uint16_t> parse_port(std::string_view text)
{
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535)
        return std::nullopt;
    return static_cast<std::uint16_t>(value);
}

// HOST[:PORT] with an IPv6 address in brackets, or a bare IPv6 address.
// `what` names the part in messages ("the proxy's host"). The text itself is
// quoted only when `quote` says it is no secret.
bool parse_host_port(std::string_view text, std::string &host, std::optional<std::uint16_t> &port,
                     const std::string &what, bool quote, std::string &error)
{
    const std::string shown = quote ? " '" + detail::printable(text) + "'" : std::string();
    std::string_view port_text;
    bool has_port = false;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos) {
            error = what + shown + " has '[' without ']'";
            return false;
        }
        host = std::string(text.substr(1, close - 1));
        const auto rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') {
                error = what + shown + " has text after ']' that is not ':PORT'";
                return false;
            }
            port_text = rest.substr(1);
            has_port = true;
        }
        if (!IpAddress::parse(host)) {
            error = what + shown + " has brackets around something that is not an IPv6 address";
            return false;
        }
    } else if (std::count(text.begin(), text.end(), ':') > 1) {
        host = std::string(text); // a bare IPv6 address: no port without brackets
    } else {
        const auto colon = text.find(':');
        host = std::string(text.substr(0, colon));
        if (colon != std::string_view::npos) {
            port_text = text.substr(colon + 1);
            has_port = true;
        }
    }
    if (host.empty()) {
        error = what + " is missing";
        return false;
    }
    if (!valid_host(host)) {
        error = what + shown + " is not a host name or IP address";
        return false;
    }
    port.reset();
    if (has_port) {
        port = parse_port(port_text);
        if (!port) {
            error = "the port of " + what + (quote ? " '" + detail::printable(port_text) + "'" : std::string()) +
                    " is not a number from 1 to 65535";
            return false;
        }
    }
    return true;
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

std::optional<std::string> percent_decode(std::string_view text)
{
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        const bool complete = i + 2 < text.size();
        const int high = complete ? hex_value(text[i + 1]) : -1;
        const int low = complete ? hex_value(text[i + 2]) : -1;
        if (high < 0 || low < 0)
            return std::nullopt;
        out += static_cast<char>(high * 16 + low);
        i += 2;
    }
    return out;
}

std::string percent_encode(std::string_view text)
{
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : text) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

} // namespace

std::string describe(const ProxyOptions &proxy)
{
    if (proxy.kind == ProxyOptions::Kind::none)
        return "none";
    std::string out = proxy.kind == ProxyOptions::Kind::http ? "http://" : "socks5://";
    if (!proxy.username.empty())
        out += percent_encode(proxy.username) + "@";
    return out + endpoint(proxy.host, proxy.port);
}

std::string describe(const JumpHost &jump)
{
    return (jump.username.empty() ? std::string() : jump.username + "@") + endpoint(jump.host, jump.port);
}

std::string describe_route(const TunnelOptions &options)
{
    const std::string proxy =
        options.proxy.kind == ProxyOptions::Kind::none ? std::string() : "through the proxy " + describe(options.proxy);
    if (options.jump.host.empty())
        return proxy;
    JumpHost shown = options.jump;
    if (shown.username.empty())
        shown.username = options.username;
    return "through the jump host " + describe(shown) + (proxy.empty() ? "" : " (reached " + proxy + ")");
}

std::optional<ProxyOptions> parse_proxy(std::string_view url, std::string &error)
{
    error.clear();
    url = trim_blanks(url);
    ProxyOptions proxy;
    if (lower(url) == "none")
        return proxy;
    const auto fail = [&](std::string message) {
        error = std::move(message);
        return std::nullopt;
    };
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos)
        return fail("not a proxy URL (the value is not shown: it may hold a password): write "
                    "http://HOST:PORT (HTTP CONNECT), socks5://HOST:PORT, or none");
    const std::string scheme = lower(url.substr(0, scheme_end));
    if (scheme == "http") {
        proxy.kind = ProxyOptions::Kind::http;
        proxy.port = 80;
    } else if (scheme == "socks5" || scheme == "socks5h") {
        proxy.kind = ProxyOptions::Kind::socks5;
        proxy.port = 1080;
    } else if (scheme == "https") {
        return fail("https:// proxies (TLS to the proxy) are not supported: write http://HOST:PORT for a proxy "
                    "that takes CONNECT in plain HTTP (the SSH connection inside is encrypted anyway)");
    } else if (scheme == "socks4" || scheme == "socks4a") {
        return fail("SOCKS4 proxies are not supported: write socks5://HOST:PORT");
    } else {
        return fail("unknown proxy scheme '" + detail::printable(scheme, 16) +
                    "': write http://HOST:PORT (HTTP CONNECT) or socks5://HOST:PORT");
    }
    std::string_view rest = url.substr(scheme_end + 3);
    if (!rest.empty() && rest.back() == '/')
        rest.remove_suffix(1);
    // Everything up to the last '@' is the user name and password, so that
    // an unencoded '@', ':' or '/' in a password does not cut it short.
    const auto at = rest.rfind('@');
    std::string_view authority = at == std::string_view::npos ? rest : rest.substr(at + 1);
    if (authority.find_first_of("/?#") != std::string_view::npos)
        return fail("a proxy URL has no path: write " + scheme + "://HOST:PORT");
    if (at != std::string_view::npos) {
        const std::string_view userinfo = rest.substr(0, at);
        const auto colon = userinfo.find(':');
        auto user = percent_decode(userinfo.substr(0, colon));
        auto password = colon == std::string_view::npos ? std::optional<std::string>(std::string())
                                                        : percent_decode(userinfo.substr(colon + 1));
        if (!user || !password)
            return fail("the proxy's user name or password has a '%' not followed by two hex digits: write a "
                        "'%' in them as %25");
        if (user->empty())
            return fail("the proxy URL has an '@' but no user name: write " + scheme +
                        "://USER:PASSWORD@HOST:PORT, or leave out the '@'");
        if (proxy.kind == ProxyOptions::Kind::socks5 &&
            (user->size() > 255 || password->empty() || password->size() > 255))
            return fail("a SOCKS5 proxy's user name and password must each be 1 to 255 bytes (RFC 1929)");
        proxy.username = std::move(*user);
        proxy.password = std::move(*password);
    }
    std::optional<std::uint16_t> port;
    // Nothing of it is quoted: without an '@' it may be a user name and
    // password mistaken for host and port.
    if (!parse_host_port(authority, proxy.host, port, "the proxy's host", false, error))
        return std::nullopt;
    if (port)
        proxy.port = *port;
    return proxy;
}

std::optional<JumpHost> parse_jump(std::string_view text, std::string &error)
{
    error.clear();
    text = trim_blanks(text);
    const std::string quoted = "'" + detail::printable(text) + "'";
    if (text.find(',') != std::string_view::npos) {
        error = quoted + ": one jump host only (pytun does not chain them): write [USER@]HOST[:PORT]";
        return std::nullopt;
    }
    JumpHost jump;
    std::string_view host_port = text;
    if (const auto at = text.rfind('@'); at != std::string_view::npos) {
        jump.username = std::string(text.substr(0, at));
        host_port = text.substr(at + 1);
        const bool clean = std::all_of(jump.username.begin(), jump.username.end(),
                                       [](unsigned char c) { return c > ' ' && c != 0x7f; });
        if (jump.username.empty() || !clean) {
            error = quoted + ": the user name before '@' is empty or has blanks or control characters (write "
                             "[USER@]HOST[:PORT])";
            return std::nullopt;
        }
    }
    std::optional<std::uint16_t> port;
    if (!parse_host_port(host_port, jump.host, port, "the jump host", true, error)) {
        error = quoted + ": " + error + " (write [USER@]HOST[:PORT])";
        return std::nullopt;
    }
    if (port)
        jump.port = *port;
    return jump;
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host, std::uint16_t port)
{
    std::string name = lower(host);
    if (name.size() > 2 && name.front() == '[' && name.back() == ']')
        name = name.substr(1, name.size() - 2);
    while (!name.empty() && name.back() == '.')
        name.pop_back();
    const auto address = IpAddress::parse(name);
    while (!no_proxy.empty()) {
        const auto comma = no_proxy.find(',');
        std::string_view entry = trim_blanks(no_proxy.substr(0, comma));
        no_proxy = comma == std::string_view::npos ? std::string_view{} : no_proxy.substr(comma + 1);
        if (entry == "*")
            return true;
        if (entry.starts_with("*."))
            entry.remove_prefix(2);
        else if (entry.starts_with("."))
            entry.remove_prefix(1);
        std::string ignored;
        const auto rule = detail::parse_destination(entry, ignored);
        if (!rule) // as curl: an entry that is not a host, address or block is skipped
            continue;
        if (rule->kind == DestinationRule::Kind::network) {
            if (address && rule->matches(*address, port))
                return true;
            continue;
        }
        if (address)
            continue;
        // The name itself, and (as a wildcard) every name below it.
        DestinationRule below = *rule;
        below.kind = DestinationRule::Kind::wildcard;
        if (rule->matches_name(name, port) || below.matches_name(name, port))
            return true;
    }
    return false;
}

} // namespace pytun
