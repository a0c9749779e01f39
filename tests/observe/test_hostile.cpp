// SPDX-License-Identifier: MIT
// The inspection API and its archives against hostile input and load
// (issue 14): a 64 kB config line, a typo'd secret, hard links, FIFOs and
// other users' files, memory of /logs over many files, and slow and silent
// clients while /status, /healthz and /readyz must keep answering.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <httplib.h>

#include <pytun/manager.h>
#include <pytun/status_server.h>

#include "fixture.h"
#include "http_util.h"
#include "observe/archive.h"
#include "observe/redact.h"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace h = pytun::test::http;
namespace t = pytun::test;

namespace {

struct TempDir {
    fs::path path;
    TempDir()
    {
        std::string tmpl = (fs::temp_directory_path() / "pytun-hostile-XXXXXX").string();
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

// A status server over an empty manager, serving `o`'s directories.
struct Server {
    pytun::TunnelManager manager;
    std::unique_ptr<pytun::StatusServer> server;
    explicit Server(pytun::StatusServerOptions o)
    {
        o.port = 0;
        o.tunnel_manager_id = "hostile";
        server = std::make_unique<pytun::StatusServer>(o, manager);
        std::string message;
        REQUIRE(server->start(message) == std::error_code{});
    }
    ~Server()
    {
        server->stop();
        manager.stop();
    }
    httplib::Result get(const std::string &path, int timeout_s = 20) const
    {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(timeout_s, 0);
        return c.Get(path.c_str());
    }
};

long status_kib(const char *field)
{
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(field, 0) == 0)
            return std::stol(line.substr(std::string(field).size()));
    return -1;
}

} // namespace

TEST_CASE("redaction is linear and bounded: 64 kB lines, typo'd secrets")
{
    std::vector<pytun::detail::Redaction> r;
    const std::string long_secret(64 * 1024, 's');
    const std::string text = "[pytun]\nsmtp_password = " + long_secret + "\nlog_level = " + std::string(64 * 1024, 'x') +
                             "\nsmtp_password Typo-Secret-1\nsmtp_passwordTypo-Secret-2\nhttp_password Typo:Secret-3\n" +
                             "tunnel_manager_id = kept\n";
    const std::string out = pytun::detail::redact_config(text, r);
    CHECK(out.find(long_secret.substr(0, 100)) == std::string::npos);
    CHECK(out.find("Typo-Secret") == std::string::npos);
    CHECK(out.find("Typo:Secret") == std::string::npos);
    CHECK(out.find("Secret-3") == std::string::npos);
    CHECK(out.find("tunnel_manager_id = kept\n") != std::string::npos);
    CHECK(out.find("smtp_password ***REDACTED***\n") != std::string::npos);
    REQUIRE(r.size() == 5);
    CHECK(r[0].key.empty()); // the long lines are replaced whole
    CHECK(r[0].line_bytes > 64 * 1024);
    CHECK(r[2].key == "smtp_password");
    // One pathological line of 1 MiB of separators and quotes is fine too.
    std::string nasty;
    for (int i = 0; i < 100000; ++i)
        nasty += "a=\"{:";
    (void)pytun::detail::redact_config("x = {" + nasty.substr(0, 16000) + "\n" + nasty, r);
}

TEST_CASE("GET /configs with a 64 kB line answers, and ships no typo'd secret")
{
    TempDir dir;
    const fs::path configs = dir.path / "configs";
    fs::create_directory(configs);
    write(dir.path / "connector.ini", "[pytun]\ntunnel_manager_id = x\nsmtp_password Typo-S3cret\n");
    write(configs / "long.ini", "[tunnel]\nremote_host = " + std::string(64 * 1024, 'h') + "\n");
    write(configs / "long-secret.ini", "[tunnel]\nkey_passphrase = " + std::string(64 * 1024, 'p') + "\n");
    pytun::StatusServerOptions o;
    o.main_config_file = (dir.path / "connector.ini").string();
    o.config_dir = configs.string();
    Server s(o);
    auto res = s.get("/configs");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    auto entries = h::unzip(res->body);
    CHECK(entries.count("configs/long.ini") == 1);
    CHECK(entries["configs/long-secret.ini"].find(std::string(1000, 'p')) == std::string::npos);
    CHECK(entries["connector.ini"].find("Typo-S3cret") == std::string::npos);
    CHECK(entries["connector.ini"].find("smtp_password ***REDACTED***") != std::string::npos);
    const std::string &list = entries["REDACTED.txt"];
    CHECK(list.find("configs/long.ini:2: line of") != std::string::npos);
    CHECK(list.find("connector.ini:3: smtp_password") != std::string::npos);
    // The server is still there.
    CHECK(s.get("/status"));
}

TEST_CASE("hard links, FIFOs, other users' files and keys in the log directory are left out")
{
    TempDir dir;
    const fs::path configs = dir.path / "configs", logs = dir.path / "logs", outside = dir.path / "outside";
    for (const auto &d : {configs, logs, outside})
        fs::create_directory(d);
    write(outside / "id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"
                                  "-----END OPENSSH PRIVATE KEY-----\n");
    write(outside / "shadow", "root:$6$secret-hash:19000:0:99999:7:::\n");
    fs::create_hard_link(outside / "shadow", configs / "linked.ini");
    fs::create_hard_link(outside / "id_ed25519", logs / "key.log");
    fs::create_hard_link(outside / "shadow", logs / "shadow.log");
    write(logs / "innocent.log", "a line\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n");
    write(logs / "main_connector.log", "2026-01-01 00:00:00.000 UTC [1] [pytun] [info] started\n");
    write(configs / "ok.ini", "[tunnel]\nserver_host = b\n");
    REQUIRE(::mkfifo((configs / "fifo.ini").c_str(), 0600) == 0);
    REQUIRE(::mkfifo((logs / "fifo.log").c_str(), 0600) == 0);
    const bool root = ::geteuid() == 0;
    if (root) {
        write(configs / "foreign.ini", "[tunnel]\nserver_host = foreign\n");
        REQUIRE(::chown((configs / "foreign.ini").c_str(), 4242, 4242) == 0);
    }
    pytun::StatusServerOptions o;
    o.config_dir = configs.string();
    o.log_dir = logs.string();
    Server s(o);

    auto res = s.get("/configs", 10);
    REQUIRE(res); // a FIFO does not hang the request
    auto entries = h::unzip(res->body);
    CHECK(entries.count("configs/ok.ini") == 1);
    CHECK(entries.count("configs/linked.ini") == 0);
    CHECK(entries.count("configs/fifo.ini") == 0);
    const std::string &list = entries["REDACTED.txt"];
    CHECK(list.find("configs/linked.ini: left out: has 3 hard links") != std::string::npos);
    if (root) {
        CHECK(entries.count("configs/foreign.ini") == 0);
        CHECK(list.find("configs/foreign.ini: left out: owned by another user (uid 4242") != std::string::npos);
    }

    res = s.get("/logs", 10);
    REQUIRE(res);
    entries = h::unzip(res->body);
    CHECK(entries.count("main_connector.log") == 1);
    for (const char *name : {"key.log", "shadow.log", "innocent.log", "fifo.log"})
        CHECK_MESSAGE(entries.count(name) == 0, name);
    const std::string &left = entries["LEFT_OUT.txt"];
    CHECK(left.find("key.log: has 2 hard links") != std::string::npos);
    CHECK(left.find("innocent.log: contains a private key") != std::string::npos);
    for (auto &[name, content] : entries) {
        CHECK_MESSAGE(content.find("b3BlbnNzaC1rZXktdjEAAAA") == std::string::npos, name);
        CHECK_MESSAGE(content.find("MIIE") == std::string::npos, name);
        CHECK_MESSAGE(content.find("secret-hash") == std::string::npos, name);
    }
}

TEST_CASE("GET /logs over many small files holds little memory")
{
    TempDir dir;
    for (int i = 0; i < 16; ++i)
        write(dir.path / ("tunnel-" + std::to_string(i) + ".log"), "a small log line " + std::to_string(i) + "\n");
    pytun::StatusServerOptions o;
    o.log_dir = dir.path.string();
    Server s(o);
    REQUIRE(s.get("/healthz"));
    std::ofstream("/proc/self/clear_refs") << "5"; // resets the peak (VmHWM) to the current RSS
    const long before = status_kib("VmHWM:");
    auto res = s.get("/logs");
    const long peak = status_kib("VmHWM:");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    auto entries = h::unzip(res->body);
    CHECK(entries.size() == 16);
    CHECK(entries["tunnel-7.log"] == "a small log line 7\n");
    MESSAGE("peak RSS during GET /logs of 16 small files: +", (peak - before) / 1024, " MiB");
    // Was +1 GiB (64 MiB zero-filled per file, kept).
    CHECK(peak - before < 32 * 1024);
}

TEST_CASE("slow and silent clients: /status, /healthz and /readyz keep answering")
{
    // The attackers' sockets and the server's live in this one process.
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 4096);
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    pytun::StatusServerOptions o;
    o.request_timeout = 2000ms;
    Server s(o);
    const auto port = s.server->port();
    // 300 clients that send a header byte now and then and 100 that say
    // nothing, each reconnecting when cut off: more than max_pending (256).
    std::atomic<bool> attacking{true};
    std::atomic<int> cut{0};
    std::thread attacker([&] {
        std::vector<int> slow, silent;
        auto refill = [&](std::vector<int> &v, std::size_t n, bool dribble) {
            for (auto &fd : v) {
                char buf[512];
                if (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) == 0 || (fd < 0)) {
                    ::close(fd);
                    fd = -1;
                    ++cut;
                }
            }
            std::erase(v, -1);
            while (v.size() < n) {
                int fd = h::connect_to("127.0.0.1", port);
                if (fd < 0)
                    break;
                if (dribble)
                    ::send(fd, "GET /status HTTP/1.1\r\nX-a: ", 27, MSG_NOSIGNAL);
                v.push_back(fd);
            }
        };
        while (attacking) {
            refill(slow, 300, true);
            refill(silent, 100, false);
            for (int fd : slow)
                ::send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            std::this_thread::sleep_for(200ms);
        }
        for (int fd : slow)
            ::close(fd);
        for (int fd : silent)
            ::close(fd);
    });
    std::this_thread::sleep_for(2s);
    int answered = 0, asked = 0;
    double worst_ms = 0;
    for (int i = 0; i < 20; ++i) {
        for (const char *path : {"/status", "/healthz", "/readyz"}) {
            const auto start = std::chrono::steady_clock::now();
            auto r = h::raw(port, std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n", 5s);
            worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(
                                              std::chrono::steady_clock::now() - start).count());
            ++asked;
            // /readyz's 503 "not ready" is an answer; the guard's 503 is not.
            answered += r.status == 200 || (r.status == 503 && r.body.find("\"ready\"") != std::string::npos);
        }
    }
    attacking = false;
    attacker.join();
    MESSAGE(answered, " of ", asked, " probes answered under attack (", cut.load(),
            " attacking connections cut), slowest ", worst_ms, " ms");
    CHECK(cut > 0);
    CHECK(answered == asked);
}
