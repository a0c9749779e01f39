// SPDX-License-Identifier: MIT
// The /ui dashboard in headless Chromium: rows render with the right state
// (after the page's own poll of /api/v1/tunnels), and a screenshot is kept
// as a test artifact.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
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

} // namespace

TEST_CASE("the dashboard renders a row per tunnel with its state, in headless Chromium")
{
    const std::string chromium = chromium_path();
    REQUIRE(!chromium.empty());
    t::SshServer sshd;
    t::EchoService echo;
    pytun::ManagerOptions mo;
    mo.grace_period = 500ms;
    mo.backoff_initial = 10000ms; // keep the unreachable one backing off while we look
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
    REQUIRE(manager.apply({tunnel("ldap", echo.port(), sshd.port()), tunnel("intranet-web", dead_port(), sshd.port()),
                           tunnel("erp", echo.port(), dead_port())})
                .error == std::error_code{});
    auto state_of = [&](const std::string &name) {
        for (auto &s : manager.status())
            if (s.name == name)
                return s.state;
        return pytun::ManagedState::stopped;
    };
    REQUIRE(t::wait_until(
        [&] {
            return state_of("ldap") == pytun::ManagedState::up &&
                   state_of("intranet-web") == pytun::ManagedState::degraded &&
                   state_of("erp") == pytun::ManagedState::backing_off;
        },
        30s));

    // Some traffic, so that the counters are not all zero.
    for (auto &s : manager.status())
        if (s.name == "ldap")
            CHECK(t::run_echo_load(s.listen_port, 3, 300 * 1024, 30s).ok == 3);

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

    // The DOM after the page's scripts ran.
    auto args = chromium_args(chromium, work / "profile-dom");
    args.push_back("--dump-dom");
    args.push_back(url);
    const fs::path dom_file = work / "dom.html";
    CHECK(run_chromium(args, dom_file, 90s) == 0);
    std::ifstream in(dom_file);
    const std::string dom{std::istreambuf_iterator<char>(in), {}};
    CHECK(dom.find("branch-office-7") != std::string::npos);
    for (const auto &[name, state] : {std::pair<std::string, std::string>{"ldap", "up"},
                                      {"intranet-web", "degraded"},
                                      {"erp", "backing_off"}}) {
        CAPTURE(name);
        std::regex row("<tr data-tunnel=\"" + name + "\" data-state=\"([a-z_]+)\">");
        std::smatch m;
        REQUIRE(std::regex_search(dom, m, row));
        CHECK(m[1].str() == state);
    }
    // Exactly three rows, and the page's own poll succeeded at least once.
    const std::regex any_row("<tr data-tunnel=");
    CHECK(std::distance(std::sregex_iterator(dom.begin(), dom.end(), any_row), std::sregex_iterator()) == 3);
    std::smatch updates;
    REQUIRE(std::regex_search(dom, updates, std::regex("data-updates=\"([0-9]+)\"")));
    CHECK(std::stoi(updates[1].str()) >= 1);
    // The unreachable bastion's error is shown in words.
    CHECK(dom.find("class=\"error\">") != std::string::npos);

    // The picture, kept next to the test binary.
    const fs::path shot = artifacts / "dashboard.png";
    fs::remove(shot);
    auto shot_args = chromium_args(chromium, work / "profile-shot");
    shot_args.push_back("--screenshot=" + shot.string());
    shot_args.push_back(url);
    CHECK(run_chromium(shot_args, work / "shot.log", 90s) == 0);
    std::ifstream png(shot, std::ios::binary);
    std::string head(8, '\0');
    png.read(head.data(), 8);
    CHECK(head == std::string("\x89PNG\r\n\x1a\n", 8));
    CHECK(fs::file_size(shot) > 10000);
    MESSAGE("screenshot: ", shot.string());

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
