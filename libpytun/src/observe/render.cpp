// SPDX-License-Identifier: MIT
// JSON and Prometheus replies of the inspection API, made from a snapshot.
#include "observe/render.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include <pytun/error.h>

namespace pytun::detail {

namespace {

using ordered_json = nlohmann::ordered_json;

// Tunnel names and errors come from files and peers: never let invalid UTF-8
// turn a status reply into an exception.
std::string dump(const ordered_json &j, int indent = -1)
{
    return j.dump(indent, ' ', false, ordered_json::error_handler_t::replace);
}

const char *state_key(ManagedState s)
{
    switch (s) {
    case ManagedState::connecting: return "connecting";
    case ManagedState::up: return "up";
    case ManagedState::degraded: return "degraded";
    case ManagedState::backing_off: return "backing_off";
    case ManagedState::stopped: return "stopped";
    case ManagedState::standby: return "standby";
    }
    return "stopped";
}

constexpr ManagedState k_states[] = {ManagedState::connecting, ManagedState::up, ManagedState::degraded,
                                     ManagedState::backing_off, ManagedState::stopped, ManagedState::standby};

bool serving(ManagedState s)
{
    return s == ManagedState::up || s == ManagedState::degraded;
}

bool is_set(std::chrono::system_clock::time_point t)
{
    return t.time_since_epoch().count() != 0;
}

ordered_json time_or_null(std::chrono::system_clock::time_point t)
{
    return is_set(t) ? ordered_json(unix_seconds(t)) : ordered_json(nullptr);
}

// The original keyed status_data by the tunnel's file; tunnels embedded by
// an application have none, and their name is the next best stable key.
const std::string &status_key(const TunnelStatus &t)
{
    return t.config_path.empty() ? t.name : t.config_path;
}

// Counters of a tunnel or of one forward, in the same shape.
void add_traffic(ordered_json &j, const TunnelStats &traffic)
{
    j["connections"] = {{"active", traffic.connections_active},
                        {"total", traffic.connections_total},
                        {"failed", traffic.connections_failed},
                        {"refused", traffic.connections_refused}};
    j["bytes"] = {{"to_service", traffic.bytes_to_service}, {"from_service", traffic.bytes_from_service}};
    j["connection_setup_seconds"] = {{"count", traffic.connection_setup.count},
                                     {"sum", traffic.connection_setup.sum_seconds}};
}

// A VPN forward's capture: the same object in /api/v1/tunnels (under
// `capture`) and /status (under `vpn`, with the forward's traffic).
ordered_json capture_json(const CaptureStatus &c)
{
    ordered_json j;
    j["installed"] = c.installed;
    j["method"] = c.method.empty() ? ordered_json(nullptr) : ordered_json(c.method);
    j["port"] = c.port ? ordered_json(c.port) : ordered_json(nullptr);
    j["captured"] = c.captured;
    j["reset_while_down"] = c.reset_while_down;
    j["not_redirected"] = c.not_redirected;
    if (c.dns)
        j["dns"] = {{"queries", c.dns->queries},     {"answered", c.dns->answered}, {"truncated", c.dns->truncated},
                    {"servfail", c.dns->servfail},   {"timeouts", c.dns->timeouts}, {"rejected", c.dns->rejected}};
    else
        j["dns"] = nullptr;
    return j;
}

ordered_json forward_json(const ForwardStatus &f)
{
    ordered_json j;
    j["description"] = f.description;
    j["serving"] = f.serving;
    j["bound_port"] = f.serving ? ordered_json(f.bound_port) : ordered_json(nullptr);
    j["error"] = f.error.empty() ? ordered_json(nullptr) : ordered_json(f.error);
    add_traffic(j, f.traffic);
    if (f.capture)
        j["capture"] = capture_json(*f.capture);
    return j;
}

// A tunnel of forwards only (no remote_host) has no local service of its
// own: it is well when it serves and every forward does.
bool all_serving(const TunnelStatus &t)
{
    return serving(t.state) && std::all_of(t.forwards.begin(), t.forwards.end(),
                                           [](const ForwardStatus &f) { return f.serving; });
}

/// Which bastion serves (or served last) and since when; null before the first time up.
void add_bastion(ordered_json &j, const TunnelStatus &t)
{
    j["bastion"] = t.bastion.empty() ? ordered_json(nullptr) : ordered_json(t.bastion);
    j["bastion_since"] = t.bastion.empty() ? ordered_json(nullptr) : time_or_null(t.bastion_since);
}

ordered_json tunnel_json(const TunnelStatus &t, std::chrono::system_clock::time_point now)
{
    ordered_json j;
    j["name"] = t.name;
    j["config_path"] = t.config_path;
    j["state"] = state_key(t.state);
    j["state_text"] = to_string(t.state);
    j["state_since"] = time_or_null(t.state_since);
    j["uptime_seconds"] = serving(t.state) && is_set(t.state_since)
                              ? ordered_json(std::chrono::duration<double>(now - t.state_since).count())
                              : ordered_json(nullptr);
    j["server_host"] = t.server_host;
    j["server_port"] = t.server_port;
    add_bastion(j, t);
    j["bastions"] = t.bastions.empty() ? ordered_json::array({describe(Bastion{t.server_host, t.server_port})})
                                       : ordered_json(t.bastions);
    j["listen_port"] = t.listen_port;
    j["remote_host"] = t.remote_host;
    j["remote_port"] = t.remote_port;
    if (t.last_error) {
        j["last_error"] = {{"code", t.last_error.value()},
                           {"category", t.last_error.category().name()},
                           {"message", t.last_error_message.empty() ? t.last_error.message() : t.last_error_message},
                           {"time", time_or_null(t.last_error_time)}};
    } else if (!t.last_error_message.empty()) {
        j["last_error"] = {{"code", 0},
                           {"category", "pytun"},
                           {"message", t.last_error_message},
                           {"time", time_or_null(t.last_error_time)}};
    } else {
        j["last_error"] = nullptr;
    }
    j["port_held"] = t.port_held;
    j["takeovers"] = t.takeovers;
    j["next_attempt"] = t.state == ManagedState::backing_off ? time_or_null(t.next_attempt) : ordered_json(nullptr);
    j["backoff_seconds"] = t.state == ManagedState::backing_off && is_set(t.next_attempt)
                               ? ordered_json(std::max(0.0, std::chrono::duration<double>(t.next_attempt - now).count()))
                               : ordered_json(nullptr);
    j["started_times"] = t.started_times;
    j["last_start"] = time_or_null(t.last_start);
    j["service"] = {{"checked", t.service_checked},
                    {"reachable", t.service_checked ? ordered_json(t.service_reachable) : ordered_json(nullptr)},
                    {"error", t.service_error}};
    // Seconds, as in /metrics (pytun_tunnel_probe_rtt_seconds).
    j["probe_rtt_seconds"] = t.probe_rtt.count() >= 0 ? ordered_json(static_cast<double>(t.probe_rtt.count()) / 1e6)
                                                       : ordered_json(nullptr);
    add_traffic(j, t.traffic);
    j["sessions"] = t.sessions;
    ordered_json forwards = ordered_json::array();
    for (const auto &f : t.forwards)
        forwards.push_back(forward_json(f));
    j["forwards"] = std::move(forwards);
    return j;
}

// The stable name of a pytun error code (the enumerator in <pytun/error.h>),
// for a label value that alert rules can match; empty for codes of other
// categories and for "stopped", which is no failure.
const char *error_reason(const std::error_code &ec)
{
    if (ec.category() != error_category())
        return "";
    switch (static_cast<Errc>(ec.value())) {
    case Errc::ok: return "";
    case Errc::invalid_options: return "invalid_options";
    case Errc::bastion_unresolved: return "bastion_unresolved";
    case Errc::bastion_unreachable: return "bastion_unreachable";
    case Errc::bastion_timeout: return "bastion_timeout";
    case Errc::handshake_failed: return "handshake_failed";
    case Errc::host_key_unknown: return "host_key_unknown";
    case Errc::host_key_changed: return "host_key_changed";
    case Errc::host_key_revoked: return "host_key_revoked";
    case Errc::known_hosts_unreadable: return "known_hosts_unreadable";
    case Errc::key_file_unreadable: return "key_file_unreadable";
    case Errc::key_encrypted: return "key_encrypted";
    case Errc::key_unsupported: return "key_unsupported";
    case Errc::rsa_key_refused: return "rsa_key_refused";
    case Errc::key_not_authorized: return "key_not_authorized";
    case Errc::remote_port_refused: return "remote_port_refused";
    case Errc::transport_lost: return "transport_lost";
    case Errc::stopped: return "";
    case Errc::local_service_unreachable: return "local_service_unreachable";
    case Errc::local_port_unavailable: return "local_port_unavailable";
    case Errc::proxy_failed: return "proxy_failed";
    case Errc::proxy_auth_failed: return "proxy_auth_failed";
    case Errc::capture_failed: return "capture_failed";
    }
    return "";
}

// Shortest text that reads back as the same double; Prometheus accepts it.
std::string number(double v)
{
    if (std::isnan(v))
        return "NaN";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    // Prefer the short form when it round-trips.
    for (int precision = 6; precision < 17; ++precision) {
        char shorter[64];
        std::snprintf(shorter, sizeof shorter, "%.*g", precision, v);
        if (std::strtod(shorter, nullptr) == v)
            return shorter;
    }
    return buf;
}

std::string number(std::uint64_t v)
{
    return std::to_string(v);
}

// One metric family: HELP and TYPE once, then its samples.
class Family {
public:
    Family(std::string &out, const char *name, const char *type, const char *help) : out_(out), name_(name)
    {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    void sample(const std::string &labels, const std::string &value) { sample_of(name_, labels, value); }
    /// A sample with a suffixed name (a histogram's _bucket, _sum, _count).
    void sample_of(std::string_view name, const std::string &labels, const std::string &value)
    {
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            out_ += labels;
            out_ += '}';
        }
        out_ += ' ';
        out_ += value;
        out_ += '\n';
    }

private:
    std::string &out_;
    const char *name_;
};

std::string label(const char *name, const std::string &value)
{
    return std::string(name) + "=\"" + escape_label(value) + "\"";
}

} // namespace

double unix_seconds(std::chrono::system_clock::time_point t)
{
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

std::string escape_label(const std::string &value)
{
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string render_ping(const RenderContext &ctx)
{
    ordered_json j;
    j["status"] = "ok";
    j["version"] = ctx.version;
    j["tunnel_manager_id"] = ctx.tunnel_manager_id;
    return dump(j);
}

std::string render_error(const RenderContext &ctx, const std::string &error)
{
    ordered_json j;
    j["error"] = error;
    j["tunnel_manager_id"] = ctx.tunnel_manager_id;
    return dump(j);
}

std::string render_status(const RenderContext &ctx, const Snapshot &snap)
{
    // Written piece by piece: an ordered_json object finds keys by linear
    // search, which with hundreds of tunnels costs more than everything
    // else in the request. The key order is the original's.
    auto text = [](const std::string &s) { return dump(ordered_json(s)); };
    std::string out;
    out.reserve(256 + snap.tunnels.size() * 192);
    out += "{\"created_at\":";
    out += dump(ordered_json(unix_seconds(ctx.created_at)));
    out += ",\"mac_address\":";
    out += ctx.mac_address.empty() ? "null" : text(ctx.mac_address);
    out += ",\"status_data\":{";
    // Several tunnels of one TOML file share a path: keep every one of them,
    // the later ones as "path#name".
    std::set<std::string> seen;
    bool first = true;
    for (const auto &t : snap.tunnels) {
        std::string key = status_key(t);
        if (!seen.insert(key).second) {
            key += "#" + t.name;
            seen.insert(key);
        }
        out += first ? "" : ",";
        first = false;
        out += text(key);
        out += ":{\"started_times\":";
        out += std::to_string(t.started_times);
        out += ",\"last_start\":";
        out += dump(ordered_json(unix_seconds(t.last_start)));
        out += '}';
    }
    out += '}';
    // A tunnel named like one of the fixed keys would overwrite it and break
    // every monitor reading the reply: the fixed keys win.
    static const std::set<std::string> reserved = {"created_at", "mac_address", "status_data", "tunnel_manager_id"};
    for (const auto &t : snap.tunnels) {
        if (reserved.count(t.name))
            continue;
        // `status`: the local service accepted the HealthMonitor's last TCP
        // probe; not probed yet counts as not reachable, as a failed connect
        // did. A tunnel of forwards only has no service: every forward serves.
        const bool well = t.remote_host.empty() ? all_serving(t) : t.service_checked && t.service_reachable;
        out += ',';
        out += text(t.name);
        out += ":{\"remote_host\":";
        out += text(t.remote_host);
        out += ",\"remote_port\":";
        out += std::to_string(t.remote_port);
        out += ",\"status\":";
        out += well ? "true" : "false";
        // The original had no standby; `status` keeps its meaning (the local
        // service answers) and the key below tells a standby from the active.
        if (t.state == ManagedState::standby)
            out += ",\"state\":\"standby\"";
        // Only for a VPN capture: the original's entries stay as they were.
        for (const auto &f : t.forwards) {
            if (!f.capture)
                continue;
            ordered_json vpn = capture_json(*f.capture);
            add_traffic(vpn, f.traffic);
            out += ",\"vpn\":";
            out += dump(vpn);
            break; // one capture per tunnel
        }
        if (!t.bastions.empty()) {
            // Only with a failover list: a single bastion's entry stays the original's.
            ordered_json b;
            add_bastion(b, t);
            out += ",\"bastion\":";
            out += dump(b["bastion"]);
            out += ",\"bastion_since\":";
            out += dump(b["bastion_since"]);
        }
        out += '}';
    }
    out += ",\"tunnel_manager_id\":";
    out += text(ctx.tunnel_manager_id);
    out += '}';
    return out;
}

std::string render_tunnels(const RenderContext &ctx, const Snapshot &snap)
{
    ordered_json j;
    j["tunnel_manager_id"] = ctx.tunnel_manager_id;
    j["version"] = ctx.version;
    j["generated_at"] = unix_seconds(snap.now);
    j["created_at"] = unix_seconds(ctx.created_at);
    ordered_json list = ordered_json::array();
    for (const auto &t : snap.tunnels)
        list.push_back(tunnel_json(t, snap.now));
    j["tunnels"] = std::move(list);
    ordered_json alerts = ordered_json::array();
    for (const auto &a : snap.alerts)
        alerts.push_back({{"channel", a.channel},
                          {"sent", a.sent},
                          {"failed", a.failed},
                          {"retried", a.retried},
                          {"dropped", a.dropped},
                          {"suppressed", a.suppressed},
                          {"queued", a.queued}});
    j["alerts"] = std::move(alerts);
    return dump(j);
}

std::string render_healthz(const RenderContext &ctx, const Snapshot &snap)
{
    ordered_json j;
    j["status"] = "ok";
    j["tunnels"] = snap.tunnels.size();
    j["tunnel_manager_id"] = ctx.tunnel_manager_id;
    return dump(j);
}

std::string render_readyz(const RenderContext &ctx, const Snapshot &snap, bool &ready)
{
    ordered_json not_up = ordered_json::array();
    for (const auto &t : snap.tunnels) {
        if (t.state == ManagedState::up || t.state == ManagedState::standby) // a standby is ready to take over
            continue;
        ordered_json e;
        e["name"] = t.name;
        e["state"] = state_key(t.state);
        e["error"] = t.last_error_message;
        not_up.push_back(std::move(e));
    }
    ready = not_up.empty();
    ordered_json j;
    j["ready"] = ready;
    j["tunnels"] = snap.tunnels.size();
    j["not_up"] = std::move(not_up);
    j["tunnel_manager_id"] = ctx.tunnel_manager_id;
    return dump(j);
}

std::string render_metrics(const RenderContext &ctx, const Snapshot &snap, const ProcessMetrics &process)
{
    std::string out;
    out.reserve(1024 + snap.tunnels.size() * 4096);
    if (process.ok) {
        // Named, typed and described as every Prometheus client library exports them.
        const struct {
            const char *name, *type, *help;
            std::string value;
        } standard[] = {
            {"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
             number(process.cpu_seconds)},
            {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
             number(process.resident_bytes)},
            {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", number(process.virtual_bytes)},
            {"process_open_fds", "gauge", "Number of open file descriptors.", number(process.open_fds)},
            {"process_max_fds", "gauge", "Maximum number of open file descriptors.", number(process.max_fds)},
            {"process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
             number(process.start_time_seconds)},
        };
        for (const auto &m : standard)
            Family(out, m.name, m.type, m.help).sample("", m.value);
    }
    {
        Family f(out, "pytun_info", "gauge", "Version and manager id of this connector.");
        f.sample(label("version", ctx.version) + "," + label("tunnel_manager_id", ctx.tunnel_manager_id), "1");
    }
    Family(out, "pytun_start_time_seconds", "gauge", "Unix time the connector started.")
        .sample("", number(unix_seconds(ctx.created_at)));
    Family(out, "pytun_tunnels", "gauge", "Tunnels managed.").sample("", number(std::uint64_t(snap.tunnels.size())));
    Family(out, "pytun_descriptors_limit", "gauge", "The process's file descriptor limit (RLIMIT_NOFILE).")
        .sample("", number(snap.descriptors.limit));
    Family(out, "pytun_descriptors_reserved", "gauge",
           "Descriptors kept for SSH sessions, reconnects, health probes and the status API.")
        .sample("", number(snap.descriptors.reserved));
    Family(out, "pytun_descriptors_forwarded", "gauge", "Forwarded connections holding a descriptor now.")
        .sample("", number(snap.descriptors.forwarded));
    Family(out, "pytun_descriptor_exhaustion_total", "counter",
           "Operations that failed because pytun was out of file descriptors (EMFILE/ENFILE).")
        .sample("", number(snap.descriptors.exhausted_total));

    auto per_tunnel = [&](const char *name, const char *type, const char *help, auto &&value) {
        Family f(out, name, type, help);
        for (const auto &t : snap.tunnels) {
            std::string v = value(t);
            if (!v.empty())
                f.sample(label("tunnel", t.name), v);
        }
    };
    per_tunnel("pytun_tunnel_up", "gauge", "1 when the tunnel serves (state up or degraded).",
               [](const TunnelStatus &t) { return std::string(serving(t.state) ? "1" : "0"); });
    {
        Family f(out, "pytun_tunnel_state", "gauge", "1 for the state the tunnel is in, 0 for the others.");
        for (const auto &t : snap.tunnels)
            for (auto s : k_states)
                f.sample(label("tunnel", t.name) + "," + label("state", state_key(s)), t.state == s ? "1" : "0");
    }
    {
        Family f(out, "pytun_tunnel_bastion_info", "gauge",
                 "1 for the bastion that serves the tunnel (or served it last), by its place in the tunnel's list "
                 "(0: the first).");
        for (const auto &t : snap.tunnels) {
            if (t.bastion.empty())
                continue;
            const auto at = std::find(t.bastions.begin(), t.bastions.end(), t.bastion);
            const auto index = at == t.bastions.end() ? 0 : at - t.bastions.begin();
            f.sample(label("tunnel", t.name) + "," + label("bastion", t.bastion) + "," +
                         label("index", std::to_string(index)),
                     "1");
        }
    }
    per_tunnel("pytun_tunnel_bastion_change_timestamp_seconds", "gauge",
               "Unix time the serving bastion last changed (or first served).",
               [](const TunnelStatus &t) {
                   return !t.bastion.empty() && is_set(t.bastion_since) ? number(unix_seconds(t.bastion_since)) : "";
               });
    per_tunnel("pytun_tunnel_state_change_timestamp_seconds", "gauge", "Unix time of the last state change.",
               [](const TunnelStatus &t) { return is_set(t.state_since) ? number(unix_seconds(t.state_since)) : ""; });
    per_tunnel("pytun_tunnel_takeovers_total", "counter",
               "Times this connector, as a standby (standby = true), bound the port another connector held.",
               [](const TunnelStatus &t) { return number(t.takeovers); });
    per_tunnel("pytun_tunnel_starts_total", "counter", "Start attempts (the original's started_times).",
               [](const TunnelStatus &t) { return number(t.started_times); });
    per_tunnel("pytun_tunnel_restarts_total", "counter", "Start attempts after the first one.",
               [](const TunnelStatus &t) { return number(t.started_times > 0 ? t.started_times - 1 : 0); });
    per_tunnel("pytun_tunnel_last_start_timestamp_seconds", "gauge", "Unix time of the last start attempt.",
               [](const TunnelStatus &t) { return is_set(t.last_start) ? number(unix_seconds(t.last_start)) : ""; });
    per_tunnel("pytun_tunnel_connections_active", "gauge", "Forwarded connections open now.",
               [](const TunnelStatus &t) { return number(t.traffic.connections_active); });
    per_tunnel("pytun_tunnel_connections_total", "counter", "Forwarded connections in the current session.",
               [](const TunnelStatus &t) { return number(t.traffic.connections_total); });
    per_tunnel("pytun_tunnel_connections_failed_total", "counter",
               "Forwarded connections whose local service refused or timed out (current session).",
               [](const TunnelStatus &t) { return number(t.traffic.connections_failed); });
    per_tunnel("pytun_tunnel_connections_refused_total", "counter",
               "Forwarded connections turned away: max_connections, or descriptors kept for the other tunnels "
               "(current session).",
               [](const TunnelStatus &t) { return number(t.traffic.connections_refused); });
    per_tunnel("pytun_tunnel_received_bytes_total", "counter",
               "Bytes received from the bastion and relayed to the local service (current session).",
               [](const TunnelStatus &t) { return number(t.traffic.bytes_to_service); });
    per_tunnel("pytun_tunnel_sent_bytes_total", "counter",
               "Bytes from the local service sent to the bastion (current session).",
               [](const TunnelStatus &t) { return number(t.traffic.bytes_from_service); });
    {
        Family f(out, "pytun_tunnel_connection_setup_seconds", "histogram",
                 "Time from a forwarded connection's arrival to its local connect being done (current session).");
        // The bucket labels are the same for every tunnel: format them once.
        static const auto le = [] {
            std::array<std::string, SetupTimeHistogram::bounds.size() + 1> labels;
            for (std::size_t i = 0; i < labels.size(); ++i)
                labels[i] = "," + label("le", i < SetupTimeHistogram::bounds.size()
                                                  ? number(SetupTimeHistogram::bounds[i]) : std::string("+Inf"));
            return labels;
        }();
        for (const auto &t : snap.tunnels) {
            const SetupTimeHistogram &h = t.traffic.connection_setup;
            const std::string tunnel = label("tunnel", t.name);
            std::uint64_t cumulative = 0;
            for (std::size_t i = 0; i < le.size(); ++i) {
                cumulative += h.counts[i];
                f.sample_of("pytun_tunnel_connection_setup_seconds_bucket", tunnel + le[i], number(cumulative));
            }
            f.sample_of("pytun_tunnel_connection_setup_seconds_sum", tunnel, number(h.sum_seconds));
            f.sample_of("pytun_tunnel_connection_setup_seconds_count", tunnel, number(cumulative));
        }
    }
    per_tunnel("pytun_tunnel_probe_rtt_seconds", "gauge", "Round trip of the last end-to-end SSH health probe.",
               [](const TunnelStatus &t) {
                   return t.probe_rtt.count() >= 0 ? number(static_cast<double>(t.probe_rtt.count()) / 1e6) : "";
               });
    per_tunnel("pytun_tunnel_service_up", "gauge",
               "1 when the local service accepted the last TCP probe (absent before the first).",
               [](const TunnelStatus &t) {
                   return t.service_checked ? std::string(t.service_reachable ? "1" : "0") : std::string();
               });
    per_tunnel("pytun_tunnel_port_held", "gauge", "1 while the bastion still holds the port for another session.",
               [](const TunnelStatus &t) { return std::string(t.port_held ? "1" : "0"); });
    {
        // Why a tunnel does not serve, as a label an alert can match (host-key
        // and key errors need a human, a lost bastion does not); one series
        // per tunnel at most, and none while it serves, so a fixed problem
        // ends the alert at once.
        Family f(out, "pytun_tunnel_last_error", "gauge",
                 "1 while the tunnel does not serve, labelled with the code of its last error.");
        for (const auto &t : snap.tunnels) {
            const char *reason = error_reason(t.last_error);
            if (!serving(t.state) && *reason)
                f.sample(label("tunnel", t.name) + "," + label("reason", reason), "1");
        }
    }
    per_tunnel("pytun_tunnel_sessions", "gauge",
               "SSH connections to the bastion now (the tunnel's own, and extra ones for bursts of channel opens).",
               [](const TunnelStatus &t) { return number(std::uint64_t(t.sessions)); });

    // Per forward: labels tunnel and forward (its description, made unique
    // within the tunnel), computed once for every family.
    std::vector<std::vector<std::string>> forward_labels;
    forward_labels.reserve(snap.tunnels.size());
    for (const auto &t : snap.tunnels) {
        auto &labels = forward_labels.emplace_back();
        std::set<std::string> seen;
        for (std::size_t i = 0; i < t.forwards.size(); ++i) {
            std::string name = t.forwards[i].description;
            if (!seen.insert(name).second) {
                name += " #" + std::to_string(i + 1);
                seen.insert(name);
            }
            labels.push_back(label("tunnel", t.name) + "," + label("forward", name));
        }
    }
    auto per_forward = [&](const char *name, const char *type, const char *help, auto &&value) {
        Family f(out, name, type, help);
        for (std::size_t i = 0; i < snap.tunnels.size(); ++i) {
            const auto &forwards = snap.tunnels[i].forwards;
            for (std::size_t k = 0; k < forwards.size(); ++k) {
                std::string v = value(forwards[k]);
                if (!v.empty())
                    f.sample(forward_labels[i][k], v);
            }
        }
    };
    per_forward("pytun_forward_up", "gauge", "1 when the forward serves (listens, here or on the bastion).",
                [](const ForwardStatus &f) { return std::string(f.serving ? "1" : "0"); });
    per_forward("pytun_forward_listen_port", "gauge",
                "The port the forward listens on (on the bastion for remote forwards), while it serves.",
                [](const ForwardStatus &f) { return f.serving ? number(std::uint64_t(f.bound_port)) : std::string(); });
    per_forward("pytun_forward_connections_active", "gauge", "Connections of the forward open now.",
                [](const ForwardStatus &f) { return number(f.traffic.connections_active); });
    per_forward("pytun_forward_connections_total", "counter", "Connections of the forward (current session).",
                [](const ForwardStatus &f) { return number(f.traffic.connections_total); });
    per_forward("pytun_forward_connections_failed_total", "counter",
                "Connections of the forward that could not be connected: refused, unreachable, timed out "
                "(current session).",
                [](const ForwardStatus &f) { return number(f.traffic.connections_failed); });
    per_forward("pytun_forward_connections_refused_total", "counter",
                "Connections of the forward turned away by max_connections or the descriptor share (current "
                "session).",
                [](const ForwardStatus &f) { return number(f.traffic.connections_refused); });
    per_forward("pytun_forward_received_bytes_total", "counter",
                "Bytes of the forward received from the bastion and relayed on this side (current session).",
                [](const ForwardStatus &f) { return number(f.traffic.bytes_to_service); });
    per_forward("pytun_forward_sent_bytes_total", "counter",
                "Bytes of the forward from this side sent to the bastion (current session).",
                [](const ForwardStatus &f) { return number(f.traffic.bytes_from_service); });

    // VPN forwards only: the capture, counted since the tunnel started (it
    // outlives sessions); its DNS relay's counts when DNS is captured.
    {
        Family f(out, "pytun_forward_capture_installed", "gauge",
                 "1 while the VPN capture's firewall rules are in place, labelled with its method (nft or nat).");
        for (std::size_t i = 0; i < snap.tunnels.size(); ++i) {
            const auto &forwards = snap.tunnels[i].forwards;
            for (std::size_t k = 0; k < forwards.size(); ++k)
                if (const auto &c = forwards[k].capture)
                    f.sample(forward_labels[i][k] + "," + label("method", c->method), c->installed ? "1" : "0");
        }
    }
    auto per_capture = [&](const char *name, const char *help, auto &&value) {
        per_forward(name, "counter", help, [&value](const ForwardStatus &f) {
            return f.capture ? number(static_cast<std::uint64_t>(value(*f.capture))) : std::string();
        });
    };
    per_capture("pytun_forward_captured_connections_total",
                "Connections the VPN capture redirected to its listener (since the tunnel started).",
                [](const CaptureStatus &c) { return c.captured; });
    {
        Family f(out, "pytun_forward_capture_resets_total", "counter",
                 "Captured connections reset at once (since the tunnel started): reason tunnel_down (no SSH "
                 "session, fail-closed) or not_redirected (reached the listener without a capture rule).");
        for (std::size_t i = 0; i < snap.tunnels.size(); ++i) {
            const auto &forwards = snap.tunnels[i].forwards;
            for (std::size_t k = 0; k < forwards.size(); ++k) {
                const auto &c = forwards[k].capture;
                if (!c)
                    continue;
                f.sample(forward_labels[i][k] + "," + label("reason", "tunnel_down"), number(c->reset_while_down));
                f.sample(forward_labels[i][k] + "," + label("reason", "not_redirected"), number(c->not_redirected));
            }
        }
    }
    auto per_dns = [&](const char *name, const char *help, std::uint64_t CaptureDnsStatus::*field) {
        per_forward(name, "counter", help, [field](const ForwardStatus &f) {
            return f.capture && f.capture->dns ? number((*f.capture->dns).*field) : std::string();
        });
    };
    per_dns("pytun_forward_dns_queries_total", "DNS queries the VPN capture's relay received (UDP and TCP).",
            &CaptureDnsStatus::queries);
    per_dns("pytun_forward_dns_answered_total", "DNS answers of the server's resolver passed on.",
            &CaptureDnsStatus::answered);
    per_dns("pytun_forward_dns_truncated_total", "DNS answers cut for UDP (TC set; the client asks again over TCP).",
            &CaptureDnsStatus::truncated);
    per_dns("pytun_forward_dns_servfail_total",
            "DNS queries answered SERVFAIL by the relay: no tunnel, timeout, overload, channel lost.",
            &CaptureDnsStatus::servfail);
    per_dns("pytun_forward_dns_timeouts_total", "DNS queries the server's resolver did not answer in time.",
            &CaptureDnsStatus::timeouts);
    per_dns("pytun_forward_dns_rejected_total",
            "Malformed or unsupported DNS queries: answered FORMERR, NOTIMP or REFUSED, or dropped.",
            &CaptureDnsStatus::rejected);

    auto per_channel = [&](const char *name, const char *type, const char *help, auto &&value) {
        Family f(out, name, type, help);
        for (const auto &a : snap.alerts)
            f.sample(label("channel", a.channel), number(static_cast<std::uint64_t>(value(a))));
    };
    per_channel("pytun_alerts_sent_total", "counter", "Alerts delivered.",
                [](const AlertChannelStats &a) { return a.sent; });
    per_channel("pytun_alerts_failed_total", "counter", "Alerts given up on.",
                [](const AlertChannelStats &a) { return a.failed; });
    per_channel("pytun_alerts_dropped_total", "counter", "Alerts dropped from a full queue or at stop.",
                [](const AlertChannelStats &a) { return a.dropped; });
    per_channel("pytun_alerts_retried_total", "counter", "Alert attempts that failed and were retried.",
                [](const AlertChannelStats &a) { return a.retried; });
    per_channel("pytun_alerts_suppressed_total", "counter", "Alerts held back by the rate limit.",
                [](const AlertChannelStats &a) { return a.suppressed; });
    per_channel("pytun_alerts_queued", "gauge", "Alerts waiting to be sent.",
                [](const AlertChannelStats &a) { return a.queued; });
    return out;
}

} // namespace pytun::detail
