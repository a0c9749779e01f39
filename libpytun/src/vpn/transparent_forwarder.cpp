// SPDX-License-Identifier: MIT
// The VPN forward: its capture (rules, listener) kept across connections,
// and one direct-tcpip channel per captured connection.
#include "vpn/transparent_forwarder.h"

#include <sys/socket.h>

#include <fstream>
#include <random>

#include <pytun/error.h>

#include "forward/admission.h"
#include "forward/destination.h"
#include "forward/local_forwarder.h"
#include "forward/relay.h"
#include "log/aggregate.h"
#include "ssh/connection.h"
#include "ssh/session.h"
#include "vpn/capture.h"
#include "vpn/dns_relay.h"
#include "vpn/capture_state.h"
#include "vpn/original_dst.h"

namespace pytun::detail {
namespace {

// sshuttle's default listen port, searched downwards while taken.
constexpr std::uint16_t k_first_port = 12300;
constexpr int k_ports_tried = 100;

// A reset, not a clean close: the client sees "connection refused", as it
// would without the tunnel (sshuttle closes cleanly after accepting, #236).
template <typename Socket>
void reset(Socket &socket)
{
    asio::error_code ignored;
    socket.set_option(asio::socket_base::linger(true, 0), ignored);
    socket.close(ignored);
}

std::string endpoint_text(const asio::ip::tcp::endpoint &e)
{
    const std::string address = e.address().to_string();
    return (e.address().is_v6() ? "[" + address + "]" : address) + ":" + std::to_string(e.port());
}

bool router_address(const std::string &address)
{
    return address == "0.0.0.0" || address == "::";
}

bool host_has_ipv6()
{
    return static_cast<bool>(std::ifstream("/proc/net/if_inet6"));
}

std::optional<IpAddress> to_ip(const asio::ip::address &address)
{
    return IpAddress::parse(address.to_string());
}

// The bastion as this connection reached it: its exact return rule.
std::optional<std::pair<IpAddress, std::uint16_t>> peer_of(int fd)
{
    sockaddr_storage storage{};
    socklen_t size = sizeof storage;
    if (::getpeername(fd, reinterpret_cast<sockaddr *>(&storage), &size) != 0)
        return std::nullopt;
    asio::ip::tcp::endpoint endpoint;
    std::memcpy(endpoint.data(), &storage, std::min<std::size_t>(size, sizeof storage));
    endpoint.resize(size);
    auto address = to_ip(endpoint.address());
    if (!address)
        return std::nullopt;
    return std::make_pair(*address, endpoint.port());
}

// --- DNS: whose queries are captured -----------------------------------------------

constexpr const char *k_resolv_conf = "/etc/resolv.conf";
/// systemd-resolved's upstream servers, where resolv.conf names its stub.
constexpr const char *k_resolved_upstreams = "/run/systemd/resolve/resolv.conf";
constexpr const char *k_resolved_stub = "127.0.0.53";

bool wants_dns(const TransparentForward &spec)
{
    return spec.dns || !spec.nameservers.empty();
}

std::optional<std::string> read_text_file(const char *path)
{
    std::ifstream in(path);
    if (!in)
        return std::nullopt;
    std::string text;
    std::getline(in, text, '\0');
    return text;
}

/// The nameservers this machine's programs ask: those of /etc/resolv.conf,
/// and when that names systemd-resolved's stub, also the upstreams resolved
/// asks (as sshuttle captures both: the stub's cache is then filled through
/// the tunnel too). `notes` gets what was skipped.
std::vector<IpAddress> local_nameservers(std::vector<std::string> &notes)
{
    std::vector<IpAddress> out;
    auto add_from = [&](const char *path) {
        auto text = read_text_file(path);
        if (!text) {
            notes.push_back(std::string("cannot read ") + path);
            return;
        }
        for (const Nameserver &ns : parse_resolv_conf(*text)) {
            auto address = IpAddress::parse(ns.host);
            if (!address) { // a link-local address with its zone: the rules cannot name the zone
                notes.push_back(std::string(path) + ": nameserver " + ns.host +
                                " is not captured (an address with a zone)");
                continue;
            }
            if (std::find(out.begin(), out.end(), *address) == out.end())
                out.push_back(*address);
        }
    };
    add_from(k_resolv_conf);
    if (std::find(out.begin(), out.end(), *IpAddress::parse(k_resolved_stub)) != out.end() &&
        std::ifstream(k_resolved_upstreams))
        add_from(k_resolved_upstreams);
    return out;
}

std::string join_addresses(const std::vector<IpAddress> &addresses)
{
    std::string out;
    for (const auto &a : addresses)
        out += (out.empty() ? "" : ", ") + a.to_string();
    return out;
}

} // namespace

std::string check_transparent_forward(const TransparentForward &spec)
{
    if (spec.subnets.empty() && !spec.auto_nets)
        return "nothing to capture: give at least one subnet (or -N, the bastion's routes)";
    for (const auto *list : {&spec.subnets, &spec.exclude}) {
        for (const auto &text : *list) {
            std::string error;
            auto rule = parse_destination(text, error);
            if (!rule)
                return error;
            if (rule->kind == DestinationRule::Kind::wildcard)
                return "'" + text + "': a wildcard cannot be captured (the capture sees addresses, not names): "
                                    "give the subnet, or the host names one by one";
        }
    }
    asio::error_code ec;
    const auto listen = asio::ip::make_address(spec.listen_address, ec);
    if (ec || !(listen.is_loopback() || listen.is_unspecified()))
        return "listen address '" + spec.listen_address +
               "': use 127.0.0.1 or ::1 (this machine's connections) or 0.0.0.0 or :: (a router: also those it "
               "forwards)";
    for (const auto &ns : spec.nameservers)
        if (!IpAddress::parse(ns))
            return "nameserver '" + ns + "' is not an IP address";
    if (!spec.to_ns.empty()) {
        std::string error;
        if (!parse_nameserver(spec.to_ns, error))
            return error;
    }
    return {};
}

// --- CaptureKeep ---------------------------------------------------------------

/// What one tunnel's capture keeps across its SSH connections: the
/// listeners, the rules and their journal, the resolved plan.
class CaptureKeep final : public ForwardKeep, public std::enable_shared_from_this<CaptureKeep> {
public:
    CaptureKeep(asio::io_context &io, std::shared_ptr<spdlog::logger> log) : io_(io), log_(std::move(log)) {}
    ~CaptureKeep() override { close(); }

    /// Privileges, the method, what crashed runs left, the listeners.
    bool open(const TransparentForward &spec, const std::string &tunnel, std::string &message);
    /// Install the plan (or replace what is installed).
    bool apply(std::string &message);
    /// A connection is up: captured connections go to `serve` of `owner`
    /// (a failback's new run attaches before the old one detaches).
    void attach(const void *owner, std::function<void(asio::ip::tcp::socket)> serve);
    /// `owner`'s connection is gone: unless another has attached since,
    /// captured connections are reset, or with `lift` (fail-open) the rules
    /// are removed until the next attach.
    void detach(const void *owner, bool lift);
    void close() override;
    std::shared_ptr<const CaptureState> capture_state() const override { return state_; }
    CaptureState &state() { return *state_; }

    std::uint16_t port() const { return plan.tcp_port; }
    const char *method() const { return capture_ ? to_string(capture_->method()) : "none"; }

    CapturePlan plan;
    bool resolved = false; ///< the subnets' names were resolved (once: before the rules exist)
    /// -N: the bastion's routes are in the plan (once: the first connection
    /// that could read them).
    bool auto_nets_read = false;

    /// --dns: the relay the DNS rules redirect to (null without --dns).
    std::unique_ptr<DnsRelay> dns;
    /// Attach the relay to `owner`'s connection; detach only by the same
    /// owner (a finished run's forwarder must not detach its successor's).
    void attach_dns(const void *owner, ChannelOpener &opener, const Nameserver &resolver);
    void detach_dns(const void *owner);

private:
    bool open_listeners(const TransparentForward &spec, std::string &message);
    bool open_dns(const TransparentForward &spec, std::string &message);
    void on_client(asio::ip::tcp::socket socket);

    asio::io_context &io_;
    std::shared_ptr<spdlog::logger> log_;
    std::vector<std::shared_ptr<LocalListener>> listeners_;
    std::unique_ptr<Capture> capture_;
    std::function<void(asio::ip::tcp::socket)> serve_;
    const void *owner_ = nullptr; ///< whose serve_
    const void *dns_owner_ = nullptr;
    /// Counts across the tunnel's sessions (a session's TrafficCounters
    /// start at zero, and while down there is none to count in). A DNS
    /// relay, once open, shows its counts here: state_->set_dns(relay.counters()).
    std::shared_ptr<CaptureState> state_ = std::make_shared<CaptureState>();
    bool closed_ = false;
};

bool CaptureKeep::open(const TransparentForward &spec, const std::string &tunnel, std::string &message)
{
    if (!has_net_admin()) {
        message = "the VPN capture changes the firewall: run pytun as root or give it CAP_NET_ADMIN (systemd: "
                  "AmbientCapabilities=CAP_NET_ADMIN)";
        return false;
    }
    auto method = resolve_capture_method(spec.method, message);
    if (!method)
        return false;
    plan.id = capture_id(tunnel);
    for (const std::string &line : cleanup_captures(false))
        log_->warn("{}", line);
    if (auto other = live_owner(plan.id)) {
        message = "another pytun (pid " + std::to_string(other->owner.pid) + ", tunnel '" + other->tunnel +
                  "') captures as '" + plan.id +
                  "' in this network namespace: stop it first (pytun vpn runs once per bastion and user in a "
                  "network namespace; in tunnel files give each VPN tunnel its own tunnel_name)";
        return false;
    }
    if (!open_listeners(spec, message))
        return false;
    if (wants_dns(spec) && !open_dns(spec, message))
        return false;
    plan.router = router_address(spec.listen_address);
    plan.carry_ipv6 = spec.ipv6;
    capture_ = std::make_unique<Capture>(plan.id, tunnel, *method, log_);
    state_->set_port(plan.tcp_port);
    state_->set_installed(false, this->method());
    return true;
}

// Both families on one port (the rules redirect to ":PORT"): 127.0.0.1 and
// ::1, or 0.0.0.0 and :: for a router.
bool CaptureKeep::open_listeners(const TransparentForward &spec, std::string &message)
{
    const bool router = router_address(spec.listen_address);
    const std::string v4 = router ? "0.0.0.0" : "127.0.0.1";
    const std::string v6 = router ? "::" : "::1";
    plan.ipv6 = host_has_ipv6();
    const int tries = spec.listen_port ? 1 : k_ports_tried;
    for (int i = 0; i < tries; ++i) {
        const auto port = static_cast<std::uint16_t>(spec.listen_port ? spec.listen_port : k_first_port - i);
        auto first = std::make_shared<LocalListener>(io_);
        if (!first->open(v4, port, message)) {
            if (first->open_error() == asio::error::address_in_use)
                continue;
            return false;
        }
        listeners_ = {first};
        if (plan.ipv6) {
            auto second = std::make_shared<LocalListener>(io_);
            if (!second->open(v6, port, message, true)) {
                if (second->open_error() == asio::error::address_in_use) {
                    first->close();
                    listeners_.clear();
                    continue;
                }
                log_->warn("IPv6 is not captured: {}", message);
                plan.ipv6 = false;
            } else {
                listeners_.push_back(second);
            }
        }
        plan.tcp_port = port;
        std::weak_ptr<CaptureKeep> weak = shared_from_this();
        for (auto &listener : listeners_)
            listener->accept([weak](asio::ip::tcp::socket socket) {
                if (auto keep = weak.lock())
                    keep->on_client(std::move(socket));
            });
        return true;
    }
    if (spec.listen_port == 0)
        message = "no free port for the capture's listener between " + std::to_string(k_first_port - k_ports_tried + 1) +
                  " and " + std::to_string(k_first_port) + ": give one with -l";
    return false;
}

// The relay listens where the redirects land (as the TCP listener), on a port
// of its own; its rules capture port 53 to the given nameservers, or to those
// this machine uses.
bool CaptureKeep::open_dns(const TransparentForward &spec, std::string &message)
{
    std::vector<IpAddress> nameservers;
    for (const auto &text : spec.nameservers) { // checked in check_transparent_forward()
        auto address = IpAddress::parse(text);
        if (address && std::find(nameservers.begin(), nameservers.end(), *address) == nameservers.end())
            nameservers.push_back(*address);
    }
    if (spec.nameservers.empty()) {
        std::vector<std::string> notes;
        nameservers = local_nameservers(notes);
        for (const auto &note : notes)
            log_->warn("DNS: {}", note);
        if (nameservers.empty()) {
            message = std::string("--dns: ") + k_resolv_conf +
                      " names no nameserver whose queries could be captured: give them with --ns-hosts IP[,IP]";
            return false;
        }
    }
    std::vector<IpAddress> kept;
    for (const auto &ns : nameservers) {
        if (ns.family == IpFamily::v6 && !plan.ipv6)
            log_->warn("DNS: nameserver {} is not captured: no IPv6 here", ns.to_string());
        else
            kept.push_back(ns);
    }
    if (kept.empty()) {
        message = "--dns: no nameserver to capture (" + join_addresses(nameservers) +
                  ": IPv6, which is not captured here)";
        return false;
    }
    DnsRelayOptions options;
    const bool router = router_address(spec.listen_address);
    options.listen = {router ? "0.0.0.0" : "127.0.0.1"};
    if (plan.ipv6)
        options.listen.push_back(router ? "::" : "::1");
    dns = std::make_unique<DnsRelay>(io_, std::move(options), log_);
    if (!dns->open(message))
        return false;
    plan.dns_port = dns->port();
    plan.nameservers = std::move(kept);
    log_->info("DNS: queries to {} (port 53, UDP and TCP) go to the relay on port {}",
               join_addresses(plan.nameservers), plan.dns_port);
    return true;
}

void CaptureKeep::attach_dns(const void *owner, ChannelOpener &opener, const Nameserver &resolver)
{
    if (!dns)
        return;
    dns_owner_ = owner;
    dns->attach(opener, resolver.host, resolver.port);
}

void CaptureKeep::detach_dns(const void *owner)
{
    if (!dns || dns_owner_ != owner)
        return;
    dns_owner_ = nullptr;
    dns->detach();
}

bool CaptureKeep::apply(std::string &message)
{
    if (!capture_)
        return false;
    const bool applied = capture_->apply(plan, message);
    state_->set_installed(capture_->installed(), method());
    return applied;
}

void CaptureKeep::attach(const void *owner, std::function<void(asio::ip::tcp::socket)> serve)
{
    owner_ = owner;
    serve_ = std::move(serve);
}

void CaptureKeep::detach(const void *owner, bool lift)
{
    if (owner != owner_)
        return;
    owner_ = nullptr;
    serve_ = nullptr;
    if (lift && capture_ && capture_->installed()) {
        capture_->remove();
        state_->set_installed(false, method());
        log_->warn("fail-open: capture lifted while the tunnel is down; connections go their direct way");
    }
}

void CaptureKeep::on_client(asio::ip::tcp::socket socket)
{
    state_->captured.fetch_add(1, std::memory_order_relaxed);
    if (serve_) {
        serve_(std::move(socket));
        return;
    }
    // Fail-closed: no tunnel, so nothing leaves; the client learns at once.
    state_->reset_while_down.fetch_add(1, std::memory_order_relaxed);
    log_aggregated(*log_, spdlog::level::debug, "captured while down",
                   "captured connection reset: the tunnel is down (reconnecting)");
    reset(socket);
}

void CaptureKeep::close()
{
    if (closed_)
        return;
    closed_ = true;
    serve_ = nullptr;
    for (auto &listener : listeners_)
        listener->close();
    listeners_.clear();
    if (dns)
        dns->close();
    if (capture_ && capture_->installed())
        log_->info("capture removed");
    if (capture_)
        state_->set_installed(false, method());
    capture_.reset(); // removes the rules, then the journal
}

// --- TransparentForwarder -------------------------------------------------------

TransparentForwarder::TransparentForwarder(asio::io_context &io, TransparentForward spec, const TunnelOptions &tunnel,
                                           std::shared_ptr<spdlog::logger> log,
                                           std::shared_ptr<TrafficCounters> counters)
    : io_(io), spec_(std::move(spec)), tunnel_name_(tunnel.name), open_timeout_(tunnel.open_timeout),
      log_(std::move(log)), counters_(std::move(counters))
{
}

TransparentForwarder::~TransparentForwarder()
{
    // A forward dropped after a failure gets no stop_accepting(): its opener
    // goes with its run, so the relay must not keep it.
    if (keep_)
        keep_->detach_dns(this);
}

void TransparentForwarder::start(ForwardContext context, Handlers handlers)
{
    handlers_ = std::move(handlers);
    opener_ = &context.opener;
    admission_ = &context.admission;
    if (std::string problem = check_transparent_forward(spec_); !problem.empty()) {
        fail(Errc::invalid_options, describe(ForwardSpec(spec_)) + ": " + problem);
        return;
    }
    if (!context.keep) {
        auto keep = std::make_shared<CaptureKeep>(io_, log_);
        std::string message;
        if (!keep->open(spec_, tunnel_name_, message)) {
            keep->close();
            fail(Errc::capture_failed, message);
            return;
        }
        context.keep = keep;
    }
    keep_ = std::static_pointer_cast<CaptureKeep>(context.keep);
    session_ = context.connection.session().weak_from_this();
    // This connection's address and port: a reconnect may have reached
    // another address of the bastion (the mark lets it through anyway).
    keep_->plan.bastions.clear();
    if (auto bastion = peer_of(context.connection.session().socket_fd()))
        keep_->plan.bastions.push_back(*bastion);
    if (keep_->resolved) {
        ask_server_then_install();
        return;
    }
    resolve_names([this, self = shared_from_this()](const std::string &error) {
        if (stopped_)
            return;
        if (!error.empty()) {
            fail(Errc::capture_failed, error);
            return;
        }
        keep_->resolved = true;
        if (!spec_.to_ns.empty() && !keep_->dns)
            log_->warn("--to-ns {} is ignored: DNS is not captured (add --dns)", spec_.to_ns);
        ask_server_then_install();
    });
}

// Address rules go into the plan as they are; each host name is resolved
// (here, before any rule exists) into one rule per address, as sshuttle does.
void TransparentForwarder::resolve_names(std::function<void(const std::string &error)> done)
{
    struct Pending {
        std::vector<CapturePlan::Net> nets;
        std::size_t waiting = 0;
        std::string error;
        std::function<void(const std::string &)> done;
    };
    auto pending = std::make_shared<Pending>();
    pending->done = std::move(done);
    std::vector<std::pair<DestinationRule, bool>> names;
    for (const auto *list : {&spec_.subnets, &spec_.exclude}) {
        const bool exclude = list == &spec_.exclude;
        for (const auto &text : *list) {
            std::string error;
            auto rule = parse_destination(text, error); // checked in start()
            if (rule && rule->kind == DestinationRule::Kind::network)
                pending->nets.push_back({*rule, exclude});
            else if (rule)
                names.emplace_back(*rule, exclude);
        }
    }
    auto finish = [this, pending] {
        if (pending->error.empty()) {
            // A subnet given twice (or a name that resolves into one) is one rule.
            keep_->plan.nets.clear();
            for (auto &net : pending->nets)
                if (std::none_of(keep_->plan.nets.begin(), keep_->plan.nets.end(), [&net](const CapturePlan::Net &n) {
                        return n.rule == net.rule && n.exclude == net.exclude;
                    }))
                    keep_->plan.nets.push_back(std::move(net));
            // Whatever -N adds later comes on top of these.
        }
        pending->done(pending->error);
    };
    if (names.empty()) {
        asio::post(io_, finish);
        return;
    }
    pending->waiting = names.size();
    for (auto &[rule, exclude] : names) {
        auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
        resolver->async_resolve(
            rule.name, "",
            [resolver, pending, finish, rule = rule, exclude = exclude](const asio::error_code &ec,
                                                                         asio::ip::tcp::resolver::results_type results) {
                if (ec) {
                    if (pending->error.empty())
                        pending->error = "cannot resolve '" + rule.name + "': " + ec.message();
                } else {
                    std::vector<IpAddress> addresses;
                    for (const auto &entry : results)
                        if (auto ip = to_ip(entry.endpoint().address());
                            ip && std::find(addresses.begin(), addresses.end(), *ip) == addresses.end())
                            addresses.push_back(*ip);
                    std::string error;
                    if (auto rules = resolve_name_rule(rule, addresses, error)) {
                        for (auto &r : *rules)
                            pending->nets.push_back({std::move(r), exclude});
                    } else if (pending->error.empty()) {
                        pending->error = error;
                    }
                }
                if (--pending->waiting == 0)
                    finish();
            });
    }
}

// --- what this connection asks the bastion (-N, --dns) -------------------------

// Before the rules go in: -N's routes join the plan of the first install,
// and the first DNS query after "up" already finds its resolver.
void TransparentForwarder::ask_server_then_install()
{
    read_auto_nets([this] { choose_resolver([this] { install(); }); });
}

void TransparentForwarder::read_auto_nets(std::function<void()> next)
{
    auto session = session_.lock();
    if (!spec_.auto_nets || keep_->auto_nets_read || !session) {
        next();
        return;
    }
    read_server_routes(*session, [this, self = shared_from_this(), next = std::move(next)](ServerRoutes found) {
        if (stopped_)
            return;
        for (const auto &note : found.notes)
            log_->info("-N: {}", note);
        const bool has_nets = std::any_of(keep_->plan.nets.begin(), keep_->plan.nets.end(),
                                          [](const CapturePlan::Net &n) { return !n.exclude; });
        if (!found.error.empty()) {
            if (!has_nets) {
                fail(Errc::capture_failed, "-N: " + found.error + "; nothing else to capture (give the subnets)");
                return;
            }
            log_->error("-N: {}; capturing the subnets given only (-N is tried again on the next connection)",
                        found.error);
            next();
            return;
        }
        keep_->auto_nets_read = true;
        std::string added;
        for (auto &rule : auto_nets(found.routes)) {
            if (rule.network.family == IpFamily::v6 && !spec_.ipv6)
                continue; // --disable-ipv6: the bastion's IPv6 routes are not wanted
            auto &nets = keep_->plan.nets;
            if (std::any_of(nets.begin(), nets.end(), [&rule](const CapturePlan::Net &n) { return n.rule == rule; }))
                continue; // given already (an exclude stays an exclude)
            added += (added.empty() ? "" : ", ") + rule.to_string();
            nets.push_back({std::move(rule), false});
        }
        log_->info("-N: the bastion's routes {}", added.empty() ? "add nothing new" : "captured too: " + added);
        next();
    });
}

void TransparentForwarder::choose_resolver(std::function<void()> next)
{
    resolver_.reset();
    auto session = session_.lock();
    if (!keep_->dns || !session) {
        next();
        return;
    }
    if (!spec_.to_ns.empty()) {
        std::string error;
        resolver_ = parse_nameserver(spec_.to_ns, error); // checked in start()
        next();
        return;
    }
    auto chosen = [this, self = shared_from_this(), next = std::move(next)](ServerNameservers found) {
        if (stopped_)
            return;
        if (!found.error.empty()) {
            // The capture works without it; DNS fails visibly rather than leaking.
            log_->error("DNS: {}: every query is answered SERVFAIL; name the resolver with --to-ns IP[:PORT]",
                        found.error);
            next();
            return;
        }
        if (found.nameservers.empty())
            log_->warn("DNS: the server's /etc/resolv.conf names no nameserver: asking 127.0.0.1:53 there, as its C "
                       "library would");
        static thread_local std::minstd_rand random{std::random_device{}()};
        resolver_ = choose_nameserver(found.nameservers, static_cast<std::uint32_t>(random()));
        next();
    };
    read_server_nameservers(*session, std::move(chosen));
}

void TransparentForwarder::attach_dns()
{
    if (!keep_->dns)
        return;
    keep_->state().set_dns(keep_->dns->counters()); // status and metrics read them there
    if (resolver_)
        keep_->attach_dns(this, *opener_, *resolver_);
}

void TransparentForwarder::install()
{
    std::string message;
    if (!keep_->apply(message)) {
        fail(Errc::capture_failed, message);
        return;
    }
    std::string nets, excluded;
    for (const auto &net : sorted_nets(keep_->plan.nets)) {
        std::string &list = net.exclude ? excluded : nets;
        list += (list.empty() ? "" : ", ") + net.rule.to_string();
    }
    const std::string detail =
        "capturing " + nets + (excluded.empty() ? "" : " (not " + excluded + ")") + "; method " + keep_->method();
    log_->info("{}; port {}{}", detail, keep_->port(), keep_->plan.router ? "; also for the LAN" : "");
    if (handlers_.described)
        handlers_.described(detail);
    keep_->attach(this,
                  [this, self = shared_from_this()](asio::ip::tcp::socket socket) { serve(std::move(socket)); });
    attach_dns();
    handlers_.ready(keep_->port());
}

void TransparentForwarder::fail(std::error_code ec, const std::string &message)
{
    if (handlers_.failed)
        handlers_.failed(ec, message);
}

void TransparentForwarder::serve(asio::ip::tcp::socket socket)
{
    asio::error_code ec;
    const auto peer = socket.remote_endpoint(ec);
    const auto local = socket.local_endpoint(ec);
    const auto destination = original_destination(socket);
    if (ec || !destination || *destination == local) {
        // Not redirected: a client of the listener itself would loop.
        keep_->state().not_redirected.fetch_add(1, std::memory_order_relaxed);
        log_aggregated(*log_, spdlog::level::warn, "not redirected",
                       "connection to the capture's listener that no rule redirected refused (from " +
                           (ec ? std::string("?") : endpoint_text(peer)) + ")");
        reset(socket);
        return;
    }
    auto relay = std::make_shared<Relay>(io_, log_, counters_);
    if (!admission_->admit(*relay)) {
        reset(socket);
        return;
    }
    relay->on_open({}, [](Relay::Socket &s, OpenError) { reset(s); }, open_timeout_);
    relay->start(std::move(socket));
    log_->debug("connection #{}: {} -> {}", relay->id(), endpoint_text(peer), endpoint_text(*destination));
    opener_->open_direct_tcpip(relay, destination->address().to_string(), destination->port(),
                               peer.address().to_string(), peer.port());
}

void TransparentForwarder::stop_accepting(std::function<void()> done)
{
    if (!stopped_) {
        stopped_ = true;
        if (keep_) {
            keep_->detach_dns(this);
            keep_->detach(this, spec_.fail_open);
        }
        opener_ = nullptr;
        admission_ = nullptr;
    }
    done();
}

} // namespace pytun::detail
