// SPDX-License-Identifier: MIT
// Supervisor: one tunnel's restarts, backoff and state.
#include "manager/supervisor.h"

#include <pytun/error.h>

#include "forward/forward.h"
#include "log.h"
#include "manager/reachability.h"
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
                       StatusBoard &board, EventList &events, std::uint64_t generation, ReachabilityProbes *probes)
    : io_(io), options_(std::move(options)), manager_(manager), board_(board), events_(events),
      generation_(generation), log_(make_logger(options_.name)),
      keeps_(std::make_shared<ForwardKeeps>(all_forwards(options_).size())), retry_timer_(io),
      backoff_(manager.backoff_initial), random_(static_cast<unsigned>(generation * 7919 + 17)), probes_(probes),
      bastions_(all_bastions(options_)), reach_failed_(bastions_.size(), false)
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
    if (bastions_.size() > 1)
        for (const auto &b : bastions_)
            status.bastions.push_back(describe(b));
    board_.put(options_.name, generation_, std::move(status));
}

Supervisor::~Supervisor() = default;

void Supervisor::start()
{
    stopping_ = false;
    attempt();
}

std::shared_ptr<TunnelRun> Supervisor::make_run(std::size_t bastion, std::shared_ptr<RunStatus> status,
                                                std::uint64_t id)
{
    // A run knows one bastion: this one, in server_host:server_port.
    TunnelOptions options = options_;
    options.server_host = bastions_[bastion].host;
    options.server_port = bastions_[bastion].port;
    options.failover.clear();
    auto self = shared_from_this();
    TunnelRun::Handlers handlers;
    handlers.up = [this, self, id](std::uint16_t port) { on_up(id, port); };
    handlers.ended = [this, self, id](std::error_code ec, const std::string &message) {
        // Called from inside the tunnel: drop it only after it has returned.
        asio::post(io_, [this, self, id, ec, message] { on_ended(id, ec, message); });
    };
    handlers.standby = [this, self, id](const std::string &why) { on_standby(id, why); };
    handlers.probed = [this, self, id](std::chrono::microseconds rtt) {
        if (id == run_id_)
            board_.update(options_.name, generation_, [rtt](TunnelStatus &s) { s.probe_rtt = rtt; });
    };
    return std::make_shared<TunnelRun>(io_, std::move(options), log_, std::move(status), keeps_, std::move(handlers));
}

void Supervisor::attempt()
{
    stop_waiting_for_bastion();
    // One run at a time: a second would hold the bastion port of the first,
    // which nothing would stop any more.
    if (stopping_ || tunnel_)
        return;
    auto run = std::make_shared<RunStatus>(all_forwards(options_));
    board_.set_run(options_.name, generation_, run);
    board_.update(options_.name, generation_, [](TunnelStatus &s) {
        ++s.started_times;
        s.last_start = std::chrono::system_clock::now();
    });
    set_state(ManagedState::connecting);
    if (bastions_.size() > 1)
        log_->info("connecting through bastion {} ({} of {})", describe(bastions_[current_]), current_ + 1,
                   bastions_.size());
    run_id_ = ++next_run_id_;
    tunnel_ = make_run(current_, std::move(run), run_id_);
    tunnel_->start();
}

void Supervisor::on_up(std::uint64_t id, std::uint16_t port)
{
    if (id == candidate_id_) {
        on_failback_up(port);
        return;
    }
    if (id != run_id_)
        return;
    const auto now = std::chrono::steady_clock::now();
    up_since_ = now;
    had_session_ = true;
    refused_in_row_ = 0;
    std::fill(reach_failed_.begin(), reach_failed_.end(), false);
    std::chrono::milliseconds standby_for{0};
    if (standby_since_) {
        // At least 1 ms: a non-zero standby_for is what marks the event a takeover.
        standby_for = std::max(std::chrono::milliseconds(1),
                               std::chrono::duration_cast<std::chrono::milliseconds>(now - *standby_since_));
        standby_since_.reset();
        log_->warn("standby took over: bastion {} port {} after {:.1f} s in standby", describe(bastions_[current_]),
                   port, static_cast<double>(standby_for.count()) / 1000.0);
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
    serving_on(current_);
    watch_preferred();
}

// Another connector serves the port: not an error, so no error code (no alert).
void Supervisor::on_standby(std::uint64_t id, const std::string &why)
{
    if (id == candidate_id_) {
        // Another connector holds the port on the first bastion: stay where we
        // serve, and try again after it has answered for another period.
        log_->info("not returning to bastion {}: {}", describe(bastions_[0]), why);
        auto candidate = std::move(candidate_);
        candidate_id_ = 0;
        candidate_status_.reset();
        answering_since_.reset();
        candidate->stop(std::chrono::milliseconds(0), [candidate] {});
        return;
    }
    if (id != run_id_)
        return;
    const auto now = std::chrono::steady_clock::now();
    up_since_ = now; // a long standby resets the backoff like a long up
    if (!standby_since_)
        standby_since_ = now;
    board_.update(options_.name, generation_, [](TunnelStatus &s) { s.port_held = false; });
    set_state(ManagedState::standby, {}, why);
}

void Supervisor::serving_on(std::size_t bastion)
{
    const bool changed = serving_ != bastion;
    const std::size_t before = serving_;
    serving_ = bastion;
    if (!changed)
        return;
    const std::string name = describe(bastions_[bastion]);
    const auto now = std::chrono::system_clock::now();
    board_.update(options_.name, generation_, [&](TunnelStatus &s) {
        s.bastion = name;
        s.bastion_since = now;
    });
    if (before == k_none)
        return; // the first bastion to serve: nothing changed over
    const std::string from = describe(bastions_[before]);
    TunnelEvent event;
    event.name = options_.name;
    event.from = event.to = state_;
    event.when = now;
    event.bastion_from = from;
    event.bastion_to = name;
    event.bastion_returned = bastion == 0;
    event.message = bastion == 0 ? "returned to bastion " + name + " (from " + from + ")"
                                 : "failed over from bastion " + from + " to " + name;
    log_->warn("{}", event.message);
    events_.call(event);
}

void Supervisor::on_ended(std::uint64_t id, std::error_code ec, const std::string &message)
{
    if (id == candidate_id_) {
        on_failback_failed(ec, message);
        return;
    }
    if (id != run_id_)
        return; // a run retired by a failback, ending after its grace period
    const bool was_up =
        state_ == ManagedState::up || state_ == ManagedState::degraded || state_ == ManagedState::standby;
    tunnel_.reset();
    stop_failback();
    if (stopping_ || ec == Errc::stopped)
        return;
    if (was_up && std::chrono::steady_clock::now() - up_since_ >= manager_.stable_after) {
        backoff_ = manager_.backoff_initial; // it had been fine for a while: start over
        woken_ = false;
    }
    reach_failed_[current_] = unreachable(ec, was_up);

    // The next bastion of the list at once: only a full round that failed
    // backs off. A failure of our own files or options would fail them all.
    const bool ours = ec == Errc::invalid_options || ec == Errc::key_file_unreadable || ec == Errc::key_encrypted ||
                      ec == Errc::key_unsupported || ec == Errc::known_hosts_unreadable;
    if (current_ + 1 < bastions_.size() && !ours) {
        log_->warn("bastion {} failed ({}): trying {}", describe(bastions_[current_]), message,
                   describe(bastions_[current_ + 1]));
        ++current_;
        set_state(ManagedState::connecting, ec, message);
        attempt();
        return;
    }
    current_ = 0;

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
    woken_ = false;
    const auto next = std::chrono::system_clock::now() + delay;
    board_.update(options_.name, generation_, [&](TunnelStatus &s) {
        s.port_held = port_held;
        s.next_attempt = next;
    });
    log_->warn("retrying in {:.1f} s", static_cast<double>(delay.count()) / 1000.0);
    set_state(ManagedState::backing_off, ec, why);
    retry_timer_.expires_after(delay);
    retry_timer_.async_wait([this, self = shared_from_this()](const asio::error_code &timer_ec) {
        // cancel() cannot take back a wait that had already expired: the
        // probe may have started the attempt meanwhile.
        if (!timer_ec && state_ == ManagedState::backing_off)
            attempt();
    });
    wait_for_bastions();
}

bool Supervisor::unreachable(std::error_code ec, bool was_up) const
{
    // A refused or unanswered TCP connect logged nobody in: probing until the
    // port answers costs the bastion nothing. A timeout after TCP (a hung
    // SSH set-up) or a session lost after it served may be the bastion
    // going away, but if the attempt the probe started ends so again, the
    // next one waits for the backoff: a bastion that accepts TCP and then
    // drops us must not see a login per probe. Everything after TCP that is
    // the bastion's answer (authentication, host key, a refused listen) or
    // our configuration waits for the backoff: logins stay as rare as it says.
    if (ec == Errc::bastion_unreachable)
        return true;
    if (ec == Errc::bastion_timeout || (ec == Errc::transport_lost && was_up))
        return !woken_;
    return false;
}

// The probe is a direct TCP connect: it says nothing about a bastion reached
// through a proxy or a jump host, and must not go around them. Such tunnels
// wait out their backoff and do not fail back by themselves.
bool Supervisor::direct_route() const
{
    return options_.proxy.kind == ProxyOptions::Kind::none && options_.jump.host.empty();
}

void Supervisor::wait_for_bastions()
{
    if (!probes_ || manager_.reachability_probe.count() <= 0 || stopping_ || !direct_route())
        return;
    const std::uint64_t wait = ++probe_generation_;
    for (std::size_t i = 0; i < bastions_.size(); ++i) {
        if (!reach_failed_[i])
            continue;
        std::weak_ptr<Supervisor> weak = weak_from_this();
        probe_watches_.push_back(probes_->watch(
            bastions_[i].host, bastions_[i].port, [this, weak, wait, i](bool reachable) {
                // On the probes' loop: hop to ours.
                auto self = weak.lock();
                if (!reachable || !self)
                    return;
                asio::post(io_, [this, self, wait, i] {
                    if (wait != probe_generation_ || state_ != ManagedState::backing_off || stopping_)
                        return; // a result for a wait that is over
                    log_->info("the bastion {} answers again: retrying now", describe(bastions_[i]));
                    retry_timer_.cancel();
                    current_ = i;
                    attempt();
                    woken_ = true;
                });
            }));
    }
}

void Supervisor::stop_waiting_for_bastion()
{
    ++probe_generation_;
    for (auto id : probe_watches_)
        probes_->unwatch(id);
    probe_watches_.clear();
}

// --- failback: back to the first bastion once it has answered for a while ------

void Supervisor::watch_preferred()
{
    if (serving_ == 0 || failback_watch_ || options_.failback_after.count() <= 0 || !probes_ || stopping_ ||
        !direct_route())
        return;
    const std::uint64_t watch = ++failback_generation_;
    answering_since_.reset();
    std::weak_ptr<Supervisor> weak = weak_from_this();
    failback_watch_ = probes_->watch(bastions_[0].host, bastions_[0].port, [this, weak, watch](bool reachable) {
        auto self = weak.lock();
        if (!self)
            return;
        asio::post(io_, [this, self, watch, reachable] {
            if (watch != failback_generation_ || stopping_ || !tunnel_ || candidate_)
                return;
            const auto now = std::chrono::steady_clock::now();
            if (!reachable) {
                answering_since_.reset();
                return;
            }
            if (!answering_since_)
                answering_since_ = now;
            if (now - *answering_since_ >= options_.failback_after)
                start_failback();
        });
    });
}

void Supervisor::stop_failback()
{
    ++failback_generation_;
    if (failback_watch_)
        probes_->unwatch(failback_watch_);
    failback_watch_ = 0;
    answering_since_.reset();
    if (candidate_) {
        auto candidate = std::move(candidate_);
        candidate_id_ = 0;
        candidate->stop(std::chrono::milliseconds(0), [candidate] {});
    }
}

void Supervisor::start_failback()
{
    // Make before break: a second run on the first bastion; the serving one
    // stops only once it serves.
    log_->info("bastion {} has answered for {} s: bringing the tunnel up there before leaving {}",
               describe(bastions_[0]), options_.failback_after.count(), describe(bastions_[serving_]));
    candidate_status_ = std::make_shared<RunStatus>(all_forwards(options_));
    candidate_id_ = ++next_run_id_;
    candidate_ = make_run(0, candidate_status_, candidate_id_);
    candidate_->start();
}

void Supervisor::on_failback_up(std::uint16_t port)
{
    // The first bastion serves: it becomes the run; the old one stops
    // accepting and its open connections get the grace period.
    auto old = std::move(tunnel_);
    tunnel_ = std::move(candidate_);
    run_id_ = candidate_id_;
    candidate_id_ = 0;
    board_.set_run(options_.name, generation_, std::move(candidate_status_));
    current_ = 0;
    if (failback_watch_)
        probes_->unwatch(failback_watch_);
    failback_watch_ = 0;
    ++failback_generation_;
    board_.update(options_.name, generation_, [port](TunnelStatus &s) { s.listen_port = port; });
    up_since_ = std::chrono::steady_clock::now();
    serving_on(0);
    retiring_.push_back(old);
    old->stop(manager_.grace_period, [this, self = shared_from_this(), old] {
        asio::post(io_, [this, self, old] { std::erase(retiring_, old); });
    });
}

void Supervisor::on_failback_failed(std::error_code ec, const std::string &message)
{
    candidate_.reset();
    candidate_id_ = 0;
    candidate_status_.reset();
    if (ec == Errc::stopped)
        return;
    // Keep serving where we are; the first bastion must answer for the whole
    // period again before the next try (so a bastion that refuses our login
    // sees one attempt per period at most).
    log_->warn("returning to bastion {} failed ({}): staying on {}", describe(bastions_[0]), message,
               describe(bastions_[serving_]));
    answering_since_.reset();
}

void Supervisor::stop(std::function<void()> done)
{
    stopping_ = true;
    retry_timer_.cancel();
    stop_waiting_for_bastion();
    stop_failback();
    auto finish = [this, self = shared_from_this(), done] {
        keeps_->close(); // e.g. the VPN capture's rules: the tunnel stops for good
        set_state(ManagedState::stopped);
        done();
    };
    for (const auto &old : retiring_)
        old->stop(std::chrono::milliseconds(0), [] {});
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
