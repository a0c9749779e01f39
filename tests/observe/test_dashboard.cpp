// SPDX-License-Identifier: MIT
// The /ui dashboard in headless Chromium with 200 tunnels: rows render with
// the right state (after the page's own poll of /api/v1/tunnels), sorted and
// filtered as the URL's fragment says, errors with their age (old ones not
// red); a screenshot is kept as a test artifact.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <httplib.h>

#include <pytun/manager.h>
#include <pytun/status_server.h>

#include "fixture.h"
#include "http_util.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
namespace t = pytun::test;
namespace fs = std::filesystem;

namespace {

std::string chromium_path()
{
    for (const char *p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
        if (::access(p, X_OK) == 0)
            return p;
    return {};
}

// Runs Chromium in a process group of its own (it starts helpers) with
// stdout to `out`; the whole group is killed if it overruns `timeout`.
int run_chromium(const std::vector<std::string> &args, const fs::path &out, std::chrono::seconds timeout)
{
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::setpgid(0, 0);
        int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        int null = ::open("/dev/null", O_WRONLY);
        ::dup2(null, 2);
        std::vector<char *> argv;
        for (const auto &a : args)
            argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::setpgid(pid, pid);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(-pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(50ms);
    }
    // Helpers that outlived the browser belong to its group: end them too.
    ::kill(-pid, SIGKILL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<std::string> chromium_args(const std::string &chromium, const fs::path &profile)
{
    return {chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--user-data-dir=" + profile.string(),
            "--window-size=1280,800",
            // Let the page's timers and its fetch of /api/v1/tunnels run
            // before the DOM or the picture is taken.
            "--virtual-time-budget=5000"};
}

std::uint16_t dead_port()
{
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

// A port held by a listening socket of ours until the object goes.
struct BusyPort {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    std::uint16_t port = 0;
    BusyPort()
    {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(fd, 4) == 0);
        ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
        port = ntohs(addr.sin_port);
    }
    ~BusyPort() { ::close(fd); }
};

// The rows of a dumped DOM, in order: (tunnel, state, the row's HTML).
struct Row {
    std::string name, state, html;
};

std::vector<Row> rows_of(const std::string &dom)
{
    static const std::regex row("<tr data-tunnel=\"([^\"]+)\" data-state=\"([a-z_]+)\">");
    std::vector<Row> out;
    for (auto it = std::sregex_iterator(dom.begin(), dom.end(), row); it != std::sregex_iterator(); ++it) {
        const auto end = dom.find("</tr>", static_cast<std::size_t>(it->position()));
        out.push_back({(*it)[1].str(), (*it)[2].str(), dom.substr(static_cast<std::size_t>(it->position()),
                                                                 end - static_cast<std::size_t>(it->position()))});
    }
    return out;
}

std::string lower(std::string s)
{
    for (auto &c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

int severity(const std::string &state)
{
    static const std::map<std::string, int> rank = {
        {"backing_off", 0}, {"degraded", 1}, {"connecting", 2}, {"stopped", 3}, {"standby", 4}, {"up", 5}};
    return rank.at(state);
}

} // namespace

TEST_CASE("the dashboard sorts and filters 200 tunnels and says when each error happened, in headless Chromium")
{
    const std::string chromium = chromium_path();
    REQUIRE(!chromium.empty());
    t::SshServer sshd;
    t::EchoService echo;
    t::EchoService comes_back;   // down at first: its tunnel is degraded, then up with an old error
    comes_back.stop();
    pytun::ManagerOptions mo;
    mo.grace_period = 500ms;
    mo.backoff_initial = 60000ms; // keep the unreachable ones backing off while we look
    mo.backoff_max = 60000ms;
    pytun::TunnelManager manager(mo);
    auto tunnel = [&](const std::string &name, std::uint16_t service, std::uint16_t bastion) {
        pytun::TunnelOptions o = t::tunnel_options(sshd, service);
        o.name = name;
        o.server_port = bastion;
        o.keep_alive = 1s;
        o.connect_timeout = 2s;
        o.config_path = "/etc/pytun/configs/" + name + ".ini";
        return o;
    };
    const std::uint16_t no_bastion = dead_port();
    // A tunnel of forwards only: a local forward that serves, one whose port is taken, a SOCKS proxy.
    BusyPort busy;
    pytun::TunnelOptions forwards = tunnel("fw-db", 0, sshd.port());
    forwards.remote_host.clear();
    pytun::DynamicForward socks;
    socks.listen_port = 0;
    forwards.forwards = {pytun::LocalForward{"127.0.0.1", 0, "127.0.0.1", echo.port()},
                         pytun::LocalForward{"127.0.0.1", busy.port, "127.0.0.1", echo.port()}, socks};
    std::vector<pytun::TunnelOptions> set = {tunnel("ldap", echo.port(), sshd.port()),
                                             tunnel("intranet-web", dead_port(), sshd.port()),
                                             tunnel("recovered", comes_back.port(), sshd.port()),
                                             tunnel("erp", echo.port(), no_bastion), forwards};
    for (int i = 0; set.size() < 199; ++i) { // the 200th, a standby, comes once ldap holds its port
        char name[16];
        std::snprintf(name, sizeof name, "site-%03d", i);
        set.push_back(tunnel(name, echo.port(), no_bastion));
        set.back().listen_port = static_cast<std::uint16_t>(20000 + i);
    }
    REQUIRE(manager.apply(set).error == std::error_code{});
    auto status_of = [&](const std::string &name) {
        for (auto &s : manager.status())
            if (s.name == name)
                return s;
        return pytun::TunnelStatus{};
    };
    // Deadlines are generous: 200 tunnels start at once, which takes a while
    // under the sanitizers on a loaded machine.
    REQUIRE(t::wait_until([&] { return status_of("recovered").state == pytun::ManagedState::degraded; }, 120s));
    comes_back.start();
    REQUIRE(t::wait_until(
        [&] {
            std::size_t backing_off = 0;
            for (auto &s : manager.status())
                backing_off += s.state == pytun::ManagedState::backing_off;
            return status_of("ldap").state == pytun::ManagedState::up &&
                   status_of("recovered").state == pytun::ManagedState::up &&
                   status_of("fw-db").state == pytun::ManagedState::up &&
                   status_of("intranet-web").state == pytun::ManagedState::degraded && backing_off == 195;
        },
        120s));
    // A second connector's tunnel for ldap's port, in the same manager: the bastion refuses it, it waits.
    pytun::TunnelOptions pair = tunnel("pair", echo.port(), sshd.port());
    pair.listen_port = status_of("ldap").listen_port;
    pair.standby = true;
    set.push_back(pair);
    REQUIRE(manager.apply(set).error == std::error_code{});
    REQUIRE(t::wait_until([&] { return status_of("pair").state == pytun::ManagedState::standby; }, 60s));
    CHECK(!status_of("recovered").last_error_message.empty()); // the error it had is kept

    // Some traffic, so that the counters are not all zero.
    CHECK(t::run_echo_load(status_of("ldap").listen_port, 3, 300 * 1024, 30s).ok == 3);

    pytun::StatusServerOptions o;
    o.port = 0;
    o.tunnel_manager_id = "branch-office-7";
    pytun::StatusServer server(o, manager);
    std::string message;
    REQUIRE(server.start(message) == std::error_code{});
    const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/ui";

    const fs::path artifacts = PYTUN_DASHBOARD_ARTIFACT_DIR;
    char tmpl[] = "/tmp/pytun-chromium-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const fs::path work = tmpl;
    int dumps = 0;
    // The DOM after the page's scripts ran (and polled /api/v1/tunnels).
    auto dom_of = [&](const std::string &fragment) {
        const std::string tag = "dom-" + std::to_string(++dumps);
        auto args = chromium_args(chromium, work / ("profile-" + tag));
        args.push_back("--dump-dom");
        args.push_back(url + fragment);
        CHECK(run_chromium(args, work / tag, 90s) == 0);
        std::ifstream in(work / tag);
        return std::string{std::istreambuf_iterator<char>(in), {}};
    };

    {
        INFO("default view: every tunnel, problems first, then by name; errors say when, old ones are not red");
        const std::string dom = dom_of("");
        CHECK(dom.find("branch-office-7") != std::string::npos);
        std::smatch updates;
        REQUIRE(std::regex_search(dom, updates, std::regex("data-updates=\"([0-9]+)\"")));
        CHECK(std::stoi(updates[1].str()) >= 1); // the page's own poll succeeded
        CHECK(dom.find("showing 200 of 200 tunnels") != std::string::npos);
        const auto rows = rows_of(dom);
        REQUIRE(rows.size() == 200);
        for (std::size_t i = 1; i < rows.size(); ++i) {
            CAPTURE(rows[i].name);
            const int a = severity(rows[i - 1].state), b = severity(rows[i].state);
            CHECK((a < b || (a == b && lower(rows[i - 1].name) < lower(rows[i].name))));
        }
        CHECK(rows.front().name == "erp");
        std::map<std::string, Row> by_name;
        for (const auto &r : rows)
            by_name[r.name] = r;
        CHECK(by_name["ldap"].state == "up");
        CHECK(by_name["intranet-web"].state == "degraded");
        CHECK(by_name["erp"].state == "backing_off");
        CHECK(by_name["recovered"].state == "up");
        CHECK(by_name["pair"].state == "standby");
        CHECK(by_name["pair"].html.find("another connector serves the port") != std::string::npos);
        CHECK(dom.find("class=\"pill\" data-state=\"standby\"") != std::string::npos); // its count
        // A failing tunnel's error is current (red) and says when it happened;
        // the recovered tunnel's error is history; a healthy one has none.
        CHECK(by_name["erp"].html.find("class=\"error current\" data-time=\"") != std::string::npos);
        CHECK(by_name["intranet-web"].html.find("class=\"error current\"") != std::string::npos);
        CHECK(by_name["recovered"].html.find("class=\"error old\" data-time=\"") != std::string::npos);
        CHECK(by_name["recovered"].html.find("ago, before it came back") != std::string::npos);
        CHECK(by_name["ldap"].html.find("<td class=\"error\"></td>") != std::string::npos);
        // A tunnel's forwards: where each serves, or in red why not; no list for a classic tunnel.
        const std::string &fw = by_name["fw-db"].html;
        CHECK(by_name["fw-db"].state == "up");
        CHECK(fw.find("via 127.0.0.1:" + std::to_string(sshd.port())) != std::string::npos);
        CHECK(std::regex_search(fw, std::regex("<li class=\"forward serving\">L 127\\.0\\.0\\.1:0 -&gt; 127\\.0\\.0\\.1:" +
                                                   std::to_string(echo.port()) + " · port [0-9]+, 0 open</li>")));
        CHECK(fw.find("<li class=\"forward failed\">L 127.0.0.1:" + std::to_string(busy.port) + " -&gt; 127.0.0.1:" +
                      std::to_string(echo.port()) + " · NOT serving: cannot listen on 127.0.0.1:" +
                      std::to_string(busy.port)) != std::string::npos);
        CHECK(fw.find("<li class=\"forward serving\">D 127.0.0.1:0 (SOCKS)") != std::string::npos);
        CHECK(fw.find("none (forwards only)") != std::string::npos);
        CHECK(by_name["ldap"].html.find("class=\"forwards\"") == std::string::npos);
        CHECK(std::regex_search(by_name["erp"].html, std::regex("class=\"sub when\"[^>]*>[0-9]+[smh][^<]* ago<")));
    }
    {
        INFO("sorted by name, descending (a bookmarkable #sort=-name)");
        const auto rows = rows_of(dom_of("#sort=-name"));
        REQUIRE(rows.size() == 200);
        for (std::size_t i = 1; i < rows.size(); ++i)
            CHECK(lower(rows[i - 1].name) > lower(rows[i].name));
        CHECK(rows.front().name == "site-193");
        CHECK(rows.back().name == "erp");
    }
    {
        INFO("filtered by text and by state");
        const std::string dom = dom_of("#q=SITE-01");
        const auto rows = rows_of(dom);
        REQUIRE(rows.size() == 10);
        for (const auto &r : rows)
            CHECK(r.name.rfind("site-01", 0) == 0);
        CHECK(dom.find("showing 10 of 200 tunnels") != std::string::npos);

        const auto up = rows_of(dom_of("#state=up&sort=name"));
        REQUIRE(up.size() == 3);
        CHECK(up[0].name == "fw-db");
        CHECK(up[1].name == "ldap");
        CHECK(up[2].name == "recovered");

        // The error text is searched too: every bastion-refused tunnel, nothing else.
        const auto refused = rows_of(dom_of("#q=" + std::to_string(no_bastion)));
        CHECK(refused.size() == 195);
        // A forward's error is searched too.
        const auto busy_rows = rows_of(dom_of("#q=cannot%20listen%20on%20127.0.0.1:" + std::to_string(busy.port)));
        REQUIRE(busy_rows.size() == 1);
        CHECK(busy_rows[0].name == "fw-db");
    }
    {
        INFO("the picture, kept next to the test binary");
        const fs::path shot = artifacts / "dashboard.png";
        fs::remove(shot);
        auto shot_args = chromium_args(chromium, work / "profile-shot");
        shot_args.push_back("--screenshot=" + shot.string());
        shot_args.push_back(url + "#sort=name");
        CHECK(run_chromium(shot_args, work / "shot.log", 90s) == 0);
        std::ifstream png(shot, std::ios::binary);
        std::string head(8, '\0');
        png.read(head.data(), 8);
        CHECK(head == std::string("\x89PNG\r\n\x1a\n", 8));
        CHECK(fs::file_size(shot) > 10000);
        MESSAGE("screenshot: ", shot.string());
    }

    std::error_code ec;
    fs::remove_all(work, ec);
    server.stop();
    manager.stop();
}

int main(int argc, char **argv)
{
    // The one tool this test cannot do without; CI installs it (scripts/setup).
    if (chromium_path().empty())
        t::skip("chromium not installed (apt-get install chromium)");
    doctest::Context context(argc, argv);
    return context.run();
}
