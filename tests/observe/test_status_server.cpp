// SPDX-License-Identifier: MIT
// StatusServer against a real TunnelManager with real tunnels to the sshd
// fixture: the original's JSON shapes, archives, metrics that move with
// traffic, hostile clients, 100 dead services, a port already in use.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <pytun/alerter.h>
#include <pytun/log.h>
#include <pytun/manager.h>
#include <pytun/status_server.h>
#include <pytun/version.h>

#include "fixture.h"
#include "http_util.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
namespace t = pytun::test;
namespace h = pytun::test::http;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

t::SshServer &shared_server()
{
    static t::SshServer server;
    return server;
}

std::uint16_t dead_port()
{
    // Bound and closed: nothing listens there now.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

pytun::TunnelOptions tunnel(const std::string &name, std::uint16_t service_port)
{
    auto &server = shared_server();
    pytun::TunnelOptions o = t::tunnel_options(server, service_port);
    o.name = name;
    o.keep_alive = 1s; // the service probe follows this interval
    o.config_path = "/etc/pytun/configs/" + name + ".ini";
    return o;
}

pytun::ManagerOptions quick_manager()
{
    pytun::ManagerOptions m;
    m.threads = 2;
    m.grace_period = 500ms;
    return m;
}

std::optional<pytun::TunnelStatus> find(const pytun::TunnelManager &manager, const std::string &name)
{
    for (auto &s : manager.status())
        if (s.name == name)
            return s;
    return std::nullopt;
}

struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string tmpl = (fs::temp_directory_path() / "pytun-http-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write(const fs::path &p, const std::string &content)
{
    std::ofstream(p, std::ios::binary) << content;
}

std::string read(const fs::path &p)
{
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

// A record of replies, for docs/http-api.md (written when PYTUN_HTTP_EXAMPLES is set).
void keep_example(const std::string &name, const std::string &text)
{
    if (const char *dir = std::getenv("PYTUN_HTTP_EXAMPLES"))
        write(fs::path(dir) / name, text);
}

struct LogCapture {
    std::mutex mutex;
    std::vector<std::string> lines;
    LogCapture()
    {
        pytun::set_log_handler([this](pytun::LogLevel, std::string_view logger, std::string_view message) {
            std::lock_guard lock(mutex);
            lines.push_back(std::string(logger) + ": " + std::string(message));
        });
    }
    ~LogCapture() { pytun::set_log_handler(nullptr); }
    bool contains(const std::string &needle)
    {
        std::lock_guard lock(mutex);
        return std::any_of(lines.begin(), lines.end(),
                           [&](const std::string &l) { return l.find(needle) != std::string::npos; });
    }
};

// Two tunnels through the real sshd: alpha to a live echo service, beta to a
// port where nothing listens. Waits until the manager has probed both.
struct Rig {
    t::EchoService echo;
    pytun::TunnelManager manager{quick_manager()};
    pytun::StatusServerOptions options;
    std::unique_ptr<pytun::StatusServer> server;

    explicit Rig(pytun::StatusServerOptions o = {})
    {
        REQUIRE(manager.apply({tunnel("alpha", echo.port()), tunnel("beta", dead_port())}).error == std::error_code{});
        REQUIRE(t::wait_until(
            [&] {
                auto a = find(manager, "alpha");
                auto b = find(manager, "beta");
                return a && b && a->state == pytun::ManagedState::up && a->service_checked &&
                       b->state == pytun::ManagedState::degraded && b->service_checked;
            },
            30s));
        options = std::move(o);
        options.port = 0;
        if (options.tunnel_manager_id.empty())
            options.tunnel_manager_id = "test-manager-1";
        options.request_timeout = 1000ms;
        server = std::make_unique<pytun::StatusServer>(options, manager);
        std::string message;
        REQUIRE(server->start(message) == std::error_code{});
        REQUIRE(server->port() != 0);
    }
    ~Rig()
    {
        server->stop();
        manager.stop();
    }
    httplib::Client client() const
    {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(10, 0);
        return c;
    }
};

std::set<std::string> keys(const json &j)
{
    std::set<std::string> out;
    for (auto it = j.begin(); it != j.end(); ++it)
        out.insert(it.key());
    return out;
}

} // namespace

TEST_CASE("GET / and unknown paths: the original's ping, Server header, JSON")
{
    Rig rig;
    auto c = rig.client();
    for (const char *path : {"/", "/anything/else", "/status/extra", "/index.html?x=1"}) {
        auto res = c.Get(path);
        REQUIRE_MESSAGE(res, path);
        CHECK(res->status == 200);
        CHECK(res->get_header_value("Server") == "Pytun Introspection web server/" + pytun::version());
        CHECK(res->get_header_value("Content-Type") == "application/json");
        auto j = json::parse(res->body);
        CHECK(keys(j) == std::set<std::string>{"status", "version", "tunnel_manager_id"});
        CHECK(j["status"] == "ok");
        CHECK(j["version"] == pytun::version());
        CHECK(j["tunnel_manager_id"] == "test-manager-1");
        if (std::string(path) == "/")
            keep_example("ping.json", res->body);
    }
    // HEAD: the headers of GET, no body.
    auto head = h::raw(rig.server->port(), "HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(head.status == 200);
    CHECK(head.body.empty());
    CHECK(h::header_value(head.head, "Server") == "Pytun Introspection web server/" + pytun::version());
}

TEST_CASE("GET /status: every key and type of compat.md, from a real manager")
{
    pytun::StatusServerOptions o;
    o.created_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(1612345678123));
    Rig rig(o);
    auto res = rig.client().Get("/status");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Server") == "Pytun Introspection web server/" + pytun::version());
    keep_example("status.json", res->body);
    auto j = json::parse(res->body);

    CHECK(keys(j) == std::set<std::string>{"created_at", "mac_address", "status_data", "alpha", "beta",
                                           "tunnel_manager_id"});
    REQUIRE(j["created_at"].is_number_float());
    CHECK(j["created_at"].get<double>() == doctest::Approx(1612345678.123));
    CHECK(j["mac_address"].is_null());
    CHECK(j["tunnel_manager_id"].is_string());
    CHECK(j["tunnel_manager_id"] == "test-manager-1");

    REQUIRE(j["status_data"].is_object());
    CHECK(keys(j["status_data"]) ==
          std::set<std::string>{"/etc/pytun/configs/alpha.ini", "/etc/pytun/configs/beta.ini"});
    for (auto &[path, data] : j["status_data"].items()) {
        CAPTURE(path);
        CHECK(keys(data) == std::set<std::string>{"started_times", "last_start"});
        CHECK(data["started_times"].is_number_integer());
        CHECK(data["started_times"].get<int>() >= 1);
        CHECK(data["last_start"].is_number_float());
        const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
        CHECK(data["last_start"].get<double>() > now - 120);
        CHECK(data["last_start"].get<double>() <= now);
    }
    for (const char *name : {"alpha", "beta"}) {
        CAPTURE(name);
        const json &tj = j[name];
        CHECK(keys(tj) == std::set<std::string>{"remote_host", "remote_port", "status"});
        CHECK(tj["remote_host"].is_string());
        CHECK(tj["remote_host"] == "127.0.0.1");
        CHECK(tj["remote_port"].is_number_integer());
        CHECK(tj["status"].is_boolean());
    }
    CHECK(j["alpha"]["remote_port"] == rig.echo.port());
    // The HealthMonitor's probe: the echo service answers, beta's port does not.
    CHECK(j["alpha"]["status"] == true);
    CHECK(j["beta"]["status"] == false);

    SUBCASE("the service status follows the probe, not the request")
    {
        rig.echo.stop();
        REQUIRE(t::wait_until([&] { return !find(rig.manager, "alpha")->service_reachable; }, 10s));
        auto after = json::parse(rig.client().Get("/status")->body);
        CHECK(after["alpha"]["status"] == false);
        rig.echo.start();
    }
}

TEST_CASE("GET /status with a MAC address reports it as a string")
{
    pytun::StatusServerOptions o;
    o.mac_address = "00:11:22:33:44:55";
    Rig rig(o);
    auto j = json::parse(rig.client().Get("/status")->body);
    CHECK(j["mac_address"] == "00:11:22:33:44:55");
}

TEST_CASE("error replies have the original's shape")
{
    Rig rig;
    auto c = rig.client();
    auto res = c.Post("/status", "x", "text/plain");
    REQUIRE(res);
    CHECK(res->status == 405);
    auto j = json::parse(res->body);
    CHECK(keys(j) == std::set<std::string>{"error", "tunnel_manager_id"});
    CHECK(j["error"].is_string());
    CHECK(j["tunnel_manager_id"] == "test-manager-1");
    keep_example("error.json", res->body);

    auto bad = h::raw(rig.server->port(), "GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(bad.status == 400);
    auto jb = json::parse(bad.body);
    CHECK(keys(jb) == std::set<std::string>{"error", "tunnel_manager_id"});
    CHECK(h::header_value(bad.head, "Server") == "Pytun Introspection web server/" + pytun::version());
}

TEST_CASE("/configs: secrets replaced, private keys left out by content, redaction list present")
{
    TempDir dir;
    auto &server = shared_server();
    const fs::path configs = dir.path / "configs";
    fs::create_directory(configs);
    const fs::path main_ini = dir.path / "connector.ini";
    write(main_ini, "[pytun]\n"
                    "tunnel_manager_id = test-manager-1\n"
                    "tunnel_dirs = configs\n"
                    "smtp_hostname = mail.example.com\n"
                    "smtp_login = alerts@example.com\n"
                    "smtp_password = Sm7p-Pa55word\n"
                    "http_url = https://hook:Url-Pa55@hooks.example.com/pytun\n"
                    "http_user = hook\n"
                    "http_password = Http-Pa55word\n"
                    "inspection_token = Insp-T0ken\n"
                    "signature = eyJwYXlsb2FkIjoiMDA6MTE6MjI6MzM6NDQ6NTUiLCJzaWciOiJzaWduYXR1cmUifQ==\n");
    write(configs / "ldap.ini", "[tunnel]\n"
                                "tunnel_name = ldap\n"
                                "server_host = bastion.example.com\n"
                                "port = 10389\n"
                                "remote_host = ldap.local\n"
                                "remote_port = 389\n"
                                "username = pytun\n"
                                "keyfile = id_ed25519\n"
                                "key_passphrase = Key-Pa55phrase\n");
    write(configs / "extra.toml", "[alert]\nsmtp = { host = \"mail\", password = \"Toml-Inline-Pa55\" }\n");
    // Private keys under innocent names: found by content.
    const std::string openssh_key = read(server.key_ed25519());
    REQUIRE(openssh_key.find("OPENSSH PRIVATE KEY") != std::string::npos);
    write(configs / "notes.txt", "my notes\n" + openssh_key);
    write(configs / "README.md", read(server.key_ecdsa()));
    const std::string pkcs8 = dir.path.string() + "/pkcs8.pem";
    const bool have_openssl =
        std::system(("openssl genpkey -algorithm ed25519 -out " + pkcs8 + " >/dev/null 2>&1").c_str()) == 0;
    if (have_openssl)
        fs::copy_file(pkcs8, configs / "ldap.ini.bak");
    write(configs / "putty.ini", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\nAAAAIBx\n");
    write(configs / "key.der", std::string("\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00", 12));
    fs::create_symlink(server.key_ed25519(), configs / "linked.ini");

    pytun::StatusServerOptions o;
    o.main_config_file = main_ini.string();
    o.config_dir = configs.string();
    Rig rig(o);
    auto res = rig.client().Get("/configs");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Content-Type") == "application/zip");
    write(dir.path / "configs.zip", res->body);
    auto entries = h::unzip(res->body);

    std::set<std::string> names;
    for (auto &[name, content] : entries)
        names.insert(name);
    CHECK(names == std::set<std::string>{"connector.ini", "configs/ldap.ini", "configs/extra.toml", "REDACTED.txt"});

    // Not a byte of any key, not one password, in any entry.
    std::vector<std::string> forbidden = {"Sm7p-Pa55word", "Url-Pa55", "Http-Pa55word", "Insp-T0ken",
                                          "eyJwYXlsb2FkIjoiMDA6MTE6MjI6MzM6NDQ6NTUiLCJzaWciOiJzaWduYXR1cmUifQ==",
                                          "Key-Pa55phrase", "Toml-Inline-Pa55", "PRIVATE KEY", "PuTTY-User-Key"};
    // Every base64 line of the keys too.
    for (const std::string &key : {openssh_key, read(server.key_ecdsa())}) {
        std::size_t start = 0;
        while (start < key.size()) {
            auto end = key.find('\n', start);
            std::string line = key.substr(start, end - start);
            if (line.size() > 20 && line.find("-----") == std::string::npos)
                forbidden.push_back(line);
            start = end == std::string::npos ? key.size() : end + 1;
        }
    }
    for (auto &[name, content] : entries)
        for (const auto &secret : forbidden)
            CHECK_MESSAGE(content.find(secret) == std::string::npos, name, " contains ", secret);

    // What is innocent is kept as it was.
    CHECK(entries["configs/ldap.ini"].find("server_host = bastion.example.com\n") != std::string::npos);
    CHECK(entries["connector.ini"].find("smtp_login = alerts@example.com\n") != std::string::npos);
    CHECK(entries["connector.ini"].find("smtp_password = ***REDACTED***\n") != std::string::npos);

    const std::string &list = entries["REDACTED.txt"];
    keep_example("REDACTED.txt", list);
    CHECK(list.find("configs/notes.txt: left out: contains a private key (OpenSSH private key)") != std::string::npos);
    CHECK(list.find("configs/README.md: left out: contains a private key") != std::string::npos);
    CHECK(list.find("configs/putty.ini: left out: contains a private key (PuTTY private key)") != std::string::npos);
    CHECK(list.find("configs/key.der: left out: binary file") != std::string::npos);
    CHECK(list.find("configs/linked.ini: left out: symbolic link") != std::string::npos);
    if (have_openssl)
        CHECK(list.find("configs/ldap.ini.bak: left out: contains a private key (PKCS#8 private key)") !=
              std::string::npos);
    for (const char *key : {"connector.ini:6: smtp_password", "connector.ini:7: http_url (password in URL)",
                            "connector.ini:9: http_password", "connector.ini:10: inspection_token",
                            "connector.ini:11: signature", "configs/ldap.ini:9: key_passphrase",
                            "configs/extra.toml:2: password"})
        CHECK_MESSAGE(list.find(key) != std::string::npos, key);

    // Python's zipfile agrees that it is a valid archive (when python3 is here).
    if (std::system("command -v python3 >/dev/null") == 0) {
        std::string cmd = "python3 -c \"import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); "
                          "sys.exit(0 if z.testzip() is None else 1)\" " +
                          (dir.path / "configs.zip").string();
        CHECK(std::system(cmd.c_str()) == 0);
    }
}

TEST_CASE("/logs: only the *.log files of the log directory")
{
    TempDir dir;
    const fs::path logs = dir.path / "logs";
    fs::create_directory(logs);
    write(logs / "main_connector.log", "2026-01-01 00:00:00 [1] main INFO started\n");
    write(logs / "ldap.log", std::string(200000, 'x') + "\n");
    write(logs / "notes.txt", "not a log\n");
    write(logs / "main_connector.log.1", "rotated the other way\n");
    fs::create_directory(logs / "sub.log");
    write(logs / "sub.log" / "inner.log", "nested\n");
    write(dir.path / "secret", "outside the log directory\n");
    fs::create_symlink(dir.path / "secret", logs / "link.log");

    pytun::StatusServerOptions o;
    o.log_dir = logs.string();
    Rig rig(o);
    auto res = rig.client().Get("/logs");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Content-Type") == "application/zip");
    auto entries = h::unzip(res->body);
    std::set<std::string> names;
    for (auto &[name, content] : entries)
        names.insert(name);
    CHECK(names == std::set<std::string>{"main_connector.log", "ldap.log"});
    CHECK(entries["main_connector.log"] == read(logs / "main_connector.log"));
    CHECK(entries["ldap.log"] == read(logs / "ldap.log"));

    SUBCASE("an empty log directory gives an empty, valid archive")
    {
        TempDir empty;
        pytun::StatusServerOptions e;
        e.log_dir = empty.path.string();
        e.port = 0;
        pytun::StatusServer s0(e, rig.manager);
        std::string message;
        REQUIRE(s0.start(message) == std::error_code{});
        httplib::Client c("127.0.0.1", s0.port());
        auto r = c.Get("/logs");
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(h::unzip(r->body).empty());
    }
}

TEST_CASE("/metrics: strict format, and the values move when traffic flows")
{
    Rig rig;
    auto c = rig.client();
    auto before = c.Get("/metrics");
    REQUIRE(before);
    CHECK(before->status == 200);
    CHECK(before->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(h::bad_metrics_line(before->body) == "");
    CHECK(h::metric(before->body, "pytun_tunnel_up{tunnel=\"alpha\"}") == 1);
    CHECK(h::metric(before->body, "pytun_tunnel_state{tunnel=\"alpha\",state=\"up\"}") == 1);
    CHECK(h::metric(before->body, "pytun_tunnel_state{tunnel=\"beta\",state=\"degraded\"}") == 1);
    CHECK(h::metric(before->body, "pytun_tunnel_service_up{tunnel=\"alpha\"}") == 1);
    CHECK(h::metric(before->body, "pytun_tunnel_service_up{tunnel=\"beta\"}") == 0);
    CHECK(h::metric(before->body, "pytun_tunnel_starts_total{tunnel=\"alpha\"}") >= 1);
    CHECK(h::metric(before->body, "pytun_tunnel_state_change_timestamp_seconds{tunnel=\"alpha\"}") > 1.6e9);
    const double in0 = h::metric(before->body, "pytun_tunnel_received_bytes_total{tunnel=\"alpha\"}");
    const double out0 = h::metric(before->body, "pytun_tunnel_sent_bytes_total{tunnel=\"alpha\"}");
    const double conns0 = h::metric(before->body, "pytun_tunnel_connections_total{tunnel=\"alpha\"}");
    REQUIRE(in0 >= 0);

    // 1 MiB through the tunnel: client -> bastion port -> pytun -> echo -> back.
    const std::uint16_t listen_port = find(rig.manager, "alpha")->listen_port;
    REQUIRE(listen_port != 0);
    auto load = t::run_echo_load(listen_port, 4, 256 * 1024, 60s);
    CHECK(load.ok == 4);

    std::string after;
    REQUIRE(t::wait_until(
        [&] {
            auto r = c.Get("/metrics");
            after = r ? r->body : "";
            return h::metric(after, "pytun_tunnel_received_bytes_total{tunnel=\"alpha\"}") >= in0 + 4 * 256 * 1024 &&
                   h::metric(after, "pytun_tunnel_sent_bytes_total{tunnel=\"alpha\"}") >= out0 + 4 * 256 * 1024;
        },
        10s));
    CHECK(h::bad_metrics_line(after) == "");
    CHECK(h::metric(after, "pytun_tunnel_connections_total{tunnel=\"alpha\"}") >= conns0 + 4);
    CHECK(h::metric(after, "pytun_tunnel_received_bytes_total{tunnel=\"beta\"}") == 0);
    REQUIRE(t::wait_until(
        [&] {
            auto r = c.Get("/metrics");
            return r && h::metric(r->body, "pytun_tunnel_probe_rtt_seconds{tunnel=\"alpha\"}") > 0;
        },
        10s));
    keep_example("metrics.txt", c.Get("/metrics")->body);
}

TEST_CASE("forwards: /api/v1/tunnels, /metrics and /status show each forward, and its counters move with traffic")
{
    t::EchoService echo;
    pytun::TunnelManager manager(quick_manager());
    pytun::TunnelOptions o = tunnel("fw", 0);
    o.remote_host.clear(); // forwards only
    pytun::DynamicForward socks;
    socks.listen_port = 0;
    o.forwards = {pytun::LocalForward{"127.0.0.1", 0, "127.0.0.1", echo.port()}, socks};
    REQUIRE(manager.apply({o, tunnel("alpha", echo.port())}).error == std::error_code{});
    REQUIRE(t::wait_until(
        [&] {
            auto fw = find(manager, "fw");
            auto alpha = find(manager, "alpha");
            return fw && fw->state == pytun::ManagedState::up && fw->forwards.size() == 2 &&
                   fw->forwards[0].serving && fw->forwards[1].serving && alpha &&
                   alpha->state == pytun::ManagedState::up && alpha->service_checked;
        },
        30s));
    pytun::StatusServerOptions so;
    so.port = 0;
    so.tunnel_manager_id = "test-manager-1";
    pytun::StatusServer status(so, manager);
    std::string message;
    REQUIRE(status.start(message) == std::error_code{});
    httplib::Client c("127.0.0.1", status.port());
    c.set_read_timeout(10, 0);

    const std::uint16_t local = find(manager, "fw")->forwards[0].bound_port;
    REQUIRE(local != 0);
    auto load = t::run_echo_load(local, 4, 256 * 1024, 60s);
    CHECK(load.ok == 4);

    json api;
    REQUIRE(t::wait_until(
        [&] {
            auto r = c.Get("/api/v1/tunnels");
            if (!r)
                return false;
            api = json::parse(r->body);
            for (auto &tj : api["tunnels"])
                if (tj["name"] == "fw")
                    return tj["forwards"][0]["bytes"]["from_service"].get<std::uint64_t>() >= 4 * 256 * 1024;
            return false;
        },
        10s));
    keep_example("tunnels-forwards.json", c.Get("/api/v1/tunnels")->body);
    for (auto &tj : api["tunnels"]) {
        if (tj["name"] != "fw") {
            REQUIRE(tj["forwards"].size() == 1); // the reverse tunnel, as a forward
            CHECK(tj["forwards"][0]["description"].get<std::string>().rfind("R 127.0.0.1:0 -> 127.0.0.1:", 0) == 0);
            CHECK(tj["forwards"][0]["serving"] == true);
            CHECK(tj["forwards"][0]["bound_port"] == tj["listen_port"]);
            continue;
        }
        CHECK(tj["remote_host"] == "");
        CHECK(tj["remote_port"] == 0);
        CHECK(tj["sessions"].get<int>() >= 1);
        REQUIRE(tj["forwards"].size() == 2);
        const auto &l = tj["forwards"][0];
        CHECK(l["description"] == "L 127.0.0.1:0 -> 127.0.0.1:" + std::to_string(echo.port()));
        CHECK(l["serving"] == true);
        CHECK(l["bound_port"] == local);
        CHECK(l["error"].is_null());
        CHECK(l["connections"]["total"].get<int>() >= 4);
        CHECK(l["bytes"]["to_service"].get<std::uint64_t>() >= 4 * 256 * 1024);
        CHECK(l["connection_setup_seconds"]["count"].get<int>() >= 4);
        CHECK(tj["forwards"][1]["description"] == "D 127.0.0.1:0 (SOCKS)");
        CHECK(tj["forwards"][1]["connections"]["total"] == 0); // its own counters
        CHECK(tj["connections"]["total"] == l["connections"]["total"]); // the tunnel's are the sum
    }

    auto metrics = c.Get("/metrics");
    REQUIRE(metrics);
    CHECK(h::bad_metrics_line(metrics->body) == "");
    const std::string label =
        "{tunnel=\"fw\",forward=\"L 127.0.0.1:0 -> 127.0.0.1:" + std::to_string(echo.port()) + "\"}";
    CHECK(h::metric(metrics->body, "pytun_forward_up" + label) == 1);
    CHECK(h::metric(metrics->body, "pytun_forward_listen_port" + label) == local);
    CHECK(h::metric(metrics->body, "pytun_forward_sent_bytes_total" + label) >= 4 * 256 * 1024);
    CHECK(h::metric(metrics->body, "pytun_forward_connections_total" + label) >= 4);
    CHECK(h::metric(metrics->body, "pytun_forward_up{tunnel=\"fw\",forward=\"D 127.0.0.1:0 (SOCKS)\"}") == 1);
    CHECK(h::metric(metrics->body, "pytun_tunnel_sessions{tunnel=\"fw\"}") >= 1);

    auto st = json::parse(c.Get("/status")->body);
    CHECK(st["fw"] == json{{"remote_host", ""}, {"remote_port", 0}, {"status", true}});
    CHECK(st["alpha"]["remote_port"] == echo.port());
    CHECK(st["alpha"]["status"] == true);
    status.stop();
    manager.stop();
}

namespace {

// A channel of our own: delivers into memory, or refuses (permanently).
class MemoryChannel final : public pytun::AlertChannel {
public:
    explicit MemoryChannel(bool refuse) : refuse_(refuse) {}
    std::string name() const override { return refuse_ ? "refusing" : "memory"; }
    std::error_code send(const pytun::Alert &, std::string &detail) override
    {
        detail = refuse_ ? "refused on purpose" : "kept";
        return refuse_ ? pytun::make_error_code(pytun::AlertErrc::http_rejected) : std::error_code{};
    }

private:
    bool refuse_;
};

} // namespace

TEST_CASE("/metrics: alert counts come from the Alerter")
{
    pytun::TunnelManager manager(quick_manager());
    pytun::ConnectorConfig connector;
    connector.tunnel_manager_id = "alerts-1";
    pytun::AlerterOptions ao(connector);
    pytun::Alerter alerter(ao);
    alerter.add_channel(std::make_unique<MemoryChannel>(false));
    alerter.add_channel(std::make_unique<MemoryChannel>(true));
    REQUIRE(alerter.start() == std::error_code{});
    pytun::StatusServerOptions o;
    o.port = 0;
    pytun::StatusServer server(o, manager, &alerter);
    std::string message;
    REQUIRE(server.start(message) == std::error_code{});
    httplib::Client c("127.0.0.1", server.port());

    auto first = c.Get("/metrics");
    REQUIRE(first);
    CHECK(h::metric(first->body, "pytun_alerts_sent_total{channel=\"memory\"}") == 0);
    pytun::AlertEvent event;
    event.tunnel_name = "ldap";
    event.kind = pytun::AlertEvent::Kind::test;
    alerter.notify(event);
    std::string text;
    REQUIRE(t::wait_until(
        [&] {
            auto r = c.Get("/metrics");
            text = r ? r->body : "";
            return h::metric(text, "pytun_alerts_sent_total{channel=\"memory\"}") == 1 &&
                   h::metric(text, "pytun_alerts_failed_total{channel=\"refusing\"}") == 1;
        },
        10s));
    CHECK(h::bad_metrics_line(text) == "");
    CHECK(h::metric(text, "pytun_alerts_dropped_total{channel=\"memory\"}") == 0);
    CHECK(h::metric(text, "pytun_alerts_failed_total{channel=\"memory\"}") == 0);
    auto api = json::parse(c.Get("/api/v1/tunnels")->body);
    REQUIRE(api["alerts"].size() == 2);
    CHECK(api["alerts"][0]["channel"] == "memory");
    CHECK(api["alerts"][0]["sent"] == 1);
    server.stop();
    alerter.stop();
}

TEST_CASE("/healthz, /readyz (503 naming the tunnels not up), /api/v1/tunnels")
{
    Rig rig;
    auto c = rig.client();
    auto health = c.Get("/healthz");
    REQUIRE(health);
    CHECK(health->status == 200);
    CHECK(json::parse(health->body)["status"] == "ok");
    keep_example("healthz.json", health->body);

    auto ready = c.Get("/readyz");
    REQUIRE(ready);
    CHECK(ready->status == 503);
    auto rj = json::parse(ready->body);
    keep_example("readyz.json", ready->body);
    CHECK(rj["ready"] == false);
    REQUIRE(rj["not_up"].size() == 1);
    CHECK(rj["not_up"][0]["name"] == "beta");
    CHECK(rj["not_up"][0]["state"] == "degraded");

    auto api = c.Get("/api/v1/tunnels");
    REQUIRE(api);
    CHECK(api->status == 200);
    keep_example("tunnels.json", api->body);
    auto aj = json::parse(api->body);
    REQUIRE(aj["tunnels"].size() == 2);
    for (auto &tj : aj["tunnels"]) {
        CHECK(tj["state"].is_string());
        CHECK(tj["connections"]["active"].is_number_integer());
        CHECK(tj["bytes"]["to_service"].is_number_integer());
        if (tj["name"] == "alpha") {
            CHECK(tj["state"] == "up");
            CHECK(tj["uptime_seconds"].is_number());
            CHECK(tj["last_error"].is_null());
            CHECK(tj["service"]["reachable"] == true);
        } else {
            CHECK(tj["state"] == "degraded");
            REQUIRE(tj["last_error"].is_object());
            CHECK(tj["last_error"]["message"].is_string());
            CHECK(tj["service"]["reachable"] == false);
        }
    }

    // Once beta's service exists, everything is up and /readyz says so.
    t::EchoService late;
    REQUIRE(rig.manager.apply({tunnel("alpha", rig.echo.port()), tunnel("beta", late.port())}).error ==
            std::error_code{});
    REQUIRE(t::wait_until([&] { auto r = c.Get("/readyz"); return r && r->status == 200; }, 30s));
    CHECK(json::parse(c.Get("/readyz")->body)["not_up"].empty());
}

TEST_CASE("hostile requests get their status, and the server keeps serving")
{
    Rig rig;
    const auto port = rig.server->port();
    auto serving = [&] {
        auto r = h::raw(port, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
        return r.status == 200 && json::parse(r.body).contains("status_data");
    };

    SUBCASE("oversized head: too many headers, one huge header, a huge body")
    {
        std::string many = "GET / HTTP/1.1\r\n";
        for (int i = 0; i < 200; ++i)
            many += "X-Header-" + std::to_string(i) + ": v\r\n";
        CHECK(h::raw(port, many + "\r\n").status == 431);
        CHECK(h::raw(port, "GET / HTTP/1.1\r\nX-Big: " + std::string(40000, 'a') + "\r\n\r\n").status == 431);
        CHECK(h::raw(port, "POST / HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n" + std::string(1000, 'b'), 10s)
                  .status == 413);
    }
    SUBCASE("very long paths")
    {
        CHECK(h::raw(port, "GET /" + std::string(5000, 'a') + " HTTP/1.1\r\n\r\n").status == 414);
        CHECK(h::raw(port, "GET /" + std::string(100000, 'a') + " HTTP/1.1\r\n\r\n").status == 414);
    }
    SUBCASE("path traversal and encoded slashes")
    {
        for (const char *target : {"/../etc/passwd", "/configs/../../etc/shadow", "/%2e%2e/%2e%2e/etc/passwd",
                                   "/configs/..%2f..%2fetc%2fpasswd", "/logs%2F..%2Fsecret", "/a%5c..%5cb",
                                   "/status%00.json", "/a\\..\\b", "/%zz"}) {
            CAPTURE(target);
            CHECK(h::raw(port, std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\n\r\n").status == 400);
        }
    }
    SUBCASE("malformed requests")
    {
        CHECK(h::raw(port, "GARBAGE\r\n\r\n").status == 400);
        CHECK(h::raw(port, "GET / HTTP/9.9\r\n\r\n").status == 505);
        CHECK(h::raw(port, "GET / HTTP/1.1\r\nNoColonHere\r\n\r\n").status == 400);
        CHECK(h::raw(port, std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15)).status == 400);
        CHECK(h::raw(port, "GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n").status / 100 == 4);
    }
    SUBCASE("slow clients (slow loris) are cut off and do not hold the server")
    {
        std::vector<int> slow;
        for (int i = 0; i < 12; ++i) {
            int fd = h::connect_to("127.0.0.1", port);
            REQUIRE(fd >= 0);
            ::send(fd, "GET / HTTP/1.1\r\nX-a: ", 21, MSG_NOSIGNAL);
            slow.push_back(fd);
        }
        std::atomic<bool> dripping{true};
        std::thread drip([&] {
            while (dripping) {
                for (int fd : slow)
                    ::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                std::this_thread::sleep_for(100ms);
            }
        });
        // A normal client is served within about one request timeout (1 s
        // here), however many slow ones arrived first.
        const auto start = std::chrono::steady_clock::now();
        CHECK(serving());
        const auto waited = std::chrono::steady_clock::now() - start;
        MESSAGE("normal request behind 12 slow clients took ",
                std::chrono::duration_cast<std::chrono::milliseconds>(waited).count(), " ms");
        CHECK(waited < 3s);
        std::size_t timed_out = 0;
        for (int fd : slow) {
            auto r = h::read_reply(fd, 5s);
            timed_out += r.status == 408;
        }
        dripping = false;
        drip.join();
        for (int fd : slow)
            ::close(fd);
        CHECK(timed_out == slow.size());
    }
    SUBCASE("a client that connects and says nothing gets 408")
    {
        int fd = h::connect_to("127.0.0.1", port);
        REQUIRE(fd >= 0);
        auto r = h::read_reply(fd, 5s);
        ::close(fd);
        CHECK(r.status == 408);
    }
    SUBCASE("many concurrent clients")
    {
        std::atomic<int> ok{0}, failed{0};
        std::vector<std::thread> clients;
        for (int i = 0; i < 40; ++i)
            clients.emplace_back([&] {
                httplib::Client c("127.0.0.1", port);
                c.set_read_timeout(20, 0);
                for (int k = 0; k < 10; ++k) {
                    auto r = c.Get(k % 2 ? "/status" : "/metrics");
                    (r && r->status == 200 ? ok : failed)++;
                }
            });
        for (auto &th : clients)
            th.join();
        CHECK(ok == 400);
        CHECK(failed == 0);
    }
    CHECK(serving());
}

TEST_CASE("more clients waiting than the limit: 503 for the surplus, served again afterwards")
{
    pytun::TunnelManager manager(quick_manager());
    pytun::StatusServerOptions o;
    o.port = 0;
    o.threads = 1;
    o.max_pending = 2;
    o.request_timeout = 500ms;
    pytun::StatusServer server(o, manager);
    std::string message;
    REQUIRE(server.start(message) == std::error_code{});
    // Ten clients connect and say nothing: one holds the only worker, two
    // may wait, the rest get 503 as soon as a worker reaches them, without
    // being read from.
    std::vector<int> idle;
    for (int i = 0; i < 10; ++i) {
        int fd = h::connect_to("127.0.0.1", server.port());
        REQUIRE(fd >= 0);
        idle.push_back(fd);
        std::this_thread::sleep_for(5ms); // accept in order
    }
    int busy = 0, timed_out = 0;
    for (int fd : idle) {
        auto r = h::read_reply(fd, 5s);
        busy += r.status == 503;
        timed_out += r.status == 408;
        ::close(fd);
    }
    CHECK(busy >= 6);
    CHECK(busy + timed_out == 10);
    auto r = h::raw(server.port(), "GET / HTTP/1.1\r\n\r\n", 5s);
    CHECK(r.status == 200);
}

TEST_CASE("/status with 100 tunnels whose local services are all dead answers in milliseconds")
{
    pytun::ManagerOptions m = quick_manager();
    pytun::TunnelManager manager(m);
    std::vector<pytun::TunnelOptions> tunnels;
    for (int i = 0; i < 100; ++i) {
        auto o = tunnel("dead-" + std::to_string(i), dead_port());
        o.keep_alive = 30s;
        tunnels.push_back(o);
    }
    REQUIRE(manager.apply(tunnels).error == std::error_code{});
    // Measure in the steady state the original got wrong: every tunnel up,
    // every local service dead (its /status connected to each of them).
    REQUIRE(t::wait_until(
        [&] {
            auto all = manager.status();
            return all.size() == 100 && std::all_of(all.begin(), all.end(), [](const pytun::TunnelStatus &s) {
                       return s.state == pytun::ManagedState::degraded && s.service_checked;
                   });
        },
        120s));
    pytun::StatusServerOptions o;
    o.port = 0;
    o.tunnel_manager_id = "hundred";
    pytun::StatusServer server(o, manager);
    std::string message;
    REQUIRE(server.start(message) == std::error_code{});
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(10, 0);

    std::vector<double> ms;
    const auto until = std::chrono::steady_clock::now() + 4s;
    while (std::chrono::steady_clock::now() < until || ms.size() < 20) {
        const auto start = std::chrono::steady_clock::now();
        auto r = c.Get("/status");
        const double took =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        REQUIRE(r);
        REQUIRE(r->status == 200);
        auto j = json::parse(r->body);
        REQUIRE(j["status_data"].size() == 100);
        CHECK(j["dead-42"]["status"] == false);
        CHECK_MESSAGE(took < 100.0, "a /status took ", took, " ms");
        ms.push_back(took);
        std::this_thread::sleep_for(100ms);
    }
    std::sort(ms.begin(), ms.end());
    MESSAGE("/status with 100 dead services: ", ms.size(), " requests, median ", ms[ms.size() / 2], " ms, max ",
            ms.back(), " ms");
    // For comparison: the same round trip without a snapshot (/) and with
    // a snapshot but little rendering (/healthz).
    for (const char *path : {"/", "/healthz", "/metrics"}) {
        std::vector<double> other;
        for (int i = 0; i < 10; ++i) {
            const auto start = std::chrono::steady_clock::now();
            REQUIRE(c.Get(path));
            other.push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        }
        std::sort(other.begin(), other.end());
        MESSAGE(std::string(path), " with 100 tunnels: median ", other[other.size() / 2], " ms, max ", other.back(), " ms");
    }
    server.stop();
    manager.stop();
}

TEST_CASE("a port already in use is a clear start-up error")
{
    pytun::TunnelManager manager(quick_manager());
    pytun::StatusServerOptions o;
    o.port = 0;
    pytun::StatusServer first(o, manager);
    std::string message;
    REQUIRE(first.start(message) == std::error_code{});
    CHECK(message.find("listening on 127.0.0.1:") != std::string::npos);

    o.port = first.port();
    pytun::StatusServer second(o, manager);
    std::error_code ec = second.start(message);
    CHECK(ec == std::errc::address_in_use);
    CHECK(message.find("port " + std::to_string(first.port()) + " on 127.0.0.1 is already in use") !=
          std::string::npos);
    CHECK(message.find("inspection_port") != std::string::npos);
    CHECK(!second.running());
    // The first one is not disturbed.
    httplib::Client c("127.0.0.1", first.port());
    auto r = c.Get("/");
    REQUIRE(r);
    CHECK(r->status == 200);

    o.bind_address = "not-an-address";
    o.port = 0;
    pytun::StatusServer third(o, manager);
    CHECK(third.start(message) != std::error_code{});
    CHECK(message.find("not-an-address") != std::string::npos);
}

TEST_CASE("stop() right after start(), twice, and destruction while clients wait")
{
    pytun::TunnelManager manager(quick_manager());
    pytun::StatusServerOptions o;
    o.port = 0;
    for (int i = 0; i < 5; ++i) {
        pytun::StatusServer s(o, manager);
        std::string message;
        REQUIRE(s.start(message) == std::error_code{});
        int idle = h::connect_to("127.0.0.1", s.port());
        int slow = h::connect_to("127.0.0.1", s.port());
        ::send(slow, "GET / HTTP/1.1\r\n", 16, MSG_NOSIGNAL);
        std::this_thread::sleep_for(20ms); // let the workers pick them up
        // Not held up by the clients that have not finished their requests
        // (the request timeout is 5 s).
        const auto start = std::chrono::steady_clock::now();
        s.stop();
        CHECK(std::chrono::steady_clock::now() - start < 1s);
        s.stop();
        if (slow >= 0)
            ::close(slow);
        CHECK(!s.running());
        if (idle >= 0)
            ::close(idle);
    }
}
