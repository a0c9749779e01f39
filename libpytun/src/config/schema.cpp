// SPDX-License-Identifier: MIT
// Validation of the [pytun] and [tunnel] keys: every problem is reported with
// its line and what to write instead; nothing stops at the first error.
#include "config/schema.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <pytun/route.h>

#include "config/file_checks.h"
#include "forward/destination.h"
#include "util/text.h"
#include "vpn/transparent_forwarder.h"

namespace pytun::config {

namespace fs = std::filesystem;

namespace {

constexpr auto k_main_keys = std::to_array<std::string_view>({
    "tunnel_manager_id", "tunnel_dirs",   "log_level",         "log_to_console",    "log_path",
    "inspection_port",   "inspection_localhost_only",          "inspection_token",  "smtp_hostname",
    "smtp_port",         "smtp_security", "smtp_login",        "smtp_password",     "smtp_from",
    "smtp_to",           "smtp_ca_file",  "smtp_verify_tls",   "http_url",          "http_user",
    "http_password",     "signature",     "mac_address_pub_key", "grace_period_ms",   "smtp_rate_limit",
    "http_rate_limit",   "alert_reminder_interval",            "log_max_mb_per_day", "standby",
    "reachability_probe_ms", "failback_after", "proxy",
});

constexpr auto k_tunnel_keys = std::to_array<std::string_view>({
    "tunnel_name",   "connector_name",  "server_host",    "server_port",    "port",
    "bind_address",  "remote_host",     "remote_port",    "username",       "keyfile",
    "server_key",    "keep_alive_time", "log_level",      "log_to_console", "max_connections",
    "local_forward", "dynamic_forward", "remote_forward", "socks_allow",    "socks_user",
    "socks_password", "max_sessions",   "min_sessions",   "open_timeout",   "standby",
    "failback_after",
    // bastions behind a proxy or a jump host (docs/operations.md)
    "proxy",         "jump",            "jump_keyfile",   "jump_server_key",
    // the VPN capture (docs/configuration.md, "A VPN capture"): k_vpn_keys
    "vpn_subnets",   "vpn_exclude",     "vpn_auto_nets",  "vpn_dns",        "vpn_ns_hosts",
    "vpn_to_ns",     "vpn_method",      "vpn_listen",     "vpn_ipv6",       "vpn_fail_open",
});

// Any of these makes the tunnel carry a VPN capture (pytun vpn's options,
// sshuttle's names with vpn_ in front).
constexpr auto k_vpn_keys = std::to_array<std::string_view>({
    "vpn_subnets", "vpn_exclude", "vpn_auto_nets", "vpn_dns",  "vpn_ns_hosts",
    "vpn_to_ns",   "vpn_method",  "vpn_listen",    "vpn_ipv6", "vpn_fail_open",
});

// Keys that take a list and may be written on several lines, each adding to
// it (as LocalForward in ssh_config); every other key set twice warns.
constexpr std::array<std::string_view, 7> k_list_keys = {
    "local_forward", "dynamic_forward", "remote_forward", "socks_allow", "vpn_subnets", "vpn_exclude", "vpn_ns_hosts",
};

// ssh's option letter for each forward key (parse_forward's `kind`).
constexpr std::array<std::pair<std::string_view, char>, 3> k_forward_keys = {{
    {"local_forward", 'L'}, {"dynamic_forward", 'D'}, {"remote_forward", 'R'},
}};

constexpr std::string_view k_bool_words = "1, yes, true, on, 0, no, false or off";

std::string canonical_key(std::string_view key)
{
    // The original's tunnel files were written before the rename to "tunnel".
    if (key == "connector_name")
        return "tunnel_name";
    return std::string(key);
}

std::string suggestion(std::string_view key, const std::string_view *known, std::size_t count)
{
    std::string_view best;
    std::size_t best_distance = std::string_view::npos;
    for (std::size_t i = 0; i < count; ++i) {
        std::size_t d = edit_distance(key, known[i]);
        if (d < best_distance) {
            best_distance = d;
            best = known[i];
        }
    }
    if (best_distance <= std::max<std::size_t>(1, key.size() / 3))
        return "did you mean '" + std::string(best) + "'?";
    return "ignored";
}

/// Typed access to one section's keys; each accessor reports its own errors
/// and returns the default so validation can continue.
class Fields {
public:
    Fields(const RawSection &s, const std::string_view *known, std::size_t count, Diagnostics &diag)
        : section_(s), diag_(diag)
    {
        for (const RawValue &v : s.entries) {
            if (std::find(known, known + count, v.key) == known + count) {
                diag.warning(s.file, v.line, v.key,
                             "unknown key '" + detail::printable(v.key, 64) + "': " + suggestion(v.key, known, count));
                continue;
            }
            std::string key = canonical_key(v.key);
            if (std::find(k_list_keys.begin(), k_list_keys.end(), key) != k_list_keys.end()) {
                lists_[key].push_back(&v);
                continue;
            }
            auto [it, fresh] = values_.try_emplace(key, &v);
            if (!fresh) {
                diag.warning(s.file, v.line, v.key,
                             "set twice: this value replaces the one on line " + std::to_string(it->second->line) +
                                 " (the last one wins); remove one of them");
                it->second = &v;
            }
        }
    }

    /// The value of a key; for a list key its first line.
    const RawValue *find(const std::string &key) const
    {
        if (auto list = lists_.find(key); list != lists_.end())
            return list->second.front();
        auto it = values_.find(key);
        return it == values_.end() ? nullptr : it->second;
    }

    /// Every line of a list key, in file order.
    const std::vector<const RawValue *> &all(const std::string &key) const
    {
        static const std::vector<const RawValue *> none;
        auto it = lists_.find(key);
        return it == lists_.end() ? none : it->second;
    }

    int line(const std::string &key) const
    {
        const RawValue *v = find(key);
        return v ? v->line : section_.line;
    }

    /// The key as the user wrote it (connector_name for the alias).
    std::string written(const std::string &key) const
    {
        const RawValue *v = find(key);
        return v ? v->key : key;
    }

    void error(const std::string &key, std::string message) const
    {
        diag_.error(section_.file, line(key), written(key), std::move(message));
    }
    void warning(const std::string &key, std::string message) const
    {
        diag_.warning(section_.file, line(key), written(key), std::move(message));
    }
    /// For one line of a list key.
    void error_at(const RawValue &v, std::string message) const
    {
        diag_.error(section_.file, v.line, v.key, std::move(message));
    }
    void error_at(int line, const std::string &key, std::string message) const
    {
        diag_.error(section_.file, line, key, std::move(message));
    }

    /// Empty when unset or empty.
    std::string string(const std::string &key) const
    {
        const RawValue *v = find(key);
        if (!v)
            return {};
        if (v->kind != RawValue::Kind::text) {
            error(key, "must be a string: write " + key + " = \"...\"");
            return {};
        }
        return v->text;
    }

    std::string required(const std::string &key, const std::string &what) const
    {
        const RawValue *v = find(key);
        std::string s = string(key);
        if (!v)
            diag_.error(section_.file, section_.line, key,
                        "missing: add " + key + " = " + what + " to the [" + section_.name + "] section");
        else if (s.empty() && v->kind == RawValue::Kind::text)
            error(key, "is empty: set it to " + what);
        return s;
    }

    bool boolean(const std::string &key, bool fallback) const
    {
        const RawValue *v = find(key);
        if (!v)
            return fallback;
        if (v->kind == RawValue::Kind::boolean)
            return v->boolean;
        if (v->kind == RawValue::Kind::text && v->from_ini) {
            std::string w = to_lower(v->text);
            if (w == "1" || w == "yes" || w == "true" || w == "on")
                return true;
            if (w == "0" || w == "no" || w == "false" || w == "off")
                return false;
            error(key, quote_value(key, v->text) + " is not a boolean: write one of " + std::string(k_bool_words));
            return fallback;
        }
        error(key, "must be a boolean: write " + key + " = true or " + key + " = false (no quotes)");
        return fallback;
    }

    std::int64_t integer(const std::string &key, std::int64_t fallback, std::int64_t min, std::int64_t max,
                         const std::string &what) const
    {
        const RawValue *v = find(key);
        if (!v)
            return fallback;
        const std::string range = "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
        std::int64_t n = 0;
        if (v->kind == RawValue::Kind::integer) {
            n = v->integer;
        } else if (v->kind == RawValue::Kind::text && v->from_ini) {
            const char *b = v->text.data();
            const char *e = b + v->text.size();
            auto [p, ec] = std::from_chars(b, e, n);
            if (v->text.empty() || ec != std::errc{} || p != e) {
                error(key, quote_value(key, v->text) + " is not a number: write " + what + ", " + range);
                return fallback;
            }
        } else if (v->kind == RawValue::Kind::text) {
            error(key, "is a string: write the number without quotes (" + key + " = " + std::to_string(fallback) +
                           "), " + range);
            return fallback;
        } else {
            error(key, "must be " + range + " (" + what + ")");
            return fallback;
        }
        if (n < min || n > max) {
            error(key, std::to_string(n) + " is out of range: write " + what + ", " + range);
            return fallback;
        }
        return n;
    }

    std::uint16_t port(const std::string &key, std::uint16_t fallback, const std::string &what) const
    {
        return static_cast<std::uint16_t>(integer(key, fallback, 1, 65535, what));
    }

    LogLevel log_level(const std::string &key, LogLevel fallback) const
    {
        const RawValue *v = find(key);
        if (!v)
            return fallback;
        std::string s = string(key);
        if (v->kind != RawValue::Kind::text)
            return fallback;
        std::string u = s;
        std::transform(u.begin(), u.end(), u.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        if (u == "DEBUG")
            return LogLevel::debug;
        if (u == "INFO")
            return LogLevel::info;
        if (u == "WARNING" || u == "WARN") // Python's logging accepts both
            return LogLevel::warning;
        if (u == "ERROR")
            return LogLevel::error;
        if (u == "CRITICAL")
            return LogLevel::critical;
        error(key, quote_value(key, s) + " is not a log level: write DEBUG, INFO, WARNING, ERROR or CRITICAL");
        return fallback;
    }

    /// Absolute path, or `fallback` resolved the same way when unset.
    std::string path(const std::string &key, const fs::path &base_dir, const std::string &fallback) const
    {
        std::string s = find(key) ? string(key) : fallback;
        if (s.empty())
            return {};
        return (base_dir / fs::path(expand_home(s))).lexically_normal().string();
    }

private:
    const RawSection &section_;
    Diagnostics &diag_;
    std::map<std::string, const RawValue *> values_;
    std::map<std::string, std::vector<const RawValue *>> lists_;
};

/// Error when `p` is not a readable regular file; true when it is.
bool check_readable(const Fields &f, const std::string &key, const fs::path &p, const std::string &fix)
{
    std::error_code ec;
    fs::file_status st = fs::status(p, ec);
    if (!fs::exists(st)) {
        f.error(key, p.string() + " does not exist: " + fix);
        return false;
    }
    if (!fs::is_regular_file(st)) {
        f.error(key, p.string() + " is not a regular file: " + fix);
        return false;
    }
    std::ifstream in(p);
    if (!in) {
        f.error(key, p.string() + " cannot be read (" + std::strerror(errno) +
                         "): give the user pytun runs as read access, or " + fix);
        return false;
    }
    return true;
}

/// The items of a list value: a TOML array item by item, text split at any
/// of `separators` (empty items dropped).
std::vector<std::string> split_list(const RawValue &v, std::string_view separators)
{
    std::vector<std::string> out;
    if (v.kind == RawValue::Kind::string_array) {
        for (const auto &s : v.strings)
            out.emplace_back(trim(s));
        return out;
    }
    std::string_view rest = v.text;
    while (!rest.empty()) {
        std::size_t end = rest.find_first_of(separators);
        std::string_view part = trim(rest.substr(0, end));
        if (!part.empty())
            out.emplace_back(part);
        if (end == std::string_view::npos)
            break;
        rest.remove_prefix(end + 1);
    }
    return out;
}

/// Forms of ssh's forwards and destination rules hold neither commas nor
/// white space, so either separates them.
constexpr std::string_view k_list_separators = ", \t";

bool starts_with_nocase(std::string_view s, std::string_view prefix)
{
    return s.size() >= prefix.size() && to_lower(s.substr(0, prefix.size())) == prefix;
}

/// The items of a list key, each with its line; a TOML value that is neither
/// a string nor an array of strings is reported.
std::vector<std::pair<std::string, int>> list_items(const Fields &f, const std::string &key, const std::string &example)
{
    std::vector<std::pair<std::string, int>> out;
    for (const RawValue *v : f.all(key)) {
        if (v->kind != RawValue::Kind::text && v->kind != RawValue::Kind::string_array) {
            f.error_at(*v, "must be a string or an array of strings: write " + key + " = [\"" + example + "\"]");
            continue;
        }
        for (auto &item : split_list(*v, k_list_separators))
            out.emplace_back(std::move(item), v->line);
    }
    return out;
}

/// local_forward, dynamic_forward and remote_forward in the order written
/// (ssh's forms, read by parse_forward so that errors read as the library's),
/// then socks_allow, socks_user and socks_password applied to the SOCKS ones.
/// True when any forward key is present, valid or not.
bool read_forwards(const Fields &f, BuiltTunnel &out)
{
    TunnelConfig &t = out.config;
    struct Written {
        int line;
        std::string text;
        ForwardSpec spec;
    };
    std::vector<Written> written;
    bool declared = false;
    for (const auto &[key, kind] : k_forward_keys) {
        const std::string name(key);
        declared = declared || !f.all(name).empty();
        const std::string example = kind == 'D' ? "1080" : kind == 'L' ? "5432:db.internal:5432" : "10389:ldap.internal:389";
        for (const auto &[text, line] : list_items(f, name, example)) {
            std::string error;
            if (auto spec = parse_forward(kind, text, error))
                written.push_back({line, text, std::move(*spec)});
            else
                f.error_at(line, name, error);
        }
    }
    // Stable: items of one line keep their order.
    std::stable_sort(written.begin(), written.end(), [](const Written &a, const Written &b) { return a.line < b.line; });

    for (const auto &[rule, line] : list_items(f, "socks_allow", "10.0.0.0/8:389")) {
        std::string error;
        if (detail::parse_destination(rule, error))
            t.socks_allow.push_back(rule);
        else
            f.error_at(line, "socks_allow", error);
    }
    t.socks_user = f.string("socks_user");
    t.socks_password = f.string("socks_password");
    if (t.socks_user.empty() != t.socks_password.empty())
        f.error(t.socks_user.empty() ? "socks_password" : "socks_user",
                "socks_user and socks_password go together: set both (SOCKS5 clients then log in, RFC 1929) or "
                "neither");
    // RFC 1929 carries each in one length byte.
    auto at_most_255 = [&f](const std::string &key, const std::string &value) {
        if (value.size() > 255)
            f.error(key, "is longer than 255 bytes, the most SOCKS5 can carry (RFC 1929): shorten it");
    };
    at_most_255("socks_user", t.socks_user);
    at_most_255("socks_password", t.socks_password);
    if (!t.socks_password.empty())
        out.secret_line = f.line("socks_password");

    bool dynamic = false, socks = false;
    for (Written &w : written) {
        if (auto *d = std::get_if<DynamicForward>(&w.spec)) {
            d->allow = t.socks_allow;
            d->username = t.socks_user;
            d->password = t.socks_password;
            dynamic = socks = true;
        } else if (auto *r = std::get_if<RemoteDynamicForward>(&w.spec)) {
            r->allow = t.socks_allow;
            socks = true;
            if (t.socks_allow.empty() && !f.find("socks_allow"))
                f.error_at(w.line, "remote_forward",
                           quote_value("remote_forward", w.text) + " has no HOST:HOSTPORT, so it is reverse SOCKS: the bastion's "
                           "clients choose where pytun connects in this network; say where they may go with "
                           "socks_allow (e.g. socks_allow = 10.0.0.0/8:389), or add the target "
                           "(remote_forward = PORT:HOST:HOSTPORT)");
        }
        t.forwards.push_back(std::move(w.spec));
        out.forward_lines.push_back(w.line);
    }
    if (!t.socks_allow.empty() && !socks) // a socks_allow in error is reported already
        f.warning("socks_allow", "no SOCKS forward (dynamic_forward, or remote_forward without HOST:HOSTPORT) to "
                                 "apply it to: it has no effect");
    if (f.find("socks_user") && !dynamic)
        f.warning("socks_user", "no dynamic_forward to log in to: socks_user and socks_password have no effect");
    return declared;
}

/// vpn_to_ns: IP or IP:PORT ([IPv6]:PORT), the resolver as the bastion reaches it.
bool valid_resolver(const std::string &text)
{
    if (detail::IpAddress::parse(text))
        return true;
    std::string ignored;
    const auto spec = parse_forward('D', text, ignored); // [BIND:]PORT: the same shape, brackets and all
    const auto *d = spec ? std::get_if<DynamicForward>(&*spec) : nullptr;
    return d && d->listen_port != 0 && text.find(':') != std::string::npos && detail::IpAddress::parse(d->bind_address);
}

/// The vpn_* keys: a TransparentForward, each value checked as pytun vpn
/// checks its options (check_transparent_forward on that value alone), so
/// that both say the same. True when any vpn key is present, valid or not.
bool read_vpn(const Fields &f, BuiltTunnel &out)
{
    const auto first = std::find_if(k_vpn_keys.begin(), k_vpn_keys.end(),
                                    [&f](std::string_view key) { return f.find(std::string(key)); });
    if (first == k_vpn_keys.end())
        return false;
    // A spec that passes every check but the one value under test.
    auto problem = [](auto &&set) {
        TransparentForward one;
        one.auto_nets = true;
        set(one);
        return detail::check_transparent_forward(one);
    };
    TransparentForward vpn;
    std::size_t subnets_written = 0; // valid or not
    for (const auto &[key, into] : {std::pair{"vpn_subnets", &vpn.subnets}, std::pair{"vpn_exclude", &vpn.exclude}}) {
        for (const auto &item : list_items(f, key, "10.0.0.0/8")) {
            if (into == &vpn.subnets)
                ++subnets_written;
            if (std::string p = problem([&item](TransparentForward &one) { one.subnets = {item.first}; }); !p.empty())
                f.error_at(item.second, key, p);
            else
                into->push_back(item.first);
        }
    }
    vpn.auto_nets = f.boolean("vpn_auto_nets", false);
    if (subnets_written == 0 && !vpn.auto_nets)
        f.error("vpn_subnets", std::string(f.find("vpn_subnets") ? "is empty" : "missing") +
                                   ": a VPN capture needs the networks it captures: write vpn_subnets = 10.0.0.0/8, "
                                   "fd00::/8 (CIDR[:PORT[-PORT]], addresses, host names, 0/0, ::/0), or set "
                                   "vpn_auto_nets = true (the bastion's routes)");

    for (auto &[text, line] : list_items(f, "vpn_ns_hosts", "10.0.0.53")) {
        if (!detail::IpAddress::parse(text))
            f.error_at(line, "vpn_ns_hosts",
                       quote_value("vpn_ns_hosts", text) + " is not an IP address: list the addresses of the "
                       "nameservers whose DNS is captured (vpn_ns_hosts = 10.0.0.53, fd00::53)");
        else
            vpn.nameservers.push_back(std::move(text));
    }
    vpn.dns = f.boolean("vpn_dns", !vpn.nameservers.empty());
    if (f.find("vpn_dns") && !vpn.dns && !f.all("vpn_ns_hosts").empty())
        f.error("vpn_dns", "is false, but vpn_ns_hosts names nameservers whose DNS is captured: remove vpn_dns "
                           "(vpn_ns_hosts implies it) or vpn_ns_hosts");
    vpn.to_ns = f.string("vpn_to_ns");
    if (!vpn.to_ns.empty() && !valid_resolver(vpn.to_ns))
        f.error("vpn_to_ns", quote_value("vpn_to_ns", vpn.to_ns) + " is not IP[:PORT]: write the resolver's address "
                             "as the bastion reaches it (vpn_to_ns = 10.0.0.53, 10.0.0.53:5353 or [fd00::53]:53)");
    else if (!vpn.to_ns.empty() && !vpn.dns)
        f.warning("vpn_to_ns", "no effect: DNS is not captured; set vpn_dns = true (or vpn_ns_hosts) to carry it to "
                               "this resolver");

    const std::string method = to_lower(f.string("vpn_method"));
    if (method == "nft")
        vpn.method = CaptureMethod::nft;
    else if (method == "nat")
        vpn.method = CaptureMethod::nat;
    else if (!method.empty() && method != "auto")
        f.error("vpn_method", quote_value("vpn_method", f.string("vpn_method")) + " is not a capture method: write "
                              "auto (nftables when nft is installed, else iptables), nft or nat (iptables)");

    if (const std::string listen = f.string("vpn_listen"); !listen.empty()) {
        std::string error;
        const auto spec = parse_forward('D', listen, error); // [IP:]PORT as -l reads it
        const auto *d = spec ? std::get_if<DynamicForward>(&*spec) : nullptr;
        if (!d)
            f.error("vpn_listen", error + ": write vpn_listen = [IP:]PORT (12300; 0.0.0.0:12300 for a router)");
        else if (std::string p = problem([&](TransparentForward &one) { one.listen_address = d->bind_address; });
                 !p.empty())
            f.error("vpn_listen", p);
        else {
            vpn.listen_address = d->bind_address;
            vpn.listen_port = d->listen_port;
        }
    }
    vpn.ipv6 = f.boolean("vpn_ipv6", true);
    vpn.fail_open = f.boolean("vpn_fail_open", false);

    // Where the forward was written: its listener's line (the port check
    // names it), else its subnets', else its first key's.
    const std::string place = f.find("vpn_listen") ? "vpn_listen" : f.find("vpn_subnets") ? "vpn_subnets" : std::string(*first);
    out.config.forwards.push_back(std::move(vpn));
    out.forward_lines.push_back(f.line(place));
    out.vpn_key = f.written(place);
    return true;
}

/// `proxy`: a proxy URL or none. The value is never quoted: it may hold a
/// password. Returns whether it holds one.
bool check_proxy(const Fields &f, const std::string &value)
{
    std::string error;
    const auto proxy = parse_proxy(value, error);
    if (!proxy) {
        f.error("proxy", error);
        return false;
    }
    return !proxy->password.empty();
}

} // namespace

bool is_known_key(std::string_view key)
{
    return std::find(k_main_keys.begin(), k_main_keys.end(), key) != k_main_keys.end() ||
           std::find(k_tunnel_keys.begin(), k_tunnel_keys.end(), key) != k_tunnel_keys.end();
}

std::size_t edit_distance(std::string_view a, std::string_view b)
{
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

bool valid_email(std::string_view a)
{
    std::size_t at = a.rfind('@');
    if (at == std::string_view::npos || at == 0 || at + 1 >= a.size() || a.size() > 254)
        return false;
    std::string_view local = a.substr(0, at);
    std::string_view domain = a.substr(at + 1);
    if (local.size() > 64 || local.front() == '.' || local.back() == '.' || local.find("..") != local.npos)
        return false;
    for (unsigned char c : local) {
        if (c <= ' ' || c == 0x7f || std::strchr("()<>[]\\,;:\"@", c))
            return false;
    }
    // Labels of letters, digits and hyphens; UTF-8 bytes pass for
    // internationalized domains. A single label (localhost) is allowed.
    std::size_t start = 0;
    while (true) {
        std::size_t dot = domain.find('.', start);
        std::string_view label = domain.substr(start, dot == domain.npos ? domain.npos : dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
            return false;
        for (unsigned char c : label) {
            if (!(std::isalnum(c) || c == '-' || c >= 0x80))
                return false;
        }
        if (dot == domain.npos)
            break;
        start = dot + 1;
    }
    return true;
}

namespace {

/// failback_after: seconds, or 0 / "off" / "never" for never.
std::chrono::seconds failback_seconds(const Fields &f, std::chrono::seconds fallback)
{
    if (const RawValue *v = f.find("failback_after"); v && v->kind == RawValue::Kind::text) {
        const std::string w = to_lower(v->text);
        if (w == "off" || w == "never")
            return std::chrono::seconds(0);
    }
    return std::chrono::seconds(f.integer("failback_after", fallback.count(), 0, 86400,
                                          "the seconds the first bastion must answer before a tunnel returns to it "
                                          "(0 or off: never)"));
}

/// server_host: one host as always, or a comma-separated failover list
/// "a.example.com, b.example.com:2222, [2001:db8::1]:22" (an entry without a
/// port uses server_port). The first entry goes to server_host/server_port.
void read_bastions(const Fields &f, const std::string &text, TunnelConfig &t)
{
    if (text.empty())
        return;
    const int line = f.line("server_host");
    const std::string key = f.written("server_host");
    // One host as always, a bare IPv6 address included; "host:port" and
    // "[address]:port" go through the list's parser.
    const auto colons = std::count(text.begin(), text.end(), ':');
    if (text.find(',') == std::string::npos && text.front() != '[' && colons != 1) {
        t.server_host = text;
        return;
    }
    std::vector<Bastion> list;
    std::size_t start = 0, index = 0;
    for (;;) {
        const auto comma = text.find(',', start);
        std::string entry = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        ++index;
        const auto b = entry.find_first_not_of(" \t");
        entry = b == std::string::npos ? std::string() : entry.substr(b, entry.find_last_not_of(" \t") - b + 1);
        const std::string which = "entry " + std::to_string(index) + " of the list";
        Bastion bastion;
        bastion.port = t.server_port;
        std::string port;
        bool ok = true;
        if (entry.empty()) {
            f.error_at(line, key, which + " is empty: write host[:port] entries separated by commas");
            ok = false;
        } else if (entry.front() == '[') {
            const auto close = entry.find(']');
            if (close == std::string::npos || close == 1 ||
                (close + 1 < entry.size() && entry[close + 1] != ':')) {
                f.error_at(line, key, which + " " + quote_value(key, entry) +
                                          ": write an IPv6 address as [address] or [address]:port");
                ok = false;
            } else {
                bastion.host = entry.substr(1, close - 1);
                if (close + 1 < entry.size())
                    port = entry.substr(close + 2);
                if (close + 1 < entry.size() && port.empty())
                    port = "-";
            }
        } else if (std::count(entry.begin(), entry.end(), ':') > 1) {
            f.error_at(line, key, which + " " + quote_value(key, entry) +
                                      " looks like an IPv6 address: write it in brackets, [address] or "
                                      "[address]:port");
            ok = false;
        } else if (const auto colon = entry.find(':'); colon != std::string::npos) {
            bastion.host = entry.substr(0, colon);
            port = entry.substr(colon + 1);
            if (port.empty())
                port = "-";
            if (bastion.host.empty()) {
                f.error_at(line, key, which + " " + quote_value(key, entry) + " has no host: write host[:port]");
                ok = false;
            }
        } else {
            bastion.host = entry;
        }
        if (ok && !port.empty()) {
            unsigned n = 0;
            auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
            if (ec != std::errc{} || p != port.data() + port.size() || n < 1 || n > 65535) {
                f.error_at(line, key, which + " " + quote_value(key, entry) +
                                          ": the port must be a whole number from 1 to 65535");
                ok = false;
            } else {
                bastion.port = static_cast<std::uint16_t>(n);
            }
        }
        if (ok)
            list.push_back(std::move(bastion));
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
    if (list.empty())
        return;
    t.server_host = list.front().host;
    t.server_port = list.front().port;
    t.failover.assign(list.begin() + 1, list.end());
}

} // namespace

BuiltConnector build_connector(const RawSection &s, const fs::path &base_dir, Format format, Diagnostics &diag)
{
    Fields f(s, k_main_keys.data(), k_main_keys.size(), diag);
    BuiltConnector out;
    ConnectorConfig &c = out.config;

    c.tunnel_manager_id = f.required("tunnel_manager_id", "a name for this connector");
    out.tunnel_dirs_set = f.find("tunnel_dirs") != nullptr;
    out.tunnel_dirs_line = f.line("tunnel_dirs");
    c.tunnel_dirs = f.path("tunnel_dirs", base_dir, format == Format::ini ? "configs" : "");
    if (out.tunnel_dirs_set && c.tunnel_dirs.empty() && f.find("tunnel_dirs")->kind == RawValue::Kind::text)
        f.error("tunnel_dirs", "is empty: set it to the directory holding the tunnel .ini files");
    c.log_level = f.log_level("log_level", LogLevel::info);
    c.log_to_console = f.boolean("log_to_console", false);
    c.log_path = f.path("log_path", base_dir, "./logs");
    if (f.find("log_path") && c.log_path.empty() && f.find("log_path")->kind == RawValue::Kind::text)
        f.error("log_path", "is empty: set it to the directory for log files (default ./logs)");
    c.log_max_mb_per_day = static_cast<std::uint32_t>(
        f.integer("log_max_mb_per_day", 100, 0, 1'000'000, "MiB a log file may grow by in one day (0: no limit)"));
    c.inspection_port = f.port("inspection_port", 9999, "the HTTP status API port");
    c.inspection_localhost_only = f.boolean("inspection_localhost_only", true);
    c.inspection_token = f.string("inspection_token");
    if (!c.inspection_localhost_only && c.inspection_token.empty())
        f.warning("inspection_localhost_only",
                  "the status API is reachable from the network without a token: set inspection_token");

    c.smtp_hostname = f.string("smtp_hostname");
    c.smtp_port = f.port("smtp_port", 25, "the SMTP server's port");
    if (f.find("smtp_security")) {
        std::string sec = to_lower(f.string("smtp_security"));
        if (sec == "none")
            c.smtp_security = SmtpSecurity::none;
        else if (sec == "tls")
            c.smtp_security = SmtpSecurity::starttls;
        else if (sec == "ssl")
            c.smtp_security = SmtpSecurity::ssl;
        else if (f.find("smtp_security")->kind == RawValue::Kind::text)
            f.error("smtp_security", quote_value("smtp_security", f.find("smtp_security")->text) +
                                         " is not a choice: write none, tls (STARTTLS) or ssl (implicit TLS)");
    }
    c.smtp_login = f.string("smtp_login");
    c.smtp_password = f.string("smtp_password");
    c.smtp_from = f.string("smtp_from");
    if (const RawValue *to = f.find("smtp_to")) {
        if (to->kind == RawValue::Kind::text || to->kind == RawValue::Kind::string_array)
            c.smtp_to = split_list(*to, ",");
        else
            f.error("smtp_to", "must be a string or an array of strings: write smtp_to = \"ops@example.com\"");
    }
    c.smtp_ca_file = f.path("smtp_ca_file", base_dir, "");
    if (!c.smtp_ca_file.empty())
        check_readable(f, "smtp_ca_file", c.smtp_ca_file, "fix smtp_ca_file or remove it to use the system store");
    c.smtp_verify_tls = f.boolean("smtp_verify_tls", true);

    if (!c.smtp_hostname.empty()) {
        if (c.smtp_to.empty())
            f.error("smtp_to", f.find("smtp_to") ? "is empty: set it to the address alerts go to"
                                                 : "missing: e-mail alerts (smtp_hostname) need smtp_to = "
                                                   "the address alerts go to");
        if (c.smtp_from.empty() && c.smtp_login.empty())
            f.error("smtp_from", "missing: e-mail alerts need a sender: set smtp_from (or an smtp_login that "
                                 "is an address)");
        else if (c.smtp_from.empty() && !valid_email(c.smtp_login))
            diag.error(s.file, f.line("smtp_login"), "smtp_from",
                       "not set, and its default smtp_login " + quote_value("smtp_login", c.smtp_login) +
                           " is not an e-mail address: set smtp_from to the sender address");
        if (!c.smtp_login.empty() && c.smtp_password.empty())
            f.warning("smtp_login", "set without smtp_password: AUTH will use an empty password");
    } else if (!c.smtp_to.empty()) {
        f.warning("smtp_to", "set but smtp_hostname is not: e-mail alerts are off; set smtp_hostname to enable them");
    }
    if (c.smtp_from.empty() && valid_email(c.smtp_login))
        c.smtp_from = c.smtp_login;
    else if (!c.smtp_from.empty() && !valid_email(c.smtp_from))
        f.error("smtp_from", quote_value("smtp_from", c.smtp_from) + " is not an e-mail address: write it as name@example.com");
    for (const std::string &to : c.smtp_to) {
        if (!valid_email(to))
            f.error("smtp_to", quote_value("smtp_to", to) + " is not an e-mail address: write it as name@example.com (separate "
                               "several with commas)");
    }

    c.http_url = f.string("http_url");
    c.http_user = f.string("http_user");
    c.http_password = f.string("http_password");
    if (!c.http_url.empty()) {
        if (!starts_with_nocase(c.http_url, "http://") && !starts_with_nocase(c.http_url, "https://"))
            f.error("http_url", "is not an http:// or https:// URL (the value is not shown: a URL may hold a password): "
                                "write the webhook's full URL");
        if (c.http_user.empty())
            f.error("http_user", "missing: webhook alerts (http_url) need http_user for basic auth");
        if (c.http_password.empty())
            f.error("http_password", "missing: webhook alerts (http_url) need http_password for basic auth");
    }

    c.signature = f.string("signature");
    c.mac_address_pub_key = f.path("mac_address_pub_key", base_dir, "");
    if (!c.mac_address_pub_key.empty())
        check_readable(f, "mac_address_pub_key", c.mac_address_pub_key,
                       "set mac_address_pub_key to the PEM public key file");
    else if (!c.signature.empty())
        f.error("mac_address_pub_key",
                "missing: signature is set, so the PEM public key that checks it is needed: add "
                "mac_address_pub_key = <path>");
    c.grace_period_ms = std::chrono::milliseconds(
        f.integer("grace_period_ms", 5000, 0, 3'600'000, "milliseconds connections get to finish on stop"));
    c.reachability_probe_ms = std::chrono::milliseconds(f.integer(
        "reachability_probe_ms", 300, 0, 60'000,
        "milliseconds between TCP probes of an unreachable bastion (0: off)"));
    if (c.reachability_probe_ms.count() > 0 && c.reachability_probe_ms.count() < 50)
        f.error("reachability_probe_ms", "must be 0 (off) or at least 50: a probe every few milliseconds would "
                                         "flood the bastion with connections; 300 is the default");
    c.failback_after = failback_seconds(f, std::chrono::seconds(60));
    constexpr std::int64_t week = 7 * 86400;
    c.smtp_rate_limit = std::chrono::seconds(
        f.integer("smtp_rate_limit", 600, 0, week, "seconds between two e-mails about the same tunnel and event"));
    c.http_rate_limit = std::chrono::seconds(
        f.integer("http_rate_limit", 60, 0, week, "seconds between two webhook calls about the same tunnel and event"));
    c.alert_reminder_interval = std::chrono::seconds(
        f.integer("alert_reminder_interval", 600, 1, week, "seconds between \"still down\" reminders"));
    c.standby = f.boolean("standby", false);

    c.proxy = f.string("proxy");
    if (!c.proxy.empty() && check_proxy(f, c.proxy))
        out.proxy_password_line = f.line("proxy");

    out.holds_secrets = !c.smtp_password.empty() || !c.http_password.empty() || !c.inspection_token.empty() ||
                        out.proxy_password_line;
    return out;
}

namespace {

// proxy, jump, jump_keyfile, jump_server_key: how the bastion is reached.
void build_route(const Fields &f, const RawSection &s, const fs::path &base_dir, BuiltTunnel &out, Diagnostics &diag)
{
    TunnelConfig &t = out.config;
    t.proxy = f.string("proxy");
    if (!t.proxy.empty() && check_proxy(f, t.proxy) && !out.secret_line) {
        out.secret_line = f.line("proxy");
        out.secret_key = "proxy";
    }
    t.jump = f.string("jump");
    std::optional<JumpHost> jump;
    if (!t.jump.empty()) {
        std::string error;
        jump = parse_jump(t.jump, error);
        if (!jump)
            f.error("jump", error);
    }
    t.jump_keyfile = f.path("jump_keyfile", base_dir, "");
    t.jump_server_key = f.path("jump_server_key", base_dir, "");
    for (const char *key : {"jump_keyfile", "jump_server_key"})
        if (f.find(key) && t.jump.empty())
            f.warning(key, "set but jump is not: ignored (set jump = [USER@]HOST[:PORT] to reach the bastion "
                           "through a jump host)");
    if (!t.jump_keyfile.empty() &&
        check_readable(f, "jump_keyfile", t.jump_keyfile, "put the jump host's private key there or fix jump_keyfile")) {
        check_key_content(t.jump_keyfile, s.file, f.line("jump_keyfile"), f.written("jump_keyfile"), diag);
        check_private_mode(t.jump_keyfile, s.file, f.line("jump_keyfile"), "jump_keyfile", "is a private key", diag);
    }
    if (!t.jump_server_key.empty() &&
        check_readable(f, "jump_server_key", t.jump_server_key,
                       "create it with ssh-keyscan -p PORT JUMPHOST > known_hosts, or leave it out to use server_key") &&
        jump)
        check_known_hosts_content(t.jump_server_key, jump->host, jump->port, s.file, f.line("jump_server_key"),
                                  "jump_server_key", diag);
}

} // namespace

BuiltTunnel build_tunnel(const RawSection &s, const fs::path &base_dir, std::string default_name, Diagnostics &diag)
{
    Fields f(s, k_tunnel_keys.data(), k_tunnel_keys.size(), diag);
    BuiltTunnel out;
    out.file = s.file;
    out.section_line = s.line;
    TunnelConfig &t = out.config;

    t.tunnel_name = f.string("tunnel_name");
    if (t.tunnel_name.empty())
        t.tunnel_name = std::move(default_name);
    out.name_line = f.line("tunnel_name");
    t.server_port = f.port("server_port", 22, "the bastion's SSH port");
    read_bastions(f, f.required("server_host", "the SSH bastion's host name (or several: a, b:2222)"), t);
    if (f.find("failback_after"))
        t.failback_after = failback_seconds(f, std::chrono::seconds(60));
    t.port = f.port("port", 4000, "the port the bastion listens on");
    out.port_line = f.line("port");
    t.bind_address = f.string("bind_address");
    // The classic reverse tunnel is required only of a file that declares no forwards.
    const bool ssh_forwards = read_forwards(f, out);
    const bool forwards = read_vpn(f, out) || ssh_forwards;
    if (forwards && !f.find("remote_host")) {
        for (const char *key : {"port", "remote_port", "bind_address"})
            if (f.find(key))
                f.warning(key, "used only with remote_host (the reverse tunnel port -> remote_host:remote_port), "
                               "which is not set: ignored; for more reverse forwards use remote_forward");
    } else {
        t.remote_host = f.required("remote_host", "the local service's host");
    }
    t.remote_port = f.port("remote_port", 22, "the local service's port");
    t.username = f.required("username", "the SSH user on the bastion");

    std::string keyfile = f.required("keyfile", "the private key file");
    if (!keyfile.empty()) {
        t.keyfile = f.path("keyfile", base_dir, "");
        if (check_readable(f, "keyfile", t.keyfile, "put the private key there or fix keyfile")) {
            check_key_content(t.keyfile, s.file, f.line("keyfile"), f.written("keyfile"), diag);
            check_private_mode(t.keyfile, s.file, f.line("keyfile"), "keyfile", "is a private key", diag);
        }
    }
    const std::string keyscan = "ssh-keyscan -p " + std::to_string(t.server_port) + " " +
                                (t.server_host.empty() ? "HOST" : t.server_host);
    t.server_key = f.path("server_key", base_dir, "");
    if (!t.server_key.empty()) {
        if (check_readable(f, "server_key", t.server_key, "create it with " + keyscan + " > known_hosts"))
        {
            check_known_hosts_content(t.server_key, t.server_host, t.server_port, s.file, f.line("server_key"),
                                      "server_key", diag);
            for (const Bastion &b : t.failover)
                check_known_hosts_content(t.server_key, b.host, b.port, s.file, f.line("server_key"), "server_key",
                                          diag);
        }
    }
    else
        f.warning("server_key", "not set: every host key of the bastion will be refused; set server_key to a "
                                "known_hosts file (" + keyscan + " > known_hosts)");
    t.keep_alive_time = std::chrono::seconds(
        f.integer("keep_alive_time", 30, 1, 86400, "the seconds between health checks"));
    t.max_connections = static_cast<std::uint32_t>(f.integer(
        "max_connections", 512, 1, 1'000'000, "the most forwarded connections this tunnel keeps open at once"));
    // A VPN capture opens a channel per connection a whole machine makes
    // (a web page: dozens at once), so it keeps sessions warm by default
    // (docs/vpn.md, "Bursts"); min_sessions alone never exceeds max_sessions.
    const bool vpn = std::any_of(t.forwards.begin(), t.forwards.end(), [](const ForwardSpec &spec) {
        return std::holds_alternative<TransparentForward>(spec);
    });
    t.max_sessions = static_cast<unsigned>(
        f.integer("max_sessions", vpn ? TransparentForward::default_max_sessions : 8, 1, 64,
                  "the most SSH connections to the bastion for channel opens, the first included"));
    t.min_sessions = static_cast<unsigned>(f.integer(
        "min_sessions", vpn ? std::min(TransparentForward::default_min_sessions, t.max_sessions) : 1, 1, 64,
        "the SSH connections to the bastion kept open while idle, the first included"));
    if (t.min_sessions > t.max_sessions) {
        f.error("min_sessions", "is " + std::to_string(t.min_sessions) + ", more than max_sessions (" +
                                    std::to_string(t.max_sessions) + "); lower it or raise max_sessions");
        t.min_sessions = t.max_sessions;
    }
    const bool opens_channels = std::any_of(t.forwards.begin(), t.forwards.end(), [](const ForwardSpec &spec) {
        return std::holds_alternative<LocalForward>(spec) || std::holds_alternative<DynamicForward>(spec) ||
               std::holds_alternative<TransparentForward>(spec);
    });
    if (t.min_sessions > 1 && !opens_channels)
        f.warning("min_sessions", "no local_forward, dynamic_forward or VPN capture opens channels here: only the tunnel's own "
                                  "connection is kept, min_sessions has no effect");
    t.open_timeout = std::chrono::seconds(f.integer(
        "open_timeout", 10, 0, 3600, "the seconds the bastion gets to connect a forwarded connection (0: no limit)"));
    t.log_level = f.log_level("log_level", LogLevel::debug);
    t.log_to_console = f.boolean("log_to_console", false);
    if (f.find("standby")) {
        out.standby_set = true;
        t.standby = f.boolean("standby", false);
        if (t.standby && t.remote_host.empty() &&
            std::none_of(t.forwards.begin(), t.forwards.end(), [](const ForwardSpec &spec) {
                return std::holds_alternative<RemoteForward>(spec) || std::holds_alternative<RemoteDynamicForward>(spec);
            }))
            f.warning("standby", "no effect: the tunnel asks the bastion for no port (no remote_host, no "
                                 "remote_forward), so there is nothing to wait for");
    }
    build_route(f, s, base_dir, out, diag);
    return out;
}

namespace {

/// Where something was asked for: the file, its line and the key.
struct Place {
    const BuiltTunnel *tunnel;
    int line;
    std::string key;
    std::string where() const { return tunnel->file + ":" + std::to_string(line); }
};

/// Two local listeners collide on the same port when their addresses are
/// equal or one is a wildcard that covers the other (:: covers both families).
bool same_listener(const std::string &a, const std::string &b)
{
    auto wildcard_of = [](const std::string &wild, const std::string &other) {
        return wild == "::" || (wild == "0.0.0.0" && other.find(':') == std::string::npos);
    };
    return a == b || wildcard_of(a, b) || wildcard_of(b, a);
}

std::string host_port(const std::string &host, std::uint16_t port)
{
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

} // namespace

void check_tunnel_set(const std::vector<BuiltTunnel> &tunnels, Diagnostics &diag)
{
    std::map<std::string, const BuiltTunnel *> names;
    std::map<std::string, Place> binds;
    std::map<std::string, const BuiltTunnel *> logs;
    std::map<std::uint16_t, std::vector<std::pair<std::string, Place>>> listeners; // by port: address, place
    auto bastion_port = [&](const BuiltTunnel &t, std::uint16_t port, Place place) {
        const TunnelConfig &c = t.config;
        if (c.server_host.empty() || port == 0)
            return;
        // Behind different jump hosts, one name may be two bastions.
        std::string bind = to_lower(c.jump) + ">" + to_lower(c.server_host) + ":" + std::to_string(c.server_port) +
                           ":" + std::to_string(port);
        if (auto [it, fresh] = binds.try_emplace(bind, place); !fresh)
            diag.error(t.file, place.line, place.key,
                       "port " + std::to_string(port) + " on " + c.server_host + ":" + std::to_string(c.server_port) +
                           " is also used by the tunnel in " + it->second.where() +
                           ": the bastion can bind a port only once; choose another port");
    };
    // False when the address and port are taken (reported).
    auto local_port = [&](const BuiltTunnel &t, const std::string &address, std::uint16_t port, Place place) {
        if (port == 0)
            return true;
        auto &taken = listeners[port];
        for (const auto &[other, where] : taken) {
            if (same_listener(address, other)) {
                diag.error(t.file, place.line, place.key,
                           host_port(address, port) + " is also where " + where.key + " in " + where.where() +
                               " listens: two forwards cannot listen on one address and port; choose another port");
                return false;
            }
        }
        taken.emplace_back(address, place);
        return true;
    };
    // A VPN capture listens on both families: 127.0.0.1 and ::1, or 0.0.0.0
    // and :: for a router.
    auto capture = [&](const BuiltTunnel &t, const TransparentForward &f, Place place) {
        if (f.listen_address == "0.0.0.0" || f.listen_address == "::")
            local_port(t, "::", f.listen_port, place);
        else if (local_port(t, "127.0.0.1", f.listen_port, place))
            local_port(t, "::1", f.listen_port, place);
    };
    for (const BuiltTunnel &t : tunnels) {
        const TunnelConfig &c = t.config;
        if (auto [it, fresh] = names.try_emplace(c.tunnel_name, &t); !fresh) {
            diag.error(t.file, t.name_line, "tunnel_name",
                       quote_value("tunnel_name", c.tunnel_name) + " is also the name of the tunnel in " + it->second->file + ":" +
                           std::to_string(it->second->name_line) + ": give each tunnel its own name");
        } else if (auto [lit, lfresh] = logs.try_emplace(c.source_name, &t); !lfresh) {
            // Only checked for distinct names: a shared name already explains a shared log file.
            diag.error(t.file, t.name_line, "tunnel_name",
                       "the log file " + c.source_name + ".log would be shared with the tunnel in " +
                           lit->second->file + ":" + std::to_string(lit->second->name_line) +
                           ": rename one of them");
        }
        if (!c.remote_host.empty())
            bastion_port(t, c.port, {&t, t.port_line, "port"});
        for (std::size_t i = 0; i < c.forwards.size(); ++i) {
            const int line = t.forward_lines[i];
            std::visit(
                [&](const auto &f) {
                    using Kind = std::decay_t<decltype(f)>;
                    if constexpr (std::is_same_v<Kind, RemoteForward> || std::is_same_v<Kind, RemoteDynamicForward>)
                        bastion_port(t, f.listen_port, {&t, line, "remote_forward"});
                    else if constexpr (std::is_same_v<Kind, TransparentForward>)
                        capture(t, f, {&t, line, "vpn_listen"});
                    else
                        local_port(t, f.bind_address, f.listen_port,
                                   {&t, line, std::is_same_v<Kind, LocalForward> ? "local_forward" : "dynamic_forward"});
                },
                c.forwards[i]);
        }
    }
}

} // namespace pytun::config
