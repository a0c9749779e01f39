// SPDX-License-Identifier: MIT
// Access control of the inspection API on a non-loopback address: the server
// listens inside a network namespace made here (198.18.77.1), clients come
// from a second namespace over a veth pair (198.18.77.2), as from another host.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <pytun/log.h>
#include <pytun/manager.h>
#include <pytun/status_server.h>

#include "fixture.h"
#include "http_util.h"
#include "tunnel_options.h"

using namespace std::chrono_literals;
namespace t = pytun::test;
namespace h = pytun::test::http;
using json = nlohmann::json;

namespace {

const std::string k_server_address = "198.18.77.1";

std::string suffix()
{
    return std::to_string(::getpid());
}

int sh(const std::string &command)
{
    return std::system((command + " >/dev/null 2>&1").c_str());
}

// Two namespaces joined by a veth pair; removed again (which removes the
// veth too) when the test ends, also when it fails.
struct Namespaces {
    std::string server = "pytun-http-s" + suffix();
    std::string client = "pytun-http-c" + suffix();
    Namespaces()
    {
        const std::string a = "pyh" + suffix() + "a", b = "pyh" + suffix() + "b";
        const std::string steps[] = {
            "ip netns add " + server,
            "ip netns add " + client,
            "ip link add " + a + " type veth peer name " + b,
            "ip link set " + a + " netns " + server,
            "ip link set " + b + " netns " + client,
            "ip -n " + server + " addr add " + k_server_address + "/24 dev " + a,
            "ip -n " + client + " addr add 198.18.77.2/24 dev " + b,
            "ip -n " + server + " link set lo up",
            "ip -n " + server + " link set " + a + " up",
            "ip -n " + client + " link set lo up",
            "ip -n " + client + " link set " + b + " up",
        };
        for (const auto &step : steps)
            REQUIRE_MESSAGE(sh(step) == 0, step);
    }
    ~Namespaces()
    {
        sh("ip netns del " + server);
        sh("ip netns del " + client);
    }
};

// Run `fn` on a thread that has entered the namespace `name`: sockets it
// creates live there; the rest of the process stays where it is.
void in_netns(const std::string &name, const std::function<void()> &fn)
{
    std::exception_ptr error;
    std::thread th([&] {
        try {
            int fd = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0)
                throw std::runtime_error("cannot enter network namespace " + name);
            ::close(fd);
            fn();
        } catch (...) {
            error = std::current_exception();
        }
    });
    th.join();
    if (error)
        std::rethrow_exception(error);
}

struct Reply {
    int status = 0;
    std::string body;
    std::string content_type;
};

Reply get(std::uint16_t port, const std::string &path, const std::string &token = {})
{
    httplib::Client c(k_server_address, port);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(10, 0);
    httplib::Headers headers;
    if (!token.empty())
        headers.emplace("Authorization", "Bearer " + token);
    auto r = c.Get(path.c_str(), headers);
    if (!r)
        return {};
    return {r->status, r->body, r->get_header_value("Content-Type")};
}

struct LogCapture {
    std::mutex mutex;
    std::string all;
    LogCapture()
    {
        pytun::set_log_handler([this](pytun::LogLevel, std::string_view, std::string_view message) {
            std::lock_guard lock(mutex);
            all += std::string(message) + "\n";
        });
    }
    ~LogCapture() { pytun::set_log_handler(nullptr); }
    std::string text()
    {
        std::lock_guard lock(mutex);
        return all;
    }
};

// A manager with one real tunnel through the sshd fixture (in the default
// namespace: only the HTTP server moves).
struct Manager {
    t::SshServer sshd;
    t::EchoService echo;
    pytun::TunnelManager manager;
    Manager()
    {
        pytun::TunnelOptions o = t::tunnel_options(sshd, echo.port());
        o.name = "alpha";
        o.keep_alive = 1s;
        REQUIRE(manager.apply({o}).error == std::error_code{});
        REQUIRE(t::wait_until([&] {
            auto s = manager.status();
            return !s.empty() && s[0].state == pytun::ManagedState::up;
        }, 30s));
    }
    ~Manager() { manager.stop(); }
};

} // namespace

TEST_CASE("non-loopback bind without a token: status served, archives 403, start-up log says why")
{
    Namespaces ns;
    Manager m;
    LogCapture log;
    pytun::StatusServerOptions o;
    o.bind_address = "0.0.0.0";
    o.port = 0;
    o.tunnel_manager_id = "netns-1";
    pytun::StatusServer server(o, m.manager);
    std::string message;
    in_netns(ns.server, [&] { REQUIRE(server.start(message) == std::error_code{}); });
    CHECK(server.requires_token());
    const std::string startup = log.text();
    CHECK(startup.find("without inspection_token") != std::string::npos);
    CHECK(startup.find("/configs and /logs answer 403") != std::string::npos);

    in_netns(ns.client, [&] {
        auto status = get(server.port(), "/status");
        CHECK(status.status == 200);
        CHECK(json::parse(status.body)["alpha"]["status"] == true);
        CHECK(get(server.port(), "/metrics").status == 200);
        for (const char *path : {"/configs", "/logs"}) {
            CAPTURE(path);
            auto r = get(server.port(), path);
            CHECK(r.status == 403);
            auto j = json::parse(r.body);
            CHECK(j["error"].get<std::string>().find("inspection_token") != std::string::npos);
            CHECK(j["tunnel_manager_id"] == "netns-1");
            // Not even a right-looking token opens them: there is none to match.
            CHECK(get(server.port(), path, "guess").status == 403);
        }
    });
    server.stop();
}

TEST_CASE("non-loopback bind with a token: 403 without it or with a wrong one, 200 with it, everywhere")
{
    Namespaces ns;
    Manager m;
    LogCapture log;
    pytun::StatusServerOptions o;
    o.bind_address = k_server_address;
    o.port = 0;
    o.token = "s3cret-T0ken";
    o.tunnel_manager_id = "netns-2";
    pytun::StatusServer server(o, m.manager);
    std::string message;
    in_netns(ns.server, [&] { REQUIRE(server.start(message) == std::error_code{}); });
    CHECK(log.text().find("every endpoint requires Authorization: Bearer") != std::string::npos);
    CHECK(log.text().find("s3cret-T0ken") == std::string::npos);

    in_netns(ns.client, [&] {
        for (const char *path : {"/", "/status", "/configs", "/logs", "/metrics", "/healthz", "/readyz",
                                 "/api/v1/tunnels", "/ui", "/unknown"}) {
            CAPTURE(path);
            auto none = get(server.port(), path);
            CHECK(none.status == 403);
            CHECK(json::parse(none.body).contains("error"));
            CHECK(get(server.port(), path, "s3cret-T0ke").status == 403);
            CHECK(get(server.port(), path, "s3cret-T0ken-and-more").status == 403);
            auto with = get(server.port(), path, "s3cret-T0ken");
            CHECK(with.status == 200);
        }
        auto configs = get(server.port(), "/configs", "s3cret-T0ken");
        CHECK(configs.content_type == "application/zip");
        CHECK(h::unzip(configs.body).count("REDACTED.txt") == 1);
        // Other schemes do not count.
        httplib::Client c(k_server_address, server.port());
        auto basic = c.Get("/status", {{"Authorization", "Basic czNjcmV0LVQwa2Vu"}});
        REQUIRE(basic);
        CHECK(basic->status == 403);
    });
    server.stop();
}

TEST_CASE("the default bind is loopback: unreachable from the other namespace")
{
    Namespaces ns;
    Manager m;
    pytun::StatusServerOptions o;
    o.port = 0;
    pytun::StatusServer server(o, m.manager);
    std::string message;
    in_netns(ns.server, [&] { REQUIRE(server.start(message) == std::error_code{}); });
    CHECK(!server.requires_token());
    in_netns(ns.client, [&] { CHECK(get(server.port(), "/").status == 0); });
    server.stop();
}

int main(int argc, char **argv)
{
    // Namespaces need root and iproute2; on CI both are there.
    if (::geteuid() != 0)
        t::skip("needs root to create network namespaces");
    if (sh("command -v ip") != 0)
        t::skip("iproute2 (ip) not installed");
    doctest::Context context(argc, argv);
    return context.run();
}
