// SPDX-License-Identifier: MIT
// Supervisor: one tunnel's restarts, backoff and state.
#include "manager/supervisor.h"

#include <pytun/error.h>

#include "log.h"
#include "tunnel/run_status.h"
#include "tunnel/tunnel_run.h"

namespace pytun::detail {

// Retries of a refused listen capped at port_held_retry_max after the tunnel
// had a session; further ones follow the ordinary backoff.
constexpr unsigned k_quick_port_retries = 3;

// --- StatusBoard ---------------------------------------------------------------

void StatusBoard::put(const std::string &name, std::uint64_t generation, TunnelStatus status)
{
    std::lock_guard lock(mutex_);
    Row &row = rows_[name];
    row.generation = generation;
    row.status = std::move(status);
    row.run.reset();
}

void StatusBoard::update(const std::string &name, std::uint64_t generation,
                         const std::function<void(TunnelStatus &)> &change)
{
    std::lock_guard lock(mutex_);
    auto it = rows_.find(name);
    if (it != rows_.end() && it->second.generation == generation)
        change(it->second.status);
}

void StatusBoard::set_run(const std::string &name, std::uint64_t generation, std::shared_ptr<RunStatus> run)
{
    std::lock_guard lock(mutex_);
    auto it = rows_.find(name);
    if (it != rows_.end() && it->second.generation == generation)
        it->second.run = std::move(run);
}

void StatusBoard::remove(const std::string &name, std::uint64_t generation)
{
    std::lock_guard lock(mutex_);
    auto it = rows_.find(name);
    if (it != rows_.end() && it->second.generation == generation)
        rows_.erase(it);
}

std::vector<TunnelStatus> StatusBoard::snapshot() const
{
    std::lock_guard lock(mutex_);
    std::vector<TunnelStatus> out;
    out.reserve(rows_.size());
    for (const auto &[name, row] : rows_) {
        out.push_back(row.status);
        if (row.run) {
            TunnelStatus &t = out.back();
            t.traffic = row.run->total();
            t.forwards = row.run->forwards();
            t.sessions = row.run->sessions.load(std::memory_order_relaxed);
        }
    }
    return out;
}

// --- Supervisor ----------------------------------------------------------------

Supervisor::Supervisor(asio::io_context &io, TunnelOptions options, const ManagerOptions &manager,
                       StatusBoard &board, EventList &events, std::uint64_t generation)
    : io_(io), options_(std::move(options)), manager_(manager), board_(board), events_(events),
      generation_(generation), log_(make_logger(options_.name)), retry_timer_(io),
      backoff_(manager.backoff_initial), random_(static_cast<unsigned>(generation * 7919 + 17))
{
    TunnelStatus status;
    status.name = options_.name;
    status.config_path = options_.config_path;
    status.server_host = options_.server_host;
    status.server_port = options_.server_port;
    // A tunnel of other forwards only has no reverse tunnel: no bastion port
    // until its first forward serves, no local service.
    const bool reverse = !options_.remote_host.empty();
    status.listen_port = reverse ? options_.listen_port : 0;
    status.remote_host = options_.remote_host;
    status.remote_port = reverse ? options_.remote_port : 0;
    status.state = ManagedState::stopped;
    status.state_since = std::chrono::system_clock::now();
    board_.put(options_.name, generation_, std::move(status));
}

Supervisor::~Supervisor() = default;

void Supervisor::start()
{
    stopping_ = false;
    attempt();
}

void Supervisor::attempt()
{
    if (stopping_)
        return;
    auto run = std::make_shared<RunStatus>(all_forwards(options_));
    board_.set_run(options_.name, generation_, run);
    board_.update(options_.name, generation_, [](TunnelStatus &s) {
        ++s.started_times;
        s.last_start = std::chrono::system_clock::now();
    });
    set_state(ManagedState::connecting);

    auto self = shared_from_this();
    TunnelRun::Handlers handlers;
    handlers.up = [this, self](std::uint16_t port) { on_up(port); };
    handlers.ended = [this, self](std::error_code ec, const std::string &message) {
        // Called from inside the tunnel: drop it only after it has returned.
        asio::post(io_, [this, self, ec, message] { on_ended(ec, message); });
    };
    handlers.standby = [this, self](const std::string &why) { on_standby(why); };
    handlers.probed = [this, self](std::chrono::microseconds rtt) {
        board_.update(options_.name, generation_, [rtt](TunnelStatus &s) { s.probe_rtt = rtt; });
    };
    tunnel_ = std::make_shared<TunnelRun>(io_, options_, log_, run, std::move(handlers));
    tunnel_->start();
}

void Supervisor::on_up(std::uint16_t port)
{
    const auto now = std::chrono::steady_clock::now();
    up_since_ = now;
    had_session_ = true;
    refused_in_row_ = 0;
    std::chrono::milliseconds standby_for{0};
    if (standby_since_) {
        // At least 1 ms: a non-zero standby_for is what marks the event a takeover.
        standby_for = std::max(std::chrono::milliseconds(1),
                               std::chrono::duration_cast<std::chrono::milliseconds>(now - *standby_since_));
        standby_since_.reset();
        log_->warn("standby took over: bastion {}:{} port {} after {:.1f} s in standby", options_.server_host,
                   options_.server_port, port, static_cast<double>(standby_for.count()) / 1000.0);
    }
    board_.update(options_.name, generation_, [port, took_over = standby_for.count() > 0](TunnelStatus &s) {
        s.listen_port = port;
        s.port_held = false;
        s.takeovers += took_over ? 1 : 0;
    });
    if (service_reachable_)
        set_state(ManagedState::up, {}, {}, standby_for);
    else
        set_state(ManagedState::degraded, Errc::local_service_unreachable, service_error_, standby_for);
}

// Another connector serves the port: not an error, so no error code (no alert).
void Supervisor::on_standby(const std::string &why)
{
    const auto now = std::chrono::steady_clock::now();
    up_since_ = now; // a long standby resets the backoff like a long up
    if (!standby_since_)
        standby_since_ = now;
    board_.update(options_.name, generation_, [](TunnelStatus &s) { s.port_held = false; });
    set_state(ManagedState::standby, {}, why);
}

void Supervisor::on_ended(std::error_code ec, const std::string &message)
{
    const bool was_up =
        state_ == ManagedState::up || state_ == ManagedState::degraded || state_ == ManagedState::standby;
    tunnel_.reset();
    if (stopping_ || ec == Errc::stopped)
        return;
    if (was_up && std::chrono::steady_clock::now() - up_since_ >= manager_.stable_after)
        backoff_ = manager_.backoff_initial; // it had been fine for a while: start over

    // Jitter between half and all of the backoff, so tunnels that failed
    // together (a bastion restart) do not retry in lockstep.
    std::uniform_int_distribution<long long> jitter(backoff_.count() / 2, backoff_.count());
    auto delay = std::chrono::milliseconds(jitter(random_));
    backoff_ = std::min(backoff_ * 2, manager_.backoff_max);

    // A refused listen right after this tunnel had a session most likely
    // means the bastion still holds the port for that session until its own
    // keepalive drops it: a few quick retries bring the tunnel back as soon as
    // it does. Otherwise (a new tunnel, or the quick retries did not help) it
    // is a permission or another user's port: back off like any failure, so
    // the bastion's auth log sees a few logins a minute at most.
    const bool refused = ec == Errc::remote_port_refused;
    refused_in_row_ = refused ? refused_in_row_ + 1 : 0;
    const bool port_held = refused && had_session_;
    std::string why = message;
    if (port_held) {
        const bool quick = refused_in_row_ <= k_quick_port_retries;
        if (quick)
            delay = std::min(delay, manager_.port_held_retry_max);
        why = "port " + std::to_string(options_.listen_port) +
              " is probably still held on the bastion by this tunnel's previous session, which the bastion has not "
              "dropped yet; " + (quick ? "retrying soon" : "retrying with backoff") + " (" + message + ")";
    }
    const auto next = std::chrono::system_clock::now() + delay;
    board_.update(options_.name, generation_, [&](TunnelStatus &s) {
        s.port_held = port_held;
        s.next_attempt = next;
    });
    log_->warn("retrying in {:.1f} s", static_cast<double>(delay.count()) / 1000.0);
    set_state(ManagedState::backing_off, ec, why);
    retry_timer_.expires_after(delay);
    retry_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &timer_ec) {
        if (!timer_ec)
            attempt();
    });
}

void Supervisor::stop(std::function<void()> done)
{
    stopping_ = true;
    retry_timer_.cancel();
    auto finish = [this, self = shared_from_this(), done] {
        set_state(ManagedState::stopped);
        done();
    };
    if (tunnel_) {
        auto tunnel = tunnel_;
        tunnel->stop(manager_.grace_period, finish);
    } else {
        asio::post(io_, finish);
    }
}

void Supervisor::service_health(bool reachable, const std::string &error)
{
    service_reachable_ = reachable;
    service_error_ = reachable ? std::string() : "local service " + options_.remote_host + ":" +
                                                     std::to_string(options_.remote_port) +
                                                     " unreachable: " + error;
    board_.update(options_.name, generation_, [&](TunnelStatus &s) {
        s.service_checked = true;
        s.service_reachable = reachable;
        s.service_error = error;
    });
    if (state_ == ManagedState::up && !reachable)
        set_state(ManagedState::degraded, Errc::local_service_unreachable, service_error_);
    else if (state_ == ManagedState::degraded && reachable)
        set_state(ManagedState::up);
}

void Supervisor::set_state(ManagedState state, std::error_code ec, const std::string &message,
                           std::chrono::milliseconds standby_for)
{
    const ManagedState from = state_;
    state_ = state;
    const auto now = std::chrono::system_clock::now();
    board_.update(options_.name, generation_, [&](TunnelStatus &s) {
        if (s.state != state)
            s.state_since = now;
        s.state = state;
        if (ec) {
            s.last_error = ec;
            s.last_error_message = message;
            s.last_error_time = now;
        }
    });
    if (from == state)
        return;
    if (state == ManagedState::degraded)
        log_->warn("degraded: {}", message);
    else if (state == ManagedState::up && from == ManagedState::degraded)
        log_->info("local service reachable again");
    TunnelEvent event;
    event.name = options_.name;
    event.from = from;
    event.to = state;
    event.error = ec;
    event.message = message;
    event.when = now;
    event.standby_for = standby_for;
    events_.call(event);
}

} // namespace pytun::detail
