// SPDX-License-Identifier: MIT
// pytun::TunnelManager against a real OpenSSH sshd on loopback: 20 tunnels
// from a config directory, sshd crash and restart, stale bastion port, reload,
// local service down (degraded), events and a status() that never waits.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "manager_helpers.h"

TEST_CASE("20 tunnels from a config directory: all up, traffic through all at once intact; status() never waits")
{
    t::SshServer server;
    ConfigInstallation install(server, 20);
    pytun::TunnelManager manager(fast_manager_options());

    pytun::ApplyResult applied = manager.apply(install.options);
    INFO(applied.message);
    REQUIRE_FALSE(applied.error);
    CHECK(applied.started.size() == 20);
    CHECK(applied.kept.empty());
    CHECK(applied.stopped.empty());

    const auto t0 = Clock::now();
    bool up = t::wait_until([&] { return install.all(manager, ManagedState::up); }, 30s);
    INFO(describe(manager.status()));
    REQUIRE(up);
    MESSAGE("20 tunnels up in " << ms_since(t0) << " ms");
    for (const auto &s : manager.status()) {
        CHECK(s.started_times == 1);
        CHECK(s.service_checked);
        CHECK(s.service_reachable);
        CHECK(s.config_path.ends_with(s.name + ".ini"));
    }

    // Traffic through all 20 at once: 10 connections x 256 KiB each way per tunnel.
    constexpr std::size_t k_conns = 10, k_bytes = 256 * 1024;
    std::vector<t::EchoLoadResult> results(install.listen_ports.size());
    {
        std::vector<std::thread> threads;
        for (std::size_t i = 0; i < install.listen_ports.size(); ++i)
            threads.emplace_back([&, i] { results[i] = t::run_echo_load(install.listen_ports[i], k_conns, k_bytes); });
        for (auto &th : threads)
            th.join();
    }
    for (std::size_t i = 0; i < results.size(); ++i) {
        INFO("tunnel-" << i << " errors: " << (results[i].errors.empty() ? "" : results[i].errors[0]));
        CHECK(results[i].ok == k_conns);
        CHECK(results[i].failed == 0);
    }
    // The counters saw it, per tunnel.
    for (const auto &s : manager.status()) {
        INFO(s.name);
        CHECK(s.traffic.connections_total >= k_conns);
        CHECK(s.traffic.bytes_to_service >= k_conns * k_bytes);
        CHECK(s.traffic.bytes_from_service >= k_conns * k_bytes);
    }

    // Every local service dead: the probes fail, and status() still answers at once.
    for (auto &svc : install.services)
        svc->stop();
    const auto dead_since = Clock::now();
    long long slowest_us = 0;
    std::size_t calls = 0;
    bool all_degraded = false;
    // Keep asking across several probe rounds (keep_alive is 1 s).
    while (Clock::now() - dead_since < 3500ms) {
        const auto c0 = Clock::now();
        auto st = manager.status();
        const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c0).count();
        slowest_us = std::max<long long>(slowest_us, took);
        ++calls;
        CHECK(st.size() == 20);
        CHECK(took < 50000);
        if (!all_degraded && install.all(manager, ManagedState::degraded)) {
            all_degraded = true;
            MESSAGE("all 20 degraded " << ms_since(dead_since) << " ms after their services stopped");
        }
        std::this_thread::sleep_for(2ms);
    }
    MESSAGE("status() with dead services: " << calls << " calls, slowest " << slowest_us << " us");
    INFO(describe(manager.status()));
    CHECK(all_degraded);
    for (const auto &s : manager.status()) {
        CHECK(s.service_checked);
        CHECK_FALSE(s.service_reachable);
    }

    // Services back: back to up, and traffic flows again.
    for (auto &svc : install.services)
        svc->start();
    CHECK(t::wait_until([&] { return install.all(manager, ManagedState::up); }, 5s));
    for (auto port : install.listen_ports)
        CHECK(echo_once(port));

    const auto s0 = Clock::now();
    manager.stop();
    MESSAGE("stop() of 20 tunnels took " << ms_since(s0) << " ms");
    CHECK(install.all(manager, ManagedState::stopped));
    // The bastion closes each listener when it has processed the cancel or
    // the disconnect, which may be a moment after stop() returned.
    std::size_t still_open = 0;
    for (auto port : install.listen_ports)
        still_open += t::tcp_port_accepts(port) ? 1 : 0;
    MESSAGE(still_open << " of 20 bastion ports still accepted right after stop() returned");
    for (auto port : install.listen_ports)
        CHECK(t::wait_until([&] { return !t::tcp_port_accepts(port); }, 5s));
}

TEST_CASE("sshd killed: all 20 leave up within 2 s; restarted: all serve within 3 s of sshd listening")
{
    t::SshServer server;
    ConfigInstallation install(server, 20);
    pytun::TunnelManager manager(fast_manager_options());
    EventLog events(manager);
    REQUIRE_FALSE(manager.apply(install.options).error);
    {
        bool up = t::wait_until([&] { return install.all(manager, ManagedState::up); }, 30s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    for (auto port : install.listen_ports)
        REQUIRE(echo_once(port));
    std::map<std::string, std::uint64_t> started_before;
    for (const auto &s : manager.status())
        started_before[s.name] = s.started_times;

    // Crash.
    const auto killed_at = Clock::now();
    server.kill_hard();
    auto none_serving = [&] {
        for (const auto &s : manager.status())
            if (serving(s.state))
                return false;
        return true;
    };
    const bool left = t::wait_until(none_serving, 2000ms - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                             Clock::now() - killed_at));
    const long long left_ms = ms_since(killed_at);
    {
        INFO(describe(manager.status()));
        CHECK(left);
        CHECK(left_ms <= 2000);
    }
    // Per tunnel, from the events: when each one left up, and why.
    long long slowest_leave = -1;
    for (const auto &o : install.options) {
        std::optional<EventLog::Entry> leave;
        for (const auto &e : events.snapshot())
            if (e.event.name == o.name && e.at >= killed_at && serving(e.event.from) && !serving(e.event.to)) {
                leave = e;
                break;
            }
        INFO(o.name << "\n" << events.dump());
        REQUIRE(leave.has_value());
        CHECK(leave->event.error); // a failure carries its error
        slowest_leave = std::max(slowest_leave, ms_between(killed_at, leave->at));
    }
    MESSAGE("sshd killed: every tunnel left up within " << left_ms << " ms (slowest event " << slowest_leave
                                                        << " ms after the kill)");
    for (auto port : install.listen_ports)
        CHECK_FALSE(t::tcp_port_accepts(port));

    // Restart: start() returns once sshd accepts TCP.
    server.start();
    const auto listening_at = Clock::now();
    std::vector<std::uint16_t> pending = install.listen_ports;
    std::map<std::uint16_t, std::string> names;
    for (std::size_t i = 0; i < install.options.size(); ++i)
        names[install.listen_ports[i]] = install.options[i].name;
    // Each tunnel: status up AND a real echo through it.
    const bool recovered = t::wait_until(
        [&] {
            std::vector<std::uint16_t> still;
            for (auto port : pending)
                if (!is_state(manager, names[port], ManagedState::up) || !echo_once(port))
                    still.push_back(port);
            pending = std::move(still);
            return pending.empty();
        },
        3000ms);
    const long long recovered_ms = ms_since(listening_at);
    {
        INFO(describe(manager.status()));
        INFO(pending.size() << " tunnels not serving yet");
        CHECK(recovered);
        CHECK(recovered_ms <= 3000);
    }
    MESSAGE("sshd restarted: all 20 served again " << recovered_ms << " ms after sshd listened");
    for (const auto &s : manager.status()) {
        INFO(s.name);
        CHECK(s.started_times > started_before[s.name]);
    }
}

TEST_CASE("port taken by another session: a new tunnel says so (not \"still held\"), retries, serves once freed")
{
    LogCapture log;
    t::SshServer server;
    t::EchoService echo;
    const std::uint16_t port = free_ports(1)[0];
    // Another session: an OpenSSH client holding the bastion port.
    pid_t holder = server.hold_remote_port(port);

    pytun::TunnelManager manager(fast_manager_options());
    REQUIRE_FALSE(manager.apply({options_for(server, "stale", port, echo.port())}).error);

    auto held = [&] {
        auto s = status_of(manager, "stale");
        return s && s->state == ManagedState::backing_off &&
               s->last_error == pytun::make_error_code(Errc::remote_port_refused);
    };
    {
        const bool seen = t::wait_until(held, 10s);
        INFO(describe(manager.status()));
        REQUIRE(seen);
    }
    auto s = *status_of(manager, "stale");
    MESSAGE("port refused: " << s.last_error_message);
    // This tunnel never had the port: not "still held by its previous
    // session"; both possible causes, the permission first.
    CHECK_FALSE(s.port_held);
    CHECK(s.last_error_message.find("still held") == std::string::npos);
    CHECK(s.last_error_message.find("another session holds the port") != std::string::npos);
    CHECK(s.next_attempt > std::chrono::system_clock::now() - 1s);
    // The log says so, naming the port.
    CHECK_FALSE(log.containing(std::to_string(port)).empty());

    // Retries continue (with the ordinary backoff, 200 ms doubling to 1 s here).
    const std::uint64_t attempts = s.started_times;
    {
        const bool retrying = t::wait_until([&] { return status_of(manager, "stale")->started_times >= attempts + 3; }, 5s);
        INFO(describe(manager.status()));
        CHECK(retrying);
    }
    CHECK_FALSE(serving(status_of(manager, "stale")->state));

    // The bastion frees the port: up and serving our echo service (the holder
    // forwarded to the discard port, so an echo proves it is our tunnel).
    t::end_process(holder);
    const auto freed_at = Clock::now();
    const bool back = t::wait_until([&] { return is_state(manager, "stale", ManagedState::up) && echo_once(port); }, 5s);
    INFO(describe(manager.status()));
    CHECK(back);
    MESSAGE("port freed: serving after " << ms_since(freed_at) << " ms");
    auto after = *status_of(manager, "stale");
    CHECK_FALSE(after.port_held);
}

/// The sshd processes serving connections (children of the listener and theirs).
std::vector<pid_t> session_processes(pid_t listener)
{
    std::vector<pid_t> out, todo = {listener};
    while (!todo.empty()) {
        const pid_t p = todo.back();
        todo.pop_back();
        for (const auto &task : fs::directory_iterator("/proc/" + std::to_string(p) + "/task")) {
            std::ifstream children(task.path() / "children");
            for (pid_t c; children >> c;) {
                out.push_back(c);
                todo.push_back(c);
            }
        }
    }
    return out;
}

TEST_CASE("port held after a lost session: port_held, three quick retries, then the ordinary backoff")
{
    t::SshServer server;
    t::EchoService echo;
    const std::uint16_t port = free_ports(1)[0];
    pytun::ManagerOptions mo = fast_manager_options();
    mo.backoff_initial = 6000ms; // room for another session to take the port after ours is lost
    mo.backoff_max = 16000ms;
    mo.port_held_retry_max = 300ms;
    // The bastion still listens: the reachability probe would retry the lost
    // session at once, before the other session takes the port.
    mo.reachability_probe = 0ms;
    pytun::TunnelManager manager(mo);
    std::mutex mutex;
    std::vector<std::pair<std::error_code, std::chrono::milliseconds>> failures; // why, and the delay chosen
    auto recorder = manager.subscribe([&](const pytun::TunnelEvent &e) {
        if (e.to != ManagedState::backing_off)
            return;
        const auto next = status_of(manager, "held")->next_attempt;
        std::lock_guard lock(mutex);
        failures.emplace_back(e.error, std::chrono::duration_cast<std::chrono::milliseconds>(next - e.when));
    });
    REQUIRE_FALSE(manager.apply({options_for(server, "held", port, echo.port(), 30s)}).error);
    REQUIRE(t::wait_until([&] { return is_state(manager, "held", ManagedState::up) && echo_once(port); }, 15s));

    // The session is lost (its sshd processes die); before the tunnel
    // reconnects, another session takes the port, as the bastion's stale
    // copy of ours would.
    for (pid_t p : session_processes(server.pid()))
        ::kill(p, SIGKILL);
    REQUIRE(t::wait_until([&] { return is_state(manager, "held", ManagedState::backing_off); }, 10s));
    pid_t holder = server.hold_remote_port(port);
    auto count = [&] {
        std::lock_guard lock(mutex);
        return failures.size();
    };
    REQUIRE(t::wait_until([&] { return count() >= 5; }, 30s));
    const auto s = *status_of(manager, "held");
    INFO(describe(manager.status()));
    CHECK(s.port_held);
    CHECK(s.last_error_message.find("port " + std::to_string(port) +
                                    " is probably still held on the bastion by this tunnel's previous session") == 0);
    {
        std::lock_guard lock(mutex);
        for (const auto &[ec, delay] : failures)
            MESSAGE(ec.message() << ": next attempt in " << delay.count() << " ms");
        REQUIRE(failures[0].first != pytun::make_error_code(Errc::remote_port_refused)); // the lost session
        for (std::size_t i = 1; i <= 4; ++i)
            CHECK(failures[i].first == pytun::make_error_code(Errc::remote_port_refused));
        // Three quick retries at most port_held_retry_max apart, then the
        // backoff that had been doubling meanwhile (16 s, jittered to half).
        for (std::size_t i = 1; i <= 3; ++i)
            CHECK(failures[i].second <= 300ms);
        CHECK(failures[4].second >= 8000ms);
    }
    t::end_process(holder);
    recorder.reset();
}

TEST_CASE("reload: A unchanged keeps its streaming connection byte-exact; B stops; C starts")
{
    t::SshServer server;
    t::EchoService echo_a, echo_b, echo_c;
    const auto ports = free_ports(3);
    const auto a = options_for(server, "A", ports[0], echo_a.port());
    const auto b = options_for(server, "B", ports[1], echo_b.port());
    const auto c = options_for(server, "C", ports[2], echo_c.port());

    pytun::TunnelManager manager(fast_manager_options());
    pytun::ApplyResult first = manager.apply({a, b});
    REQUIRE_FALSE(first.error);
    {
        bool up = t::wait_until(
            [&] { return is_state(manager, "A", ManagedState::up) && is_state(manager, "B", ManagedState::up); }, 15s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    REQUIRE(echo_once(ports[1]));

    EchoStream stream(ports[0], 0x5eed);
    REQUIRE(t::wait_until([&] { return stream.verified() >= (1u << 20) || !stream.error().empty(); }, 15s));
    REQUIRE(stream.error().empty());
    const auto a_before = *status_of(manager, "A");
    EventLog events(manager);

    // An invalid set (a name twice) changes nothing.
    pytun::ApplyResult bad = manager.apply({a, c, c});
    CHECK(bad.error == pytun::make_error_code(Errc::invalid_options));
    CHECK_FALSE(bad.message.empty());
    CHECK(bad.started.empty());
    CHECK(bad.stopped.empty());
    CHECK(is_state(manager, "B", ManagedState::up));
    CHECK_FALSE(status_of(manager, "C").has_value());

    pytun::ApplyResult r = manager.apply({a, c});
    INFO(r.message);
    REQUIRE_FALSE(r.error);
    CHECK(r.kept == std::vector<std::string>{"A"});
    CHECK(r.stopped == std::vector<std::string>{"B"});
    CHECK(r.started == std::vector<std::string>{"C"});
    CHECK(r.restarted.empty());

    CHECK(t::wait_until([&] { return !t::tcp_port_accepts(ports[1]); }, 5s));
    {
        bool c_up = t::wait_until([&] { return is_state(manager, "C", ManagedState::up) && echo_once(ports[2]); }, 15s);
        INFO(describe(manager.status()));
        CHECK(c_up);
    }

    // A keeps streaming well past the reload.
    const std::uint64_t at_reload_done = stream.verified();
    CHECK(t::wait_until([&] { return stream.verified() >= at_reload_done + (1u << 20) || !stream.error().empty(); },
                        15s));
    stream.finish();
    INFO("stream error: " << stream.error());
    CHECK(stream.error().empty());
    CHECK(stream.clean_eof());
    CHECK(stream.verified() == stream.sent());
    MESSAGE("stream through A: " << stream.sent() << " bytes, echoed byte-exact across the reload");

    // A itself was not touched: no state change, no new attempt.
    const auto a_after = *status_of(manager, "A");
    CHECK(a_after.started_times == a_before.started_times);
    CHECK(a_after.state == ManagedState::up);
    for (const auto &e : events.snapshot())
        CHECK_MESSAGE(e.event.name != "A", "A changed state: " << pytun::to_string(e.event.from) << " -> "
                                                                << pytun::to_string(e.event.to));
    CHECK(events.has("B", ManagedState::up, ManagedState::stopped));
    CHECK(echo_once(ports[0]));
}

TEST_CASE("local service down: degraded within one probe interval, still accepting; back up when it returns")
{
    t::SshServer server;
    t::EchoService echo;
    const std::uint16_t port = free_ports(1)[0];
    pytun::TunnelManager manager(fast_manager_options());
    EventLog events(manager);
    REQUIRE_FALSE(manager.apply({options_for(server, "svc", port, echo.port(), 1s)}).error);
    {
        bool up = t::wait_until(
            [&] {
                auto s = status_of(manager, "svc");
                return s && s->state == ManagedState::up && s->service_checked && s->service_reachable;
            },
            15s);
        INFO(describe(manager.status()));
        REQUIRE(up);
    }
    REQUIRE(echo_once(port));

    echo.stop();
    const auto stopped_at = Clock::now();
    // One interval (1 s) plus a margin for the probe itself and scheduling.
    const bool degraded = t::wait_until([&] { return is_state(manager, "svc", ManagedState::degraded); }, 2500ms);
    const long long degraded_ms = ms_since(stopped_at);
    {
        INFO(describe(manager.status()));
        CHECK(degraded);
    }
    MESSAGE("degraded " << degraded_ms << " ms after the service stopped (keep_alive 1 s)");
    auto s = *status_of(manager, "svc");
    CHECK_FALSE(s.service_reachable);
    CHECK_FALSE(s.service_error.empty());
    CHECK(events.has("svc", ManagedState::up, ManagedState::degraded));
    for (const auto &e : events.snapshot())
        if (e.event.to == ManagedState::degraded)
            CHECK(e.event.error == pytun::make_error_code(Errc::local_service_unreachable));

    // Still serving: the bastion accepts, the relay finds no service and closes.
    CHECK(accepted_then_closed(port, 5s));
    CHECK(is_state(manager, "svc", ManagedState::degraded));

    echo.start();
    const auto back_at = Clock::now();
    const bool up = t::wait_until([&] { return is_state(manager, "svc", ManagedState::up); }, 2500ms);
    {
        INFO(describe(manager.status()));
        CHECK(up);
    }
    MESSAGE("up again " << ms_since(back_at) << " ms after the service returned");
    CHECK(echo_once(port));
    CHECK(events.has("svc", ManagedState::degraded, ManagedState::up));
    CHECK(status_of(manager, "svc")->started_times == 1); // degraded never restarts the tunnel
}

TEST_CASE("events: connecting -> up with the right names; a destroyed Subscription gets nothing more")
{
    CHECK(std::string(pytun::to_string(ManagedState::connecting)) == "connecting");
    CHECK(std::string(pytun::to_string(ManagedState::up)) == "up");
    CHECK(std::string(pytun::to_string(ManagedState::degraded)) == "degraded");
    CHECK(std::string(pytun::to_string(ManagedState::backing_off)) == "backing off");
    CHECK(std::string(pytun::to_string(ManagedState::stopped)) == "stopped");

    t::SshServer server;
    t::EchoService echo;
    const auto ports = free_ports(2);
    pytun::TunnelManager manager(fast_manager_options());
    EventLog kept(manager);
    // A second subscriber whose counter outlives its subscription.
    auto dropped_calls = std::make_shared<std::atomic<std::size_t>>(0);
    pytun::Subscription dropped = manager.subscribe([dropped_calls](const pytun::TunnelEvent &) { ++*dropped_calls; });
    CHECK(static_cast<bool>(dropped));

    REQUIRE_FALSE(manager.apply({options_for(server, "ev-one", ports[0], echo.port())}).error);
    REQUIRE(t::wait_until([&] { return kept.has("ev-one", ManagedState::connecting, ManagedState::up); }, 15s));
    {
        auto all = kept.snapshot();
        INFO(kept.dump());
        REQUIRE(all.size() >= 2);
        CHECK(all[0].event.name == "ev-one");
        CHECK(all[0].event.from == ManagedState::stopped);
        CHECK(all[0].event.to == ManagedState::connecting);
        CHECK(all[1].event.name == "ev-one");
        CHECK(all[1].event.from == ManagedState::connecting);
        CHECK(all[1].event.to == ManagedState::up);
        CHECK_FALSE(all[1].event.error);
        CHECK(all[1].event.when.time_since_epoch().count() != 0);
        for (const auto &e : all)
            CHECK(e.thread != std::this_thread::get_id()); // delivered on an event-loop thread
        CHECK(dropped_calls->load() >= 2);
    }

    // A subscription made now is not called from inside subscribe() (nothing replayed).
    {
        EventLog late(manager);
        CHECK(late.size() == 0);
    }

    // Destroy one subscription, then cause changes: ev-one stops, ev-two starts.
    dropped = pytun::Subscription();
    CHECK_FALSE(static_cast<bool>(dropped));
    const std::size_t dropped_before = dropped_calls->load();
    const std::size_t kept_before = kept.size();
    REQUIRE_FALSE(manager.apply({options_for(server, "ev-two", ports[1], echo.port())}).error);
    REQUIRE(t::wait_until([&] { return kept.has("ev-one", ManagedState::up, ManagedState::stopped); }, 10s));
    REQUIRE(t::wait_until([&] { return kept.has("ev-two", ManagedState::connecting, ManagedState::up); }, 15s));
    INFO(kept.dump());
    CHECK(kept.size() >= kept_before + 3);
    CHECK(dropped_calls->load() == dropped_before);

    manager.stop();
    CHECK(t::wait_until([&] { return kept.has("ev-two", ManagedState::up, ManagedState::stopped); }, 5s));
    CHECK(dropped_calls->load() == dropped_before);
}

TEST_CASE("status() answers at once while the health probe of a black-hole service hangs")
{
    t::SshServer server;
    BlackHoleService hole;
    // The black hole really swallows connects (the probe's connect must hang).
    REQUIRE(t::connect_tcp(hole.port, 300ms) < 0);
    const auto ports = free_ports(1);
    pytun::TunnelManager manager(fast_manager_options());
    REQUIRE_FALSE(manager.apply({options_for(server, "hole", ports[0], hole.port, 1s)}).error);

    // The SSH side comes up regardless; the service probe hangs until its
    // timeout, then the tunnel is degraded. status() must never wait for it.
    const auto t0 = Clock::now();
    long long slowest_us = 0;
    std::size_t calls = 0;
    bool degraded = false;
    while (Clock::now() - t0 < 10s && !degraded) {
        const auto c0 = Clock::now();
        auto st = manager.status();
        const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c0).count();
        slowest_us = std::max<long long>(slowest_us, took);
        ++calls;
        CHECK(took < 50000);
        REQUIRE(st.size() == 1);
        degraded = st[0].state == ManagedState::degraded;
        std::this_thread::sleep_for(2ms);
    }
    INFO(describe(manager.status()));
    CHECK(degraded);
    MESSAGE("black-hole service: degraded after " << ms_since(t0) << " ms; " << calls
                                                   << " status() calls meanwhile, slowest " << slowest_us << " us");
    auto s = *status_of(manager, "hole");
    CHECK_FALSE(s.service_reachable);
    CHECK_FALSE(s.service_error.empty());
    const auto s0 = Clock::now();
    manager.stop();
    CHECK(ms_since(s0) < 5000);
}

TEST_CASE("responsive(): true while the loops run handlers, false while one is stuck (the watchdog's basis)")
{
    t::SshServer server;
    t::EchoService echo;
    const auto ports = free_ports(1);
    pytun::TunnelManager manager(fast_manager_options());
    CHECK(manager.responsive(1s));

    // A subscriber that blocks its loop thread on the first event: that loop
    // is stuck until the test releases it.
    std::mutex mutex;
    std::condition_variable released_cv;
    bool released = false;
    std::atomic<bool> blocking{false};
    pytun::Subscription blocker = manager.subscribe([&](const pytun::TunnelEvent &) {
        if (blocking.exchange(true))
            return;
        std::unique_lock lock(mutex);
        released_cv.wait(lock, [&] { return released; });
    });
    REQUIRE_FALSE(manager.apply({options_for(server, "stuck", ports[0], echo.port())}).error);
    REQUIRE(t::wait_until([&] { return blocking.load(); }, 10s));
    CHECK_FALSE(manager.responsive(300ms));
    {
        std::lock_guard lock(mutex);
        released = true;
    }
    released_cv.notify_all();
    CHECK(t::wait_until([&] { return manager.responsive(300ms); }, 5s));
    blocker.reset();
    manager.stop();
    CHECK_FALSE(manager.responsive(100ms)); // stopped: no loop answers
}
