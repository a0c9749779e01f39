// SPDX-License-Identifier: MIT
// Bastions that go away, against real OpenSSH sshd's on loopback: back within
// 1 s of the bastion listening again whatever the outage's length (the shared
// reachability probe), no login storm from a bastion that accepts TCP but
// refuses logins, failover to the next bastion of a list and the return to
// the first.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "manager_helpers.h"

#include <nlohmann/json.hpp>

#include <pytun/alerter.h>
#include <pytun/status_server.h>

#include "../observe/http_util.h"

namespace {

std::size_t count(const std::string &text, const std::string &needle)
{
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size()))
        ++n;
    return n;
}

/// The library's defaults for retries (1 s doubling to 60 s, reset after 30 s
/// up): the outage must grow the backoff as it would in production.
pytun::ManagerOptions production_timings()
{
    pytun::ManagerOptions o;
    o.threads = 2;
    o.grace_period = 500ms;
    return o;
}

/// `n` reverse tunnels through `server`, each to its own echo service.
struct TunnelSet {
    std::vector<std::unique_ptr<t::EchoService>> services;
    std::vector<std::uint16_t> ports;
    std::vector<pytun::TunnelOptions> options;

    TunnelSet(const t::SshServer &server, std::size_t n)
    {
        ports = free_ports(n);
        for (std::size_t i = 0; i < n; ++i) {
            services.push_back(std::make_unique<t::EchoService>());
            options.push_back(options_for(server, "t" + std::to_string(i), ports[i], services[i]->port()));
        }
    }

    bool all_serving(const pytun::TunnelManager &manager) const
    {
        for (std::size_t i = 0; i < options.size(); ++i)
            if (!is_state(manager, options[i].name, ManagedState::up) || !echo_once(ports[i]))
                return false;
        return true;
    }
    bool none_serving(const pytun::TunnelManager &manager) const
    {
        for (const auto &s : manager.status())
            if (serving(s.state))
                return false;
        return true;
    }
};

// The bound, for the optimized build; ASan + UBSan make the SSH
// set-up several times slower on this 2-core machine.
#if defined(__SANITIZE_ADDRESS__)
constexpr auto k_back_within = 2000ms;
#else
constexpr auto k_back_within = 1000ms;
#endif

struct Outcome {
    long long back_ms = -1;    ///< from sshd listening until the last tunnel was up again (its event)
    long long echoed_ms = -1;  ///< ... until an echo through each had also come back
    std::size_t logins = 0;    ///< publickey logins sshd saw from its restart until then
    std::size_t failed_logins = 0;
};

/// Stop sshd for `away`, start it on the same port, and time the return.
Outcome outage(t::SshServer &server, const TunnelSet &set, pytun::TunnelManager &manager, const EventLog &events,
               std::chrono::seconds away)
{
    server.stop();
    {
        const bool left = t::wait_until([&] { return set.none_serving(manager); }, 10s);
        INFO(describe(manager.status()));
        REQUIRE(left);
    }
    std::this_thread::sleep_for(away); // the outage itself
    const auto log_offset = server.log().size();
    server.start(); // returns once sshd accepts TCP
    const auto listening_at = Clock::now();
    Outcome out;
    const bool back = t::wait_until([&] { return set.all_serving(manager); }, 120s);
    out.echoed_ms = ms_since(listening_at);
    {
        INFO(describe(manager.status()));
        REQUIRE(back);
    }
    // When each tunnel was up again: its bastion port bound, serving.
    for (const auto &o : set.options) {
        long long up_ms = -1;
        for (const auto &e : events.snapshot())
            if (e.event.name == o.name && e.at >= listening_at && e.event.to == ManagedState::up) {
                up_ms = ms_between(listening_at, e.at);
                break;
            }
        INFO(o.name << "\n" << events.dump());
        REQUIRE(up_ms >= 0);
        out.back_ms = std::max(out.back_ms, up_ms);
    }
    const std::string log = server.log().substr(log_offset);
    out.logins = count(log, "Accepted publickey");
    out.failed_logins = count(log, "Failed publickey");
    return out;
}

} // namespace

TEST_CASE("sshd away 10 s, then 60 s: all 10 tunnels serve within 1 s of it listening again; one login each")
{
    t::SshServer server;
    TunnelSet set(server, 10);
    pytun::TunnelManager manager(production_timings());
    EventLog events(manager);
    REQUIRE_FALSE(manager.apply(set.options).error);
    {
        const bool up = t::wait_until([&] { return set.all_serving(manager); }, 30s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    for (auto away : {10s, 60s}) {
        const Outcome o = outage(server, set, manager, events, away);
        MESSAGE("sshd away " << away.count() << " s: all 10 tunnels up " << o.back_ms
                             << " ms after it listened again (echoed through each " << o.echoed_ms
                             << " ms after); sshd saw " << o.logins << " logins (" << o.failed_logins
                             << " failed) until then");
        CHECK(o.back_ms <= k_back_within.count());
        // One login per tunnel: the probe is a bare TCP connect, and no
        // tunnel tried to log in before sshd answered.
        CHECK(o.logins == set.options.size());
        CHECK(o.failed_logins == 0);
    }
}

TEST_CASE("sshd back but refusing logins: the probe wakes each tunnel once, then the backoff rules (no login storm)")
{
    t::SshServer server;
    TunnelSet set(server, 3);
    pytun::ManagerOptions mo = production_timings();
    mo.backoff_max = 4000ms;
    pytun::TunnelManager manager(mo);
    REQUIRE_FALSE(manager.apply(set.options).error);
    {
        const bool up = t::wait_until([&] { return set.all_serving(manager); }, 30s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    server.stop();
    REQUIRE(t::wait_until([&] { return set.none_serving(manager); }, 10s));
    std::this_thread::sleep_for(3s); // long enough for the backoff to pass its first steps
    const auto log_offset = server.log().size();
    // sshd comes back, accepts TCP, but no key is authorized any more.
    server.configure("AuthorizedKeysFile none");
    constexpr auto k_watch = 8s;
    std::this_thread::sleep_for(k_watch);
    const std::string log = server.log().substr(log_offset);
    const std::size_t refused = count(log, "Failed publickey");
    const std::size_t accepted = count(log, "Accepted publickey");
    MESSAGE("sshd refusing logins: " << refused << " refused logins from 3 tunnels in " << k_watch.count()
                                     << " s (a probe-paced retry would be about "
                                     << 3 * (k_watch.count() * 1000 / mo.reachability_probe.count()) << ")");
    INFO(describe(manager.status()));
    CHECK(accepted == 0);
    // Each tunnel: the attempt the probe starts at once, then retries at
    // least half the backoff apart (>= 1 s, then >= 2 s, capped at 4 s
    // jittered down to 2 s): at most 1 + 4 in 8 s.
    CHECK(refused >= 3);
    CHECK(refused <= 3 * 5);
    for (const auto &o : set.options) {
        auto s = status_of(manager, o.name);
        REQUIRE(s);
        CHECK(s->state == ManagedState::backing_off);
        CHECK(s->last_error == Errc::key_not_authorized);
    }
}

namespace {

std::string get(std::uint16_t port, const std::string &path)
{
    auto r = t::http::raw(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 5s);
    return r.status == 200 ? r.body : std::string();
}

/// Keeps every alert the Alerter hands it.
class RecordingChannel final : public pytun::AlertChannel {
public:
    struct Shared {
        std::mutex mutex;
        std::vector<pytun::Alert> alerts;
    };
    explicit RecordingChannel(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    std::string name() const override { return "recorder"; }
    std::error_code send(const pytun::Alert &alert, std::string &) override
    {
        std::lock_guard lock(shared_->mutex);
        shared_->alerts.push_back(alert);
        return {};
    }

private:
    std::shared_ptr<Shared> shared_;
};

std::string bastion_of(const pytun::TunnelManager &manager, const std::string &name)
{
    auto s = status_of(manager, name);
    return s && serving(s->state) ? s->bastion : std::string();
}

} // namespace

TEST_CASE("failover: first bastion killed, the second serves within 3 s; the first back: the tunnel returns after "
          "the stable period without cutting a connection; status, metrics and alerts say which serves")
{
    t::SshServer a;
    t::SshServer b;
    TempDir dir;
    // One key and one known_hosts file for both bastions, as an operator would have.
    {
        std::ifstream pub(a.key_ed25519() + ".pub");
        std::string line;
        std::getline(pub, line);
        b.authorize(line);
        std::ifstream ka(a.known_hosts_bracketed()), kb(b.known_hosts_bracketed());
        std::ostringstream both;
        both << ka.rdbuf() << kb.rdbuf();
        write_file(dir.path / "known_hosts", both.str());
    }
    t::EchoService echo;
    pytun::TunnelOptions o = options_for(a, "failover", 0, echo.port());
    o.known_hosts_file = (dir.path / "known_hosts").string();
    o.failover = {pytun::Bastion{"127.0.0.1", b.port()}};
    o.failback_after = 2s;
    // Both "bastions" share this machine's loopback: each picks its own port.
    o.listen_port = 0;
    const std::string first = "127.0.0.1:" + std::to_string(a.port());
    const std::string second = "127.0.0.1:" + std::to_string(b.port());

    pytun::ManagerOptions mo = fast_manager_options();
    mo.grace_period = 10s; // the connection open through the second finishes inside it
    pytun::TunnelManager manager(mo);
    EventLog events(manager);
    auto alerts = std::make_shared<RecordingChannel::Shared>();
    pytun::Alerter alerter{pytun::ConnectorConfig{}};
    alerter.add_channel(std::make_unique<RecordingChannel>(alerts));
    REQUIRE_FALSE(alerter.start());
    auto forwarding = pytun::forward_alerts(manager, alerter);
    auto alerted = [&](pytun::Alert::Event kind, const std::string &words) {
        std::lock_guard lock(alerts->mutex);
        for (const auto &alert : alerts->alerts)
            if (alert.event == kind && alert.tunnel_name == "failover" && alert.body.find(words) != std::string::npos)
                return true;
        return false;
    };
    pytun::StatusServerOptions so;
    so.port = 0;
    so.tunnel_manager_id = "bastions-test";
    pytun::StatusServer http(so, manager);
    std::string message;
    REQUIRE_FALSE(http.start(message));
    REQUIRE_FALSE(manager.apply({o}).error);

    auto listen_port = [&] { return status_of(manager, "failover")->listen_port; };
    auto serves_through = [&](const std::string &bastion) {
        return bastion_of(manager, "failover") == bastion && echo_once(listen_port());
    };
    auto metrics_say = [&](const std::string &bastion, int index) {
        const std::string metrics = get(http.port(), "/metrics");
        INFO(metrics);
        return t::http::metric(metrics, "pytun_tunnel_bastion_info{tunnel=\"failover\",bastion=\"" + bastion +
                                             "\",index=\"" + std::to_string(index) + "\"}") == 1;
    };
    auto api_says = [&](const std::string &bastion) {
        const auto j = nlohmann::json::parse(get(http.port(), "/api/v1/tunnels"));
        const auto &tunnel = j["tunnels"][0];
        INFO(tunnel.dump());
        return tunnel["bastion"] == bastion && tunnel["bastion_since"].is_number() &&
               tunnel["bastions"] == nlohmann::json::array({first, second}) && tunnel["server_port"] == a.port();
    };
    {
        const bool up = t::wait_until([&] { return serves_through(first); }, 30s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    CHECK(metrics_say(first, 0));
    CHECK(api_says(first));
    {
        const auto status = nlohmann::json::parse(get(http.port(), "/status"));
        INFO(status.dump());
        CHECK(status["failover"]["bastion"] == first);
    }

    // The first bastion dies.
    const auto killed_at = Clock::now();
    a.kill_hard();
    const bool failed_over = t::wait_until([&] { return serves_through(second); }, 3s);
    const long long failover_ms = ms_since(killed_at);
    {
        INFO(describe(manager.status()) << events.dump());
        REQUIRE(failed_over);
    }
    MESSAGE("first bastion killed: the tunnel served through the second " << failover_ms << " ms later");
    CHECK(t::wait_until([&] { return alerted(pytun::Alert::Event::failed_over, "failover failed over from bastion " +
                                                                               first + " to " + second); }, 5s));
    CHECK_FALSE(alerted(pytun::Alert::Event::down, "")); // it served all along
    CHECK(failover_ms <= 3000);
    CHECK(metrics_say(second, 1));
    CHECK(api_says(second));
    {
        bool told = false;
        for (const auto &e : events.snapshot())
            told = told || (e.event.bastion_from == first && e.event.bastion_to == second && !e.event.bastion_returned);
        INFO(events.dump());
        CHECK(told);
    }

    // A connection through the second bastion, streaming while the tunnel returns.
    const std::uint16_t second_port = listen_port();
    EchoStream stream(second_port, 42);
    REQUIRE(t::wait_until([&] { return stream.verified() > 64 * 1024; }, 5s));

    a.start(); // the same port; returns once it accepts TCP
    const auto listening_at = Clock::now();
    const bool returned = t::wait_until([&] { return serves_through(first); }, 15s);
    const long long return_ms = ms_since(listening_at);
    {
        INFO(describe(manager.status()) << events.dump());
        REQUIRE(returned);
    }
    MESSAGE("first bastion back: the tunnel returned to it " << return_ms << " ms after it listened (failback_after "
                                                               "2 s)");
    CHECK(return_ms >= 1900); // not before it had answered for the stable period
    CHECK(t::wait_until([&] { return alerted(pytun::Alert::Event::returned, "failover returned to bastion " + first +
                                                                            " (from " + second + ")"); }, 5s));
    CHECK(listen_port() != second_port);
    CHECK(metrics_say(first, 0));
    CHECK(api_says(first));
    {
        bool told = false;
        for (const auto &e : events.snapshot())
            told = told || (e.event.bastion_from == second && e.event.bastion_to == first && e.event.bastion_returned);
        INFO(events.dump());
        CHECK(told);
    }
    // The connection through the second bastion still flows, byte-exact, to its end.
    const auto verified_at_return = stream.verified();
    CHECK(t::wait_until([&] { return stream.verified() > verified_at_return + 64 * 1024; }, 5s));
    stream.finish();
    INFO(stream.error());
    CHECK(stream.error().empty());
    CHECK(stream.clean_eof());
    CHECK(stream.verified() == stream.sent());
    MESSAGE("the connection through the second bastion carried " << stream.verified()
                                                                  << " bytes intact across the return");
    manager.stop();
    alerter.stop();
}
