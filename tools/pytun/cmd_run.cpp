// SPDX-License-Identifier: MIT
// pytun (run mode): the connector until SIGTERM/SIGINT; SIGHUP reloads.
#include "commands.h"

#include <signal.h>
#include <time.h>

#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>

#include <pytun/alerter.h>
#include <pytun/device.h>
#include <pytun/logging.h>
#include <pytun/manager.h>
#include <pytun/resources.h>
#include <pytun/version.h>
#include <pytun/status_server.h>

#include "service_notify.h"

namespace pytun::cli {
namespace {

std::vector<TunnelOptions> tunnel_options(const Config &config, const EnvironmentProxy &environment)
{
    std::vector<TunnelOptions> out;
    for (const auto &t : config.tunnels)
        out.push_back(tunnel_options(t, environment));
    return out;
}

std::vector<LogFileTarget> log_targets(const Config &config, const LogFlags &flags)
{
    std::vector<LogFileTarget> out;
    for (const auto &t : config.tunnels) {
        out.push_back(log_target(t));
        if (flags.level)
            out.back().level = *flags.level;
    }
    return out;
}

std::string join(const std::vector<std::string> &names)
{
    std::string s;
    for (const auto &n : names)
        s += (s.empty() ? "" : ", ") + n;
    return s.empty() ? "-" : s;
}

std::string tunnels_up(const TunnelManager &manager)
{
    auto status = manager.status();
    std::size_t up = 0, degraded = 0, standby = 0;
    for (const auto &t : status) {
        up += t.state == ManagedState::up;
        degraded += t.state == ManagedState::degraded;
        standby += t.state == ManagedState::standby;
    }
    std::string s = std::to_string(up) + " of " + std::to_string(status.size()) + " tunnels up";
    if (degraded)
        s += ", " + std::to_string(degraded) + " degraded (local service not answering)";
    if (standby)
        s += ", " + std::to_string(standby) + " standby (another connector holds the port)";
    return s;
}

// The "event" of a state change in JSON log lines (docs/cli.md).
const char *state_event(ManagedState s)
{
    switch (s) {
    case ManagedState::connecting: return "tunnel_connecting";
    case ManagedState::up: return "tunnel_up";
    case ManagedState::degraded: return "tunnel_degraded";
    case ManagedState::backing_off: return "tunnel_backing_off";
    case ManagedState::stopped: return "tunnel_stopped";
    case ManagedState::standby: return "tunnel_standby";
    }
    return "tunnel_state";
}

// Manager events become log lines in the tunnel's file (alerts: forward_alerts).
void log_event(Logging &logging, const TunnelEvent &e)
{
    if (!e.bastion_to.empty()) {
        logging.log(e.name, LogLevel::warning, e.message,
                    {e.bastion_returned ? "bastion_returned" : "bastion_failover", e.bastion_from});
        return;
    }
    const std::string line = std::string("state: ") + to_string(e.from) + " -> " + to_string(e.to);
    const bool bad = e.to == ManagedState::backing_off || e.to == ManagedState::degraded;
    logging.log(e.name, bad ? LogLevel::warning : LogLevel::info, line, {state_event(e.to), e.message});
}

/// Whether a reload changed a [pytun] key that only a restart applies: all of
/// them except those SIGHUP applies (log level and console, tunnel_dirs).
bool connector_changed(ConnectorConfig a, const ConnectorConfig &b)
{
    a.log_level = b.log_level;
    a.log_to_console = b.log_to_console;
    a.tunnel_dirs = b.tunnel_dirs;
    a.proxy = b.proxy; // reaches the tunnels, which restart with it
    return !(a == b);
}

// Running short of file descriptors is pytun's own problem: one alert (for
// the whole connector) when it starts, "recovered" after five quiet minutes;
// the per-connection details are in the tunnels' logs, aggregated.
class DescriptorShortage {
public:
    void check(Logging &logging, Alerter &alerter)
    {
        const DescriptorStats s = descriptor_stats();
        const std::uint64_t events = s.exhausted_total + s.refused_total;
        const auto now = std::chrono::steady_clock::now();
        if (events > seen_) {
            seen_ = events;
            last_ = now;
            if (!alerted_) {
                alerted_ = true;
                const std::string text =
                    "pytun is short of file descriptors (limit " + std::to_string(s.limit) + ", " +
                    std::to_string(s.reserved) + " reserved for its control plane, " + std::to_string(s.forwarded) +
                    " forwarded connections): connections are being refused; raise LimitNOFILE, or lower "
                    "max_connections of the tunnel that is flooded";
                logging.log({}, LogLevel::error, text, {"descriptor_shortage", {}});
                AlertEvent a;
                a.kind = AlertEvent::Kind::degraded;
                a.error = text;
                alerter.notify(a);
            }
        } else if (alerted_ && now - last_ > std::chrono::minutes(5)) {
            alerted_ = false;
            logging.log({}, LogLevel::info, "no shortage of file descriptors for 5 minutes", {"descriptor_shortage_over", {}});
            AlertEvent a;
            a.kind = AlertEvent::Kind::recovered;
            alerter.notify(a);
        }
    }

private:
    std::uint64_t seen_ = 0;
    std::chrono::steady_clock::time_point last_{};
    bool alerted_ = false;
};

} // namespace

int run_connector(const std::string &config_path, const LogFlags &log_flags)
{
    // Errors stop pytun before there is a log: they go to stderr. Warnings
    // are log lines, so they reach the files, the console or the journal.
    std::vector<Diagnostic> warnings;
    auto loaded = load_or_report(config_path, {}, &warnings);
    if (!loaded)
        return k_exit_failed;
    Config config = std::move(*loaded);
    const ConnectorConfig &c = config.connector;
    const EnvironmentProxy environment = environment_proxy(config);
    if (!environment.error.empty()) {
        std::cerr << "pytun: " << environment.error << "\n";
        return k_exit_failed;
    }

    LoggingOptions log_options = logging_options(c);
    log_options.level = log_flags.level.value_or(log_options.level);
    log_options.format = log_flags.format;
    Logging logging(log_options);
    std::string message;
    if (logging.start(message)) {
        std::cerr << "pytun: " << message << "\n";
        return k_exit_failed;
    }
    if (logging.set_targets(log_targets(config, log_flags), message))
        logging.log({}, LogLevel::error, "cannot open a tunnel's log file", {"log_file_failed", message});
    logging.log({}, LogLevel::info,
                "pytun " + version() + " (libssh2 " + libssh2_version() + ", " + openssl_version() +
                    ") starting: " + config.main_file + ", " + std::to_string(config.tunnels.size()) +
                    " tunnel(s), tunnel_manager_id " + c.tunnel_manager_id +
                    (logging.to_journal() ? "; logging to the journal" : ""),
                {"starting", {}});
    for (const auto &w : warnings)
        logging.log({}, LogLevel::warning, w.to_string(), {"config_warning", {}});
    if (environment.proxy)
        logging.log({}, LogLevel::info,
                    "tunnels that set no proxy go through " + describe(*environment.proxy) + " (from " +
                        environment.variable + ")" +
                        (environment.no_proxy.empty() ? "" : ", except hosts in no_proxy (" + environment.no_proxy + ")"),
                    {"environment_proxy", {}});
    // Every connection is a descriptor and pytun uses no select(): take
    // all the kernel allows (systemd gives services a soft limit of 1024).
    const DescriptorLimit fds = raise_descriptor_limit(message);
    logging.log({}, LogLevel::info, message, {"descriptor_limit", {}});
    if (std::string warning = descriptor_limit_warning(fds.soft, config.tunnels.size()); !warning.empty())
        logging.log({}, LogLevel::warning, warning, {"descriptor_limit", {}});

    Alerter alerter(c);
    if (std::error_code ec = alerter.start()) {
        logging.log({}, LogLevel::critical, "the alerter cannot start", {"alerter_failed", ec.message()});
        return k_exit_failed;
    }

    DeviceAuthorization device = check_device_authorization(c);
    if (!device.authorized) {
        logging.log({}, LogLevel::critical,
                    "Connector down! The device where it is installed is not allowed to run it. " + device.message,
                    {"device_unauthorized", {}});
        AlertEvent a;
        a.kind = AlertEvent::Kind::unauthorized;
        a.error = device.message;
        alerter.notify(a);
        alerter.stop();
        std::cerr << "pytun: this device is not authorized to run the connector: " << device.message << "\n";
        return k_exit_failed;
    }
    logging.log({}, LogLevel::info, device.message, {"device_check", {}});

    ManagerOptions mo;
    mo.grace_period = c.grace_period_ms;
    mo.reachability_probe = c.reachability_probe_ms;
    TunnelManager manager(mo);
    Subscription events = manager.subscribe([&logging](const TunnelEvent &e) { log_event(logging, e); });
    Subscription alerts = forward_alerts(manager, alerter);

    StatusServerOptions so;
    so.bind_address = c.inspection_localhost_only ? "127.0.0.1" : "0.0.0.0";
    so.port = c.inspection_port;
    so.token = c.inspection_token;
    so.tunnel_manager_id = c.tunnel_manager_id;
    so.mac_address = device.mac_address;
    so.main_config_file = config.main_file;
    so.config_dir = c.tunnel_dirs;
    so.log_dir = c.log_path;
    StatusServer server(so, manager, &alerter);
    if (std::error_code ec = server.start(message)) {
        logging.log({}, LogLevel::critical, "status API", {"status_api_failed", message});
        std::cerr << "pytun: " << message << "\n";
        alerter.stop();
        return k_exit_failed;
    }
    logging.log({}, LogLevel::info,
                "status API on http://" + so.bind_address + ":" + std::to_string(server.port()) + "/status",
                {"status_api", {}});

    ApplyResult applied = manager.apply(tunnel_options(config, environment));
    if (applied.error) {
        logging.log({}, LogLevel::critical, "cannot start the tunnels", {"start_failed", applied.message});
        std::cerr << "pytun: cannot start the tunnels: " << applied.message << "\n";
        manager.stop();
        alerter.stop();
        return k_exit_failed;
    }
    logging.log({}, LogLevel::info, "started: " + join(applied.started), {"started", {}});

    ServiceNotifier notifier;
    notifier.ready(tunnels_up(manager));

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    const auto tick = notifier.tick();
    std::string last_status;
    DescriptorShortage shortage;
    int stop_signal = 0;
    while (!stop_signal) {
        timespec timeout{static_cast<time_t>(tick.count() / 1000), static_cast<long>(tick.count() % 1000) * 1000000L};
        const int sig = sigtimedwait(&signals, nullptr, &timeout);
        if (sig == SIGTERM || sig == SIGINT) {
            stop_signal = sig;
        } else if (sig == SIGHUP) {
            notifier.reloading();
            logging.log({}, LogLevel::info, "SIGHUP: reloading " + config.main_file, {"reload", {}});
            LoadResult next = load_config(config.main_file);
            for (const auto &d : next.diagnostics)
                logging.log({}, d.severity == Diagnostic::Severity::error ? LogLevel::error : LogLevel::warning,
                            "reload: " + d.to_string(), {"reload_diagnostic", {}});
            if (!next.ok()) {
                logging.log({}, LogLevel::error,
                            "reload rejected: the new configuration has errors (listed above); "
                            "the running tunnels continue unchanged",
                            {"reload_rejected", {}});
            } else {
                if (connector_changed(c, next.config->connector))
                    logging.log({}, LogLevel::warning,
                                "reload: changes to the [pytun] section (alerts, status API, log_path, signature) "
                                "take effect after a restart",
                                {"reload_needs_restart", {}});
                if (logging.set_targets(log_targets(*next.config, log_flags), message))
                    logging.log({}, LogLevel::error, "cannot open a tunnel's log file", {"log_file_failed", message});
                ApplyResult r = manager.apply(tunnel_options(*next.config, environment));
                if (r.error) {
                    logging.log({}, LogLevel::error, "reload rejected", {"reload_rejected", r.message});
                    logging.set_targets(log_targets(config, log_flags), message);
                } else {
                    config.tunnels = std::move(next.config->tunnels);
                    logging.log({}, LogLevel::info,
                                "reload: started " + join(r.started) + "; restarted " + join(r.restarted) +
                                    "; stopped " + join(r.stopped) + "; kept " + join(r.kept),
                                {"reloaded", {}});
                }
            }
            notifier.ready(tunnels_up(manager));
        }
        // The watchdog vouches for the tunnels' event loops, not just this
        // thread: a stuck loop withholds it and systemd restarts pytun.
        if (notifier.enabled() && manager.responsive(std::chrono::seconds(1)))
            notifier.watchdog();
        shortage.check(logging, alerter);
        std::string now = tunnels_up(manager);
        if (now != last_status) {
            notifier.status(now);
            logging.log({}, LogLevel::debug, now, {"status", {}});
            last_status = std::move(now);
        }
    }

    notifier.stopping();
    logging.log({}, LogLevel::info,
                std::string(stop_signal == SIGINT ? "SIGINT" : "SIGTERM") + ": stopping (open connections get " +
                    std::to_string(c.grace_period_ms.count()) + " ms)",
                {"stopping", {}});
    server.stop();
    manager.stop();
    events.reset();
    alerts.reset();
    alerter.stop();
    logging.log({}, LogLevel::info, "stopped", {"stopped", {}});
    logging.flush();
    return k_exit_ok;
}

} // namespace pytun::cli
