// SPDX-License-Identifier: MIT
// Unit tests of the inspection API's parts: secret redaction, private-key
// detection, request-head checks, Prometheus text and JSON shapes, the
// set-up time histogram and the process metrics.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include <pytun/error.h>

#include "http_util.h"
#include "observe/archive.h"
#include "observe/http_guard.h"
#include "observe/redact.h"
#include "observe/render.h"
#include "util/histogram.h"

using namespace pytun::detail;
namespace h = pytun::test::http;

TEST_CASE("private keys are recognised by content")
{
    CHECK(private_key_kind("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n") ==
          "OpenSSH private key");
    CHECK(private_key_kind("junk\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n") == "PEM private key (RSA PRIVATE KEY)");
    CHECK(private_key_kind("-----BEGIN EC PRIVATE KEY-----\n") == "PEM private key (EC PRIVATE KEY)");
    CHECK(private_key_kind("-----BEGIN PRIVATE KEY-----\nMC4CAQ\n") == "PKCS#8 private key");
    CHECK(private_key_kind("-----BEGIN ENCRYPTED PRIVATE KEY-----\n") == "encrypted PKCS#8 private key");
    CHECK(private_key_kind("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n") == "PuTTY private key");
    CHECK(private_key_kind("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\n") == "SSH2 private key");
    CHECK(private_key_kind(std::string_view("openssh-key-v1\0\0\0\0", 18)) == "OpenSSH private key (binary)");
    // Public material is not a private key.
    CHECK(private_key_kind("-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n").empty());
    CHECK(private_key_kind("-----BEGIN CERTIFICATE-----\n").empty());
    CHECK(private_key_kind("ssh-ed25519 AAAAC3Nza user@host\n").empty());
    CHECK(private_key_kind("[tunnel]\nkeyfile = id_ed25519\n").empty());
}

TEST_CASE("binary content is recognised")
{
    CHECK(looks_binary(std::string_view("\x30\x82\x04\xa4\x02\x01\x00", 7)));
    CHECK(looks_binary("abc\xff\xfe"));
    CHECK(!looks_binary("plain ascii\n\ttabs\r\n"));
    CHECK(!looks_binary("utf-8: caf\xc3\xa9 \xe2\x86\x92\n"));
    CHECK(looks_binary("truncated \xe2\x86"));
}

TEST_CASE("secret key names")
{
    for (const char *k : {"smtp_password", "http_password", "signature", "inspection_token", "SMTP_PASSWORD",
                          "key_passphrase", "api_key", "alert.smtp_password", "\"db_secret\"", "client_secret"})
        CHECK_MESSAGE(is_secret_key(k), k);
    for (const char *k : {"smtp_login", "http_user", "keyfile", "server_key", "tunnel_name", "smtp_hostname",
                          "mac_address_pub_key", "port"})
        CHECK_MESSAGE(!is_secret_key(k), k);
}

TEST_CASE("INI secrets are replaced, everything else kept")
{
    const std::string ini = "[pytun]\n"
                            "tunnel_manager_id = m1\n"
                            "smtp_login=alerts@example.com\n"
                            "smtp_password=hunter2\n"
                            "SMTP_PASSWORD : Hunter3 # inline comment\n"
                            "; smtp_password = commented out stays\n"
                            "http_password = \"quoted pass\"\n"
                            "http_url = https://bob:urlpass@hooks.example.com/x\n"
                            "signature=eyJwYXlsb2FkIjoi\n"
                            "  continued-signature-part\n"
                            "inspection_token = tok-123\n";
    std::vector<Redaction> r;
    const std::string out = redact_config(ini, r);
    for (const char *secret : {"hunter2", "Hunter3", "quoted pass", "urlpass", "eyJwYXlsb2FkIjoi",
                               "continued-signature-part", "tok-123"})
        CHECK_MESSAGE(out.find(secret) == std::string::npos, secret);
    CHECK(out.find("tunnel_manager_id = m1\n") != std::string::npos);
    CHECK(out.find("smtp_login=alerts@example.com\n") != std::string::npos);
    CHECK(out.find("smtp_password=***REDACTED***\n") != std::string::npos);
    CHECK(out.find("http_password = \"***REDACTED***\"\n") != std::string::npos);
    CHECK(out.find("https://bob:***REDACTED***@hooks.example.com/x") != std::string::npos);
    CHECK(out.find("; smtp_password = commented out stays") != std::string::npos);
    REQUIRE(r.size() == 6);
    CHECK(r[0].line == 4);
    CHECK(r[0].key == "smtp_password");
}

TEST_CASE("TOML secrets are replaced, also in inline tables and multi-line strings")
{
    const std::string toml = "[pytun]\n"
                             "smtp_password = \"toml-secret\"\n"
                             "alert.http_password = 'single'\n"
                             "smtp = { host = \"mail\", password = \"inline-secret\", port = 25 }\n"
                             "signature = \"\"\"\n"
                             "multi-line-secret\n"
                             "\"\"\"\n"
                             "tunnel_dirs = \"configs\"\n";
    std::vector<Redaction> r;
    const std::string out = redact_config(toml, r);
    for (const char *secret : {"toml-secret", "single", "inline-secret", "multi-line-secret"})
        CHECK_MESSAGE(out.find(secret) == std::string::npos, secret);
    CHECK(out.find("host = \"mail\"") != std::string::npos);
    CHECK(out.find("port = 25") != std::string::npos);
    CHECK(out.find("tunnel_dirs = \"configs\"") != std::string::npos);
    CHECK(r.size() == 4);
}

TEST_CASE("request targets: path tricks are refused")
{
    GuardLimits limits;
    CHECK(check_target("/", limits).status == 0);
    CHECK(check_target("/status?x=1", limits).status == 0);
    CHECK(check_target("/api/v1/tunnels", limits).status == 0);
    CHECK(check_target("/a%20b", limits).status == 0);
    CHECK(check_target("/../etc/passwd", limits).status == 400);
    CHECK(check_target("/configs/../../etc", limits).status == 400);
    CHECK(check_target("/%2e%2e/etc/passwd", limits).status == 400);
    CHECK(check_target("/configs/..%2f..%2fetc", limits).status == 400);
    CHECK(check_target("/configs%2Fx", limits).status == 400);
    CHECK(check_target("/a%5cb", limits).status == 400);
    CHECK(check_target("/a%00b", limits).status == 400);
    CHECK(check_target("/a\\b", limits).status == 400);
    CHECK(check_target("/a%zz", limits).status == 400);
    CHECK(check_target("/a%2", limits).status == 400);
    CHECK(check_target("http://evil/", limits).status == 400);
    CHECK(check_target("*", limits).status == 400);
    CHECK(check_target("/" + std::string(3000, 'a'), limits).status == 414);
}

TEST_CASE("request heads: syntax and header count")
{
    GuardLimits limits;
    limits.max_headers = 3;
    CHECK(check_head("GET / HTTP/1.1\r\nHost: x\r\n\r\n", limits).status == 0);
    CHECK(check_head("GET / HTTP/1.0\n\n", limits).status == 0);
    CHECK(check_head("GET / HTTP/2.0\r\n\r\n", limits).status == 505);
    CHECK(check_head("GET /\r\n\r\n", limits).status == 400);
    CHECK(check_head("GET  / HTTP/1.1\r\n\r\n", limits).status == 400);
    CHECK(check_head("get / HTTP/1.1\r\n\r\n", limits).status == 400);
    CHECK(check_head("GET / FTP/1.1\r\n\r\n", limits).status == 400);
    CHECK(check_head("GET / HTTP/1.1\r\nno colon\r\n\r\n", limits).status == 400);
    CHECK(check_head("GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", limits).status == 400);
    CHECK(check_head("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits).status == 0);
    CHECK(check_head("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits).status == 431);
    CHECK(check_head("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n", limits).status == 0);
    CHECK(check_head("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", limits).status == 400);
    CHECK(check_head("POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", limits).status == 400);
    CHECK(check_head("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", limits).status == 400);
    CHECK(check_head("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", limits).status ==
          400);
}

namespace {

Snapshot sample_snapshot()
{
    Snapshot s;
    s.now = std::chrono::system_clock::now();
    pytun::TunnelStatus a;
    a.name = "ldap \"main\"\\";
    a.config_path = "/etc/pytun/configs/ldap.ini";
    a.remote_host = "ldap.local";
    a.remote_port = 389;
    a.state = pytun::ManagedState::up;
    a.state_since = s.now - std::chrono::seconds(90);
    a.started_times = 3;
    a.last_start = s.now - std::chrono::seconds(90);
    a.service_checked = true;
    a.service_reachable = true;
    a.probe_rtt = std::chrono::microseconds(1500);
    a.traffic.bytes_to_service = 1234;
    a.traffic.bytes_from_service = 99;
    // Three connections set up: 0.3 ms, 2 ms and 7 s (beyond the last bound).
    a.traffic.connection_setup.counts[0] = 1;
    a.traffic.connection_setup.counts[2] = 1;
    a.traffic.connection_setup.counts.back() = 1;
    a.traffic.connection_setup.count = 3;
    a.traffic.connection_setup.sum_seconds = 7.0023;
    s.tunnels.push_back(a);
    pytun::TunnelStatus b;
    b.name = "web";
    b.remote_host = "10.0.0.5";
    b.remote_port = 80;
    b.state = pytun::ManagedState::backing_off;
    b.last_error = pytun::make_error_code(pytun::Errc::bastion_unreachable);
    b.last_error_message = "connection refused";
    b.last_error_time = s.now - std::chrono::seconds(5);
    b.next_attempt = s.now + std::chrono::seconds(4);
    s.tunnels.push_back(b);
    s.alerts.push_back({"email", 2, 1, 0, 3, 0, 0});
    return s;
}

RenderContext sample_context()
{
    return {"manager-1", "0.1.0", "", std::chrono::system_clock::now()};
}

} // namespace

ProcessMetrics sample_process()
{
    ProcessMetrics p;
    p.ok = true;
    p.cpu_seconds = 1.25;
    p.resident_bytes = 9 << 20;
    p.virtual_bytes = 300 << 20;
    p.open_fds = 17;
    p.max_fds = 1024;
    p.start_time_seconds = 1795352469.5;
    return p;
}

TEST_CASE("metrics: strict line format, escaping, values")
{
    const std::string text = render_metrics(sample_context(), sample_snapshot(), sample_process());
    CHECK(h::bad_metrics_line(text) == "");
    CHECK(h::metric(text, "pytun_tunnel_up{tunnel=\"web\"}") == 0);
    CHECK(h::metric(text, "pytun_tunnel_up{tunnel=\"ldap \\\"main\\\"\\\\\"}") == 1);
    CHECK(h::metric(text, "pytun_tunnel_state{tunnel=\"web\",state=\"backing_off\"}") == 1);
    CHECK(h::metric(text, "pytun_tunnel_restarts_total{tunnel=\"ldap \\\"main\\\"\\\\\"}") == 2);
    CHECK(h::metric(text, "pytun_tunnel_probe_rtt_seconds{tunnel=\"ldap \\\"main\\\"\\\\\"}") == doctest::Approx(0.0015));
    CHECK(h::metric(text, "pytun_tunnel_received_bytes_total{tunnel=\"ldap \\\"main\\\"\\\\\"}") == 1234);
    CHECK(h::metric(text, "pytun_tunnel_sent_bytes_total{tunnel=\"ldap \\\"main\\\"\\\\\"}") == 99);
    CHECK(h::metric(text, "pytun_alerts_dropped_total{channel=\"email\"}") == 3);
    // No probe yet: no sample rather than a made-up value.
    CHECK(text.find("pytun_tunnel_probe_rtt_seconds{tunnel=\"web\"}") == std::string::npos);
    // The old names are gone (docs/migration.md lists old -> new).
    CHECK(text.find("pytun_tunnel_bytes_in_total") == std::string::npos);
    CHECK(text.find("pytun_tunnel_bytes_out_total") == std::string::npos);
}

TEST_CASE("metrics: pytun_tunnel_last_error names the code of a tunnel that does not serve, and only then")
{
    Snapshot snap = sample_snapshot();
    // web backs off after bastion_unreachable; a third tunnel's bastion
    // presents a changed host key; ldap serves, with an old error kept.
    pytun::TunnelStatus changed = snap.tunnels[1];
    changed.name = "crm";
    changed.last_error = pytun::make_error_code(pytun::Errc::host_key_changed);
    snap.tunnels.push_back(changed);
    snap.tunnels[0].last_error = pytun::make_error_code(pytun::Errc::key_not_authorized);
    const std::string text = render_metrics(sample_context(), snap, sample_process());
    CHECK(h::bad_metrics_line(text) == "");
    CHECK(text.find("# TYPE pytun_tunnel_last_error gauge\n") != std::string::npos);
    CHECK(h::metric(text, "pytun_tunnel_last_error{tunnel=\"crm\",reason=\"host_key_changed\"}") == 1);
    CHECK(h::metric(text, "pytun_tunnel_last_error{tunnel=\"web\",reason=\"bastion_unreachable\"}") == 1);
    // A serving tunnel has no series, whatever its last error was.
    CHECK(text.find("pytun_tunnel_last_error{tunnel=\"ldap") == std::string::npos);
    // One series per tunnel: crm's reason is not also reported under another name.
    CHECK(text.find("pytun_tunnel_last_error{tunnel=\"crm\",reason=\"bastion_unreachable\"}") == std::string::npos);
    // Stopped on request is no failure; an error of another category has no stable name.
    snap.tunnels[1].last_error = pytun::make_error_code(pytun::Errc::stopped);
    snap.tunnels[2].last_error = std::make_error_code(std::errc::connection_refused);
    const std::string quiet = render_metrics(sample_context(), snap, sample_process());
    CHECK(quiet.find("pytun_tunnel_last_error{") == std::string::npos);
}

TEST_CASE("metrics: the connection set-up histogram is cumulative and ends in +Inf, _count and _sum")
{
    const std::string text = render_metrics(sample_context(), sample_snapshot(), sample_process());
    const std::string ldap = "tunnel=\"ldap \\\"main\\\"\\\\\"";
    auto bucket = [&](const std::string &le) {
        return h::metric(text, "pytun_tunnel_connection_setup_seconds_bucket{" + ldap + ",le=\"" + le + "\"}");
    };
    CHECK(text.find("# TYPE pytun_tunnel_connection_setup_seconds histogram\n") != std::string::npos);
    CHECK(bucket("0.0005") == 1);
    CHECK(bucket("0.001") == 1);
    CHECK(bucket("0.0025") == 2);
    CHECK(bucket("5") == 2);
    CHECK(bucket("+Inf") == 3);
    CHECK(h::metric(text, "pytun_tunnel_connection_setup_seconds_count{" + ldap + "}") == 3);
    CHECK(h::metric(text, "pytun_tunnel_connection_setup_seconds_sum{" + ldap + "}") == doctest::Approx(7.0023));
    // A tunnel without connections has all-zero buckets, not missing ones.
    CHECK(h::metric(text, "pytun_tunnel_connection_setup_seconds_bucket{tunnel=\"web\",le=\"+Inf\"}") == 0);
    CHECK(h::metric(text, "pytun_tunnel_connection_setup_seconds_count{tunnel=\"web\"}") == 0);
}

TEST_CASE("metrics: the standard process_* metrics, only when /proc could be read")
{
    const std::string text = render_metrics(sample_context(), sample_snapshot(), sample_process());
    CHECK(h::metric(text, "process_cpu_seconds_total") == doctest::Approx(1.25));
    CHECK(h::metric(text, "process_resident_memory_bytes") == 9 << 20);
    CHECK(h::metric(text, "process_open_fds") == 17);
    CHECK(h::metric(text, "process_max_fds") == 1024);
    CHECK(h::metric(text, "process_start_time_seconds") == doctest::Approx(1795352469.5));
    CHECK(text.find("# TYPE process_cpu_seconds_total counter\n") != std::string::npos);
    const std::string without = render_metrics(sample_context(), sample_snapshot(), ProcessMetrics{});
    CHECK(without.find("process_") == std::string::npos);

    // This process, read for real: plausible values.
    const ProcessMetrics self = read_process_metrics();
    REQUIRE(self.ok);
    CHECK(self.resident_bytes > (1u << 20));
    CHECK(self.open_fds >= 3);
    CHECK(self.max_fds >= self.open_fds);
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    CHECK(self.start_time_seconds <= now + 1);
    CHECK(self.start_time_seconds > now - 3600);
    CHECK(self.cpu_seconds >= 0);
}

TEST_CASE("the set-up time histogram counts each observation in its bucket, lock-free")
{
    pytun::detail::AtomicSetupTimeHistogram h;
    h.observe(std::chrono::microseconds(300));   // <= 0.0005
    h.observe(std::chrono::microseconds(500));   // == 0.0005: "le" is inclusive
    h.observe(std::chrono::milliseconds(30));    // <= 0.05
    h.observe(std::chrono::seconds(60));         // the rest
    const pytun::SetupTimeHistogram r = h.read();
    CHECK(r.counts[0] == 2);
    CHECK(r.counts[6] == 1);
    CHECK(r.counts.back() == 1);
    CHECK(r.count == 4);
    CHECK(r.sum_seconds == doctest::Approx(60.0308));
}

TEST_CASE("status JSON keeps the original's shape; status_data falls back to the name")
{
    auto j = nlohmann::json::parse(render_status(sample_context(), sample_snapshot()));
    CHECK(j["created_at"].is_number_float());
    CHECK(j["mac_address"].is_null());
    CHECK(j["status_data"].contains("/etc/pytun/configs/ldap.ini"));
    CHECK(j["status_data"].contains("web"));
    CHECK(j["status_data"]["web"]["last_start"].is_number_float());
    CHECK(j["web"]["status"] == false);
    CHECK(j["tunnel_manager_id"] == "manager-1");
    // Two tunnels of one file (TOML) both keep their entry.
    auto shared = sample_snapshot();
    shared.tunnels[1].config_path = shared.tunnels[0].config_path;
    auto sj = nlohmann::json::parse(render_status(sample_context(), shared));
    CHECK(sj["status_data"].size() == 2);
    CHECK(sj["status_data"].contains("/etc/pytun/configs/ldap.ini#web"));
    // Names and hosts with quotes or control characters stay valid JSON.
    auto odd = sample_snapshot();
    odd.tunnels[1].name = "we\"b\n";
    odd.tunnels[1].remote_host = "h\\x";
    auto oj = nlohmann::json::parse(render_status(sample_context(), odd));
    CHECK(oj["we\"b\n"]["remote_host"] == "h\\x");
    // A tunnel named like a fixed key cannot break the reply.
    auto snap = sample_snapshot();
    snap.tunnels[1].name = "tunnel_manager_id";
    auto k = nlohmann::json::parse(render_status(sample_context(), snap));
    CHECK(k["tunnel_manager_id"] == "manager-1");
}

TEST_CASE("the JSON API uses the metrics' units: seconds, bytes; errors say when")
{
    const Snapshot snap = sample_snapshot();
    auto j = nlohmann::json::parse(render_tunnels(sample_context(), snap));
    const auto &ldap = j["tunnels"][0];
    const auto &web = j["tunnels"][1];
    CHECK(ldap["probe_rtt_seconds"].get<double>() == doctest::Approx(0.0015));
    CHECK_FALSE(ldap.contains("probe_rtt_ms"));
    CHECK(ldap["connection_setup_seconds"]["count"] == 3);
    CHECK(ldap["connection_setup_seconds"]["sum"].get<double>() == doctest::Approx(7.0023));
    CHECK(ldap["bytes"]["to_service"] == 1234);
    CHECK(web["probe_rtt_seconds"].is_null());
    CHECK(web["last_error"]["time"].get<double>() == doctest::Approx(unix_seconds(snap.now) - 5).epsilon(1e-12));
    CHECK(web["last_error"]["message"] == "connection refused");
}

namespace {

/// A tunnel of forwards only: a local forward that serves and carried
/// traffic, a SOCKS forward whose port is busy, two reverse SOCKS forwards
/// that print alike; on two SSH sessions.
pytun::TunnelStatus forwards_tunnel(pytun::ManagedState state)
{
    pytun::TunnelStatus t;
    t.name = "db";
    t.config_path = "/etc/pytun/configs/db.ini";
    t.server_host = "bastion";
    t.server_port = 22;
    t.state = state;
    t.sessions = 2;
    pytun::ForwardStatus l;
    l.description = "L 127.0.0.1:5432 -> db.internal:5432";
    l.serving = true;
    l.bound_port = 5432;
    l.traffic.connections_active = 1;
    l.traffic.connections_total = 7;
    l.traffic.connections_failed = 2;
    l.traffic.bytes_to_service = 4000;
    l.traffic.bytes_from_service = 300;
    l.traffic.connection_setup.count = 5;
    l.traffic.connection_setup.sum_seconds = 0.25;
    pytun::ForwardStatus d;
    d.description = "D 127.0.0.1:1080 (SOCKS)";
    d.error = "cannot listen on 127.0.0.1:1080: Address already in use";
    pytun::ForwardStatus r;
    r.description = "R localhost:0 (SOCKS)";
    r.serving = true;
    r.bound_port = 41000;
    pytun::ForwardStatus r2 = r;
    r2.bound_port = 41001;
    t.forwards = {l, d, r, r2};
    return t;
}

} // namespace

TEST_CASE("forwards in the JSON API: description, serving, bound port, error, connections, bytes; sessions")
{
    Snapshot snap = sample_snapshot();
    snap.tunnels.push_back(forwards_tunnel(pytun::ManagedState::up));
    auto j = nlohmann::json::parse(render_tunnels(sample_context(), snap));
    const auto &db = j["tunnels"][2];
    CHECK(db["sessions"] == 2);
    CHECK(db["remote_host"] == "");
    REQUIRE(db["forwards"].size() == 4);
    const auto &l = db["forwards"][0];
    CHECK(l["description"] == "L 127.0.0.1:5432 -> db.internal:5432");
    CHECK(l["serving"] == true);
    CHECK(l["bound_port"] == 5432);
    CHECK(l["error"].is_null());
    CHECK(l["connections"] == nlohmann::json{{"active", 1}, {"total", 7}, {"failed", 2}, {"refused", 0}});
    CHECK(l["bytes"] == nlohmann::json{{"to_service", 4000}, {"from_service", 300}});
    CHECK(l["connection_setup_seconds"]["count"] == 5);
    const auto &d = db["forwards"][1];
    CHECK(d["serving"] == false);
    CHECK(d["bound_port"].is_null());
    CHECK(d["error"] == "cannot listen on 127.0.0.1:1080: Address already in use");
    // A tunnel of the original kind lists no forwards it does not have.
    CHECK(j["tunnels"][0]["forwards"].empty());
}

TEST_CASE("forwards in /metrics: pytun_forward_* with tunnel and forward labels, pytun_tunnel_sessions")
{
    Snapshot snap = sample_snapshot();
    snap.tunnels.push_back(forwards_tunnel(pytun::ManagedState::up));
    const std::string text = render_metrics(sample_context(), snap, sample_process());
    CHECK(h::bad_metrics_line(text) == "");
    const std::string l = "{tunnel=\"db\",forward=\"L 127.0.0.1:5432 -> db.internal:5432\"}";
    const std::string d = "{tunnel=\"db\",forward=\"D 127.0.0.1:1080 (SOCKS)\"}";
    CHECK(h::metric(text, "pytun_forward_up" + l) == 1);
    CHECK(h::metric(text, "pytun_forward_up" + d) == 0);
    CHECK(h::metric(text, "pytun_forward_listen_port" + l) == 5432);
    CHECK(text.find("pytun_forward_listen_port" + d) == std::string::npos); // not serving: no port
    CHECK(h::metric(text, "pytun_forward_connections_active" + l) == 1);
    CHECK(h::metric(text, "pytun_forward_connections_total" + l) == 7);
    CHECK(h::metric(text, "pytun_forward_connections_failed_total" + l) == 2);
    CHECK(h::metric(text, "pytun_forward_connections_refused_total" + l) == 0);
    CHECK(h::metric(text, "pytun_forward_received_bytes_total" + l) == 4000);
    CHECK(h::metric(text, "pytun_forward_sent_bytes_total" + l) == 300);
    CHECK(h::metric(text, "pytun_tunnel_sessions{tunnel=\"db\"}") == 2);
    // Two forwards that print alike stay two series.
    CHECK(h::metric(text, "pytun_forward_listen_port{tunnel=\"db\",forward=\"R localhost:0 (SOCKS)\"}") == 41000);
    CHECK(h::metric(text, "pytun_forward_listen_port{tunnel=\"db\",forward=\"R localhost:0 (SOCKS) #4\"}") ==
          41001);
    CHECK(text.find("# TYPE pytun_forward_sent_bytes_total counter\n") != std::string::npos);
}

namespace {

/// A VPN tunnel: its capture installed with nft on port 12300, counts from
/// earlier sessions (captured 9, 2 reset while down, 1 not redirected), this
/// session's traffic (6 connections, 1 refused by the far side); DNS
/// captured when `dns`.
pytun::TunnelStatus vpn_tunnel(bool dns)
{
    pytun::TunnelStatus t;
    t.name = "corp";
    t.config_path = "/etc/pytun/configs/corp.ini";
    t.server_host = "bastion";
    t.server_port = 22;
    t.state = pytun::ManagedState::up;
    pytun::ForwardStatus v;
    v.description = "VPN 10.0.0.0/8 -x 10.1.0.0/16";
    v.serving = true;
    v.bound_port = 12300;
    v.traffic.connections_active = 2;
    v.traffic.connections_total = 6;
    v.traffic.connections_failed = 1;
    v.traffic.bytes_to_service = 70000;
    v.traffic.bytes_from_service = 900;
    pytun::CaptureStatus c;
    c.installed = true;
    c.method = "nft";
    c.port = 12300;
    c.captured = 9;
    c.reset_while_down = 2;
    c.not_redirected = 1;
    if (dns)
        c.dns = pytun::CaptureDnsStatus{.queries = 40, .answered = 35, .truncated = 3, .servfail = 4, .timeouts = 1,
                                          .rejected = 1};
    v.capture = c;
    t.forwards = {v};
    return t;
}

} // namespace

TEST_CASE("a VPN forward in /api/v1/tunnels, /status and /metrics: the capture's state and counts, its DNS")
{
    Snapshot snap = sample_snapshot();
    snap.tunnels.push_back(vpn_tunnel(false));
    snap.tunnels.push_back(forwards_tunnel(pytun::ManagedState::up));

    auto api = nlohmann::json::parse(render_tunnels(sample_context(), snap));
    const auto &vpn = api["tunnels"][2]["forwards"][0];
    CHECK(vpn["description"] == "VPN 10.0.0.0/8 -x 10.1.0.0/16");
    CHECK(vpn["bound_port"] == 12300);
    CHECK(vpn["connections"] == nlohmann::json{{"active", 2}, {"total", 6}, {"failed", 1}, {"refused", 0}});
    CHECK(vpn["capture"] == nlohmann::json{{"installed", true},     {"method", "nft"},      {"port", 12300},
                                           {"captured", 9},         {"reset_while_down", 2}, {"not_redirected", 1},
                                           {"dns", nullptr}});
    CHECK_FALSE(api["tunnels"][3]["forwards"][0].contains("capture")); // other kinds have none

    auto status = nlohmann::json::parse(render_status(sample_context(), snap));
    CHECK(status["corp"]["status"] == true);
    CHECK(status["corp"]["vpn"]["installed"] == true);
    CHECK(status["corp"]["vpn"]["method"] == "nft");
    CHECK(status["corp"]["vpn"]["port"] == 12300);
    CHECK(status["corp"]["vpn"]["reset_while_down"] == 2);
    CHECK(status["corp"]["vpn"]["connections"]["failed"] == 1);
    CHECK(status["corp"]["vpn"]["bytes"] == nlohmann::json{{"to_service", 70000}, {"from_service", 900}});
    CHECK_FALSE(status["db"].contains("vpn"));

    std::string text = render_metrics(sample_context(), snap, sample_process());
    CHECK(h::bad_metrics_line(text) == "");
    const std::string f = "tunnel=\"corp\",forward=\"VPN 10.0.0.0/8 -x 10.1.0.0/16\"";
    CHECK(h::metric(text, "pytun_forward_capture_installed{" + f + ",method=\"nft\"}") == 1);
    CHECK(h::metric(text, "pytun_forward_listen_port{" + f + "}") == 12300);
    CHECK(h::metric(text, "pytun_forward_captured_connections_total{" + f + "}") == 9);
    CHECK(h::metric(text, "pytun_forward_capture_resets_total{" + f + ",reason=\"tunnel_down\"}") == 2);
    CHECK(h::metric(text, "pytun_forward_capture_resets_total{" + f + ",reason=\"not_redirected\"}") == 1);
    CHECK(h::metric(text, "pytun_forward_connections_failed_total{" + f + "}") == 1);
    CHECK(h::metric(text, "pytun_forward_received_bytes_total{" + f + "}") == 70000);
    CHECK(text.find("pytun_forward_dns_queries_total{") == std::string::npos); // no DNS: no series
    CHECK(text.find("pytun_forward_captured_connections_total{tunnel=\"db\"") == std::string::npos);
    CHECK(text.find("# TYPE pytun_forward_capture_resets_total counter\n") != std::string::npos);

    // Lifted (fail-open while down) and with DNS.
    snap.tunnels[2] = vpn_tunnel(true);
    snap.tunnels[2].forwards[0].capture->installed = false;
    text = render_metrics(sample_context(), snap, sample_process());
    CHECK(h::bad_metrics_line(text) == "");
    CHECK(h::metric(text, "pytun_forward_capture_installed{" + f + ",method=\"nft\"}") == 0);
    CHECK(h::metric(text, "pytun_forward_dns_queries_total{" + f + "}") == 40);
    CHECK(h::metric(text, "pytun_forward_dns_answered_total{" + f + "}") == 35);
    CHECK(h::metric(text, "pytun_forward_dns_truncated_total{" + f + "}") == 3);
    CHECK(h::metric(text, "pytun_forward_dns_servfail_total{" + f + "}") == 4);
    CHECK(h::metric(text, "pytun_forward_dns_timeouts_total{" + f + "}") == 1);
    CHECK(h::metric(text, "pytun_forward_dns_rejected_total{" + f + "}") == 1);
    api = nlohmann::json::parse(render_tunnels(sample_context(), snap));
    CHECK(api["tunnels"][2]["forwards"][0]["capture"]["dns"]["servfail"] == 4);
    CHECK(api["tunnels"][2]["forwards"][0]["capture"]["installed"] == false);
}

TEST_CASE("/status: a tunnel of forwards only is well while every forward serves")
{
    Snapshot snap = sample_snapshot();
    snap.tunnels.push_back(forwards_tunnel(pytun::ManagedState::up));
    auto j = nlohmann::json::parse(render_status(sample_context(), snap));
    CHECK(j["db"] == nlohmann::json{{"remote_host", ""}, {"remote_port", 0}, {"status", false}}); // D does not serve
    snap.tunnels.back().forwards[1].serving = true;
    CHECK(nlohmann::json::parse(render_status(sample_context(), snap))["db"]["status"] == true);
    snap.tunnels.back().state = pytun::ManagedState::backing_off;
    CHECK(nlohmann::json::parse(render_status(sample_context(), snap))["db"]["status"] == false);
    CHECK(j["status_data"].contains("/etc/pytun/configs/db.ini"));
}

TEST_CASE("standby: ready, not serving, its own state sample and key in /status; takeovers counted")
{
    Snapshot snap = sample_snapshot();
    snap.tunnels.erase(snap.tunnels.begin() + 1); // only the ldap tunnel, up
    pytun::TunnelStatus s;
    s.name = "pair";
    s.remote_host = "127.0.0.1";
    s.remote_port = 389;
    s.state = pytun::ManagedState::standby;
    s.service_checked = s.service_reachable = true;
    snap.tunnels.push_back(s);
    bool ready = false;
    render_readyz(sample_context(), snap, ready);
    CHECK(ready); // a standby is ready to take over
    snap.tunnels.back().state = pytun::ManagedState::backing_off;
    render_readyz(sample_context(), snap, ready);
    CHECK_FALSE(ready);
    snap.tunnels.back().state = pytun::ManagedState::standby;

    const std::string text = render_metrics(sample_context(), snap, sample_process());
    CHECK(h::bad_metrics_line(text) == "");
    CHECK(h::metric(text, "pytun_tunnel_up{tunnel=\"pair\"}") == 0);
    CHECK(h::metric(text, "pytun_tunnel_state{tunnel=\"pair\",state=\"standby\"}") == 1);
    CHECK(h::metric(text, "pytun_tunnel_state{tunnel=\"pair\",state=\"up\"}") == 0);
    CHECK(h::metric(text, "pytun_tunnel_takeovers_total{tunnel=\"pair\"}") == 0);

    auto j = nlohmann::json::parse(render_status(sample_context(), snap));
    CHECK(j["pair"] == nlohmann::json{{"remote_host", "127.0.0.1"}, {"remote_port", 389}, {"status", true},
                                      {"state", "standby"}});
    CHECK_FALSE(j["ldap \"main\"\\"].contains("state")); // an active tunnel keeps the original's shape

    snap.tunnels.back().state = pytun::ManagedState::up;
    snap.tunnels.back().takeovers = 1;
    CHECK(h::metric(render_metrics(sample_context(), snap, sample_process()),
                    "pytun_tunnel_takeovers_total{tunnel=\"pair\"}") == 1);
    auto api = nlohmann::json::parse(render_tunnels(sample_context(), snap));
    CHECK(api["tunnels"][1]["takeovers"] == 1);
    CHECK(std::string(pytun::to_string(pytun::ManagedState::standby)) == "standby");
}

TEST_CASE("dashboard: a tunnel's forwards are listed, as text")
{
    Snapshot snap = sample_snapshot();
    auto t = forwards_tunnel(pytun::ManagedState::up);
    t.forwards[0].description = "L 127.0.0.1:1 -> <img src=x onerror=alert(1)>:1";
    snap.tunnels.push_back(t);
    const std::string page = render_dashboard(sample_context(), snap);
    CHECK(page.find("<img src=x") == std::string::npos);
    CHECK(page.find("\"forwards\":[{\"description\":\"L 127.0.0.1:1 -> \\u003cimg") != std::string::npos);
    CHECK(page.find("className = \"forwards\"") != std::string::npos);
}

TEST_CASE("dashboard: the inlined snapshot cannot close the script element")
{
    auto snap = sample_snapshot();
    snap.tunnels[1].name = "</script><script>alert(1)</script>";
    const std::string page = render_dashboard(sample_context(), snap);
    CHECK(page.find("</script><script>alert(1)") == std::string::npos);
    CHECK(page.find("\\u003c/script>") != std::string::npos);
}

TEST_CASE("zip round trip, and an empty archive is still a zip")
{
    auto entries = h::unzip(make_zip({{"a.txt", "alpha"}, {"dir/b.txt", std::string(100000, 'b')}}));
    CHECK(entries.size() == 2);
    CHECK(entries["a.txt"] == "alpha");
    CHECK(entries["dir/b.txt"].size() == 100000);
    CHECK(h::unzip(make_zip({})).empty());
}
