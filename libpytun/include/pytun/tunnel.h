// SPDX-License-Identifier: MIT
// Tunnel: one SSH connection to a bastion and the forwards it carries: the
// reverse tunnel of the original connector (ssh -R: the bastion listens and
// every connection that arrives there is relayed to remote_host:remote_port),
// plus any number of local (-L), dynamic/SOCKS (-D) and reverse SOCKS
// forwards over the same connection.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include <pytun/export.h>
#include <pytun/route.h>

namespace pytun {

/// ssh -R [bind_address:]listen_port:target_host:target_port: the bastion
/// listens, and pytun relays each connection to target_host:target_port,
/// which it reaches from here.
struct RemoteForward {
    std::string bind_address;        ///< on the bastion; empty: the bastion's default (its loopback)
    std::uint16_t listen_port = 0;   ///< on the bastion; 0: the bastion chooses
    std::string target_host;
    std::uint16_t target_port = 0;
    friend bool operator==(const RemoteForward &, const RemoteForward &) = default;
};

/// ssh -L [bind_address:]listen_port:target_host:target_port: pytun listens
/// here, and each connection goes through the bastion to target_host:
/// target_port (a name is resolved by the bastion).
struct LocalForward {
    std::string bind_address = "127.0.0.1";
    std::uint16_t listen_port = 0;   ///< 0: the system chooses (see ForwardStatus::bound_port)
    std::string target_host;
    std::uint16_t target_port = 0;
    friend bool operator==(const LocalForward &, const LocalForward &) = default;
};

/// ssh -D [bind_address:]listen_port: a SOCKS 4, 4a and 5 proxy here; each
/// CONNECT goes through the bastion (names are resolved by the bastion).
struct DynamicForward {
    std::string bind_address = "127.0.0.1";
    std::uint16_t listen_port = 1080;
    /// Destinations clients may ask for ("10.0.0.0/8", "db.corp:5432",
    /// "*.corp.example:443", "[fd00::/64]:80-90"); empty: any.
    std::vector<std::string> allow;
    /// Both set: SOCKS5 clients must authenticate with them (RFC 1929), and
    /// SOCKS4 clients are refused.
    std::string username;
    std::string password;
    friend bool operator==(const DynamicForward &, const DynamicForward &) = default;
};

/// ssh -R [bind_address:]listen_port with no target (OpenSSH 7.6+ bastions):
/// the bastion listens, its clients speak SOCKS to pytun, and pytun connects
/// from here, only to destinations on `allow` (required: an empty list is
/// an error, since it would open the whole local network).
struct RemoteDynamicForward {
    std::string bind_address;
    std::uint16_t listen_port = 0;
    std::vector<std::string> allow;
    friend bool operator==(const RemoteDynamicForward &, const RemoteDynamicForward &) = default;
};

/// How a transparent forward installs its capture: nftables (`nft -f -`,
/// one transaction per change) or iptables' nat table; automatic: nft when
/// it is installed, else iptables.
enum class CaptureMethod { automatic, nft, nat };

/// pytun vpn, sshuttle's transparent proxy over standard SSH channels
/// (docs/vpn.md): firewall rules capture new TCP connections to `subnets`
/// made on this machine (and, with a listen address of 0.0.0.0 or ::, those
/// it routes for its LAN), and each goes through the bastion to its original
/// destination in a direct-tcpip channel. UDP and other traffic to the
/// subnets is blocked, not leaked. Needs root or CAP_NET_ADMIN. The rules
/// stay while the tunnel reconnects (captured connections are reset
/// meanwhile) unless `fail_open`, and are removed when it stops; a journal
/// under $RUNTIME_DIRECTORY or /run/pytun lets a later start remove what a
/// crashed one left.
struct TransparentForward {
    /// Captured: CIDR[:PORT[-PORT]], an address, a host name (all its
    /// addresses), 0/0, ::/0 (destinations.md).
    std::vector<std::string> subnets;
    std::vector<std::string> exclude;          ///< never captured; the same syntax
    bool auto_nets = false;                    ///< also the bastion's own routes (sshuttle's -N)
    /// 127.0.0.1 or ::1: this machine's connections; 0.0.0.0 or ::: also
    /// those it forwards (router mode).
    std::string listen_address = "127.0.0.1";
    std::uint16_t listen_port = 0;             ///< 0: the first free from 12300 down
    CaptureMethod method = CaptureMethod::automatic;
    bool ipv6 = true;                          ///< false (--disable-ipv6): IPv6 subnets are blocked, not carried
    bool fail_open = false;                    ///< lift the capture while the tunnel is down
    bool dns = false;                          ///< carry DNS (UDP and TCP port 53) to `nameservers`
    /// Whose DNS is captured; empty: this machine's (/etc/resolv.conf and
    /// systemd-resolved's upstreams). Setting them implies `dns`.
    std::vector<std::string> nameservers;
    std::string to_ns;                         ///< the resolver reached from the bastion, IP[:PORT]; empty: its resolv.conf's
    friend bool operator==(const TransparentForward &, const TransparentForward &) = default;

    /// TunnelOptions::min_sessions and max_sessions that `pytun vpn` and
    /// tunnel files with a capture use unless told otherwise: a machine's
    /// connections come in bursts (a web page opens dozens), and libssh2
    /// opens one channel at a time per SSH connection, so sessions are kept
    /// warm (docs/vpn.md, "Bursts"). Each costs an sshd process on the bastion.
    static constexpr unsigned default_min_sessions = 12;
    static constexpr unsigned default_max_sessions = 16;
};

/// "" when this process can install a VPN capture with `method`; else why
/// not (not root and no CAP_NET_ADMIN, nft or iptables missing) and what to
/// do about it.
PYTUN_EXPORT std::string capture_unavailable(CaptureMethod method);

/// Removes what pytun processes that are no longer running left of their
/// VPN captures in this network namespace (their firewall rules, then their
/// journals) and, with `unjournalled`, pytun's tables and chains that no
/// running pytun's journal accounts for. A line per capture removed. Needs
/// root or CAP_NET_ADMIN.
PYTUN_EXPORT std::vector<std::string> remove_stale_captures(bool unjournalled = false);

using ForwardSpec = std::variant<RemoteForward, LocalForward, DynamicForward, RemoteDynamicForward, TransparentForward>;

/// "R 127.0.0.1:4000 -> ldap.local:389", "L 127.0.0.1:8080 -> db:5432",
/// "D 127.0.0.1:1080", "R 0.0.0.0:1080 (SOCKS)", "VPN 10.0.0.0/8 -x
/// 10.1.0.0/16 (DNS)": for logs and status.
PYTUN_EXPORT std::string describe(const ForwardSpec &forward);

/// A forward written as for ssh: `kind` 'L' "[BIND:]PORT:HOST:HOSTPORT",
/// 'D' "[BIND:]PORT", 'R' "[BIND:]PORT:HOST:HOSTPORT" or "[BIND:]PORT"
/// (reverse SOCKS: give it an allowlist). IPv6 addresses in brackets;
/// BIND '*' means every interface; without BIND, -L and -D listen on
/// 127.0.0.1 and -R on the bastion's default. Nothing and `error` set
/// ("'8080:db': expected [BIND:]PORT:HOST:HOSTPORT") when it does not parse.
PYTUN_EXPORT std::optional<ForwardSpec> parse_forward(char kind, std::string_view text, std::string &error);

/// Whether `rule` is a destination rule an allowlist (DynamicForward::allow,
/// RemoteDynamicForward::allow) takes: false and `error` set ("'10.0.0.0/33':
/// mask must be 0-32") when it is not. The syntax: docs/destinations.md.
PYTUN_EXPORT bool check_destination(std::string_view rule, std::string &error);

/// One bastion of a tunnel's failover list.
struct Bastion {
    std::string host;                      ///< name or address (an IPv6 address without brackets)
    std::uint16_t port = 22;
    friend bool operator==(const Bastion &, const Bastion &) = default;
};

/// Everything one tunnel needs: the SSH connection, and what it carries.
/// Only the configured key is used (no agent, no key discovery) and the
/// bastion's host key is always verified against known_hosts_file.
struct TunnelOptions {
    std::string name;                      ///< used in log lines; defaults to user@host:port
    std::string server_host;               ///< the bastion (name or address)
    std::uint16_t server_port = 22;
    std::string username;
    std::string key_file;                  ///< private key (OpenSSH or PEM format)
    std::string key_passphrase;            ///< empty: the key must not be encrypted
    std::string known_hosts_file;          ///< OpenSSH known_hosts; an unknown or changed key is refused
    /// Resolve + TCP connect + SSH set-up, through the proxy and the jump
    /// host when there are (the whole chain within this time).
    std::chrono::milliseconds connect_timeout{10000};
    std::chrono::seconds keep_alive{30};   ///< health interval (keep_alive_time); 0: no checks
    /// Reach the first SSH hop (the jump host, else the bastion) through this
    /// proxy (Kind::none: directly). The library reads no environment
    /// variable: the pytun command turns https_proxy/all_proxy into this.
    ProxyOptions proxy;
    /// Reach the bastion through this SSH host, like ssh -J (host empty: no
    /// jump host). Both hosts' keys are verified.
    JumpHost jump;

    // The original connector's reverse tunnel, used when remote_host is set:
    // the first forward, RemoteForward{bind_address, listen_port, remote_host,
    // remote_port}. remote_host is also the "local service" whose health the
    // manager watches.
    std::string bind_address;              ///< address the bastion binds; empty: the bastion's default
    std::uint16_t listen_port = 4000;      ///< port on the bastion; 0: the bastion chooses
    std::string remote_host;               ///< the service each connection is relayed to
    std::uint16_t remote_port = 22;

    std::vector<ForwardSpec> forwards;     ///< more forwards over the same connection
    std::chrono::milliseconds local_connect_timeout{2000}; ///< per connection pytun dials (reverse forwards)
    std::chrono::milliseconds open_timeout{10000}; ///< per channel pytun opens (-L, -D): the bastion's connect
    /// SSH connections to the bastion for channels pytun opens (-L, -D):
    /// libssh2 opens one channel at a time per connection, so while opens
    /// wait, up to this many connections (the tunnel's own included) share
    /// them; extra ones close when idle. 1: never more than the tunnel's own.
    unsigned max_sessions = 8;
    /// Connections kept open even when idle (the tunnel's own included), so
    /// that a burst of opens finds them ready instead of waiting about 8
    /// round trips for each new one. Each costs one sshd process on the
    /// bastion (about 10 MiB RSS, 2.5 MiB PSS). 1: only the tunnel's own.
    /// Used only by tunnels with -L or -D forwards; at most max_sessions.
    unsigned min_sessions = 1;
    /// Connections open at once over all its forwards (max_connections);
    /// more are refused (closed at once) until some finish.
    std::uint32_t max_connections = 512;
    std::string config_path;               ///< the file this tunnel came from, if any (a status key)
    /// One of several connectors for the same bastion port (TunnelManager
    /// only): a refused reverse listen is not an error but the state
    /// `standby`, which keeps the SSH session and asks for the port again
    /// every 1-2 s until the bastion grants it. false: a refused listen fails.
    bool standby = false;

    /// More bastions, in order of preference after server_host:server_port
    /// (the first): a TunnelManager moves to the next when the current one
    /// fails, and backs off only after the whole list has failed. Each is
    /// checked against known_hosts_file. pytun::Tunnel uses the first only.
    std::vector<Bastion> failover;
    /// While a later bastion serves, a TunnelManager returns to the first once
    /// it has answered TCP for this long (the new session serves before the
    /// old one stops). 0: never (stay until the serving bastion fails).
    std::chrono::seconds failback_after{60};

    friend bool operator==(const TunnelOptions &, const TunnelOptions &) = default;
};

/// The bastions of `options` in order: server_host:server_port, then `failover`.
PYTUN_EXPORT std::vector<Bastion> all_bastions(const TunnelOptions &options);
/// "host:port", "[::1]:2222": for logs and status.
PYTUN_EXPORT std::string describe(const Bastion &bastion);

/// Every forward of `options`: the reverse tunnel (when remote_host is set)
/// first, then `forwards`.
PYTUN_EXPORT std::vector<ForwardSpec> all_forwards(const TunnelOptions &options);

/// How the tunnel reaches its bastion, for logs and reports: "" (directly),
/// "through the proxy http://p:3128", "through the jump host u@j:22
/// (reached through the proxy socks5://p:1080)". Never a password.
PYTUN_EXPORT std::string describe_route(const TunnelOptions &options);

enum class TunnelState {
    stopped,     ///< not started, or stopped on request
    connecting,  ///< resolving, connecting, verifying, authenticating, requesting the port
    up,          ///< forwards serve and connections are relayed
    failed,      ///< ended by an error; last_error() says which
};

/// How long forwarded connections took to set up: from the channel's arrival
/// from the bastion to the local connect being done (connects that failed
/// are counted in connections_failed instead), in fixed buckets.
struct SetupTimeHistogram {
    /// Upper bounds of the buckets in seconds; one more bucket holds the rest.
    static constexpr std::array<double, 13> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,    0.25,  0.5,    1,     2.5,  5};
    std::array<std::uint64_t, bounds.size() + 1> counts{}; ///< per bucket (not cumulative)
    std::uint64_t count = 0;
    double sum_seconds = 0;
};

/// Counters since start(); read without waiting on the network. "Service"
/// is the end pytun connects to or accepts from on this side: the target of
/// a reverse forward, the clients of a local or SOCKS forward.
struct TunnelStats {
    std::uint64_t connections_active = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t connections_failed = 0;   ///< could not be connected (refused, unreachable, timed out)
    std::uint64_t connections_refused = 0;  ///< turned away: max_connections, or descriptors kept for others
    std::uint64_t bytes_to_service = 0;     ///< relayed from the bastion to this side
    std::uint64_t bytes_from_service = 0;   ///< relayed from this side to the bastion
    SetupTimeHistogram connection_setup;    ///< until both ends are connected
};

/// A VPN forward's capture (TransparentForward). The capture outlives SSH
/// sessions, so unlike TunnelStats its counters run from the tunnel's start.
/// A VPN capture's DNS relay counts (outside CaptureStatus: a nested class
/// with member initializers cannot be an optional's type inside its
/// enclosing class for clang).
struct CaptureDnsStatus {
    std::uint64_t queries = 0;   ///< received, over UDP and TCP, malformed ones included
    std::uint64_t answered = 0;  ///< answers of the server's resolver passed on
    std::uint64_t truncated = 0; ///< of those, cut for UDP (TC set): the client asks again over TCP
    std::uint64_t servfail = 0;  ///< answered SERVFAIL here: no tunnel, timeout, overload, channel lost
    std::uint64_t timeouts = 0;  ///< of those, no answer in time
    std::uint64_t rejected = 0;  ///< malformed or unsupported: answered FORMERR/NOTIMP/REFUSED, or dropped
};

struct CaptureStatus {
    bool installed = false;             ///< the firewall rules are in place now
    std::string method;                 ///< "nft" or "nat"; "" until the capture could open
    std::uint16_t port = 0;             ///< the capture's listener (both families); 0 until it listens
    std::uint64_t captured = 0;         ///< connections the rules redirected to the listener
    std::uint64_t reset_while_down = 0; ///< of those, reset at once: no SSH session (fail-closed)
    std::uint64_t not_redirected = 0;   ///< connections to the listener that no rule redirected: reset
    /// The DNS relay's counts (vpn_dns, --dns); absent when DNS is not captured.
    std::optional<CaptureDnsStatus> dns;
};

/// One forward of a running tunnel.
struct ForwardStatus {
    std::string description;                ///< describe(spec)
    bool serving = false;
    std::uint16_t bound_port = 0;           ///< where it listens (on the bastion for remote kinds), once serving
    std::string error;                      ///< why it does not serve (it is retried), or ""
    /// What the kind tells once serving; a VPN capture: "capturing NETS[ (not
    /// EXCLUDED)]; method nft|nat".
    std::string detail;
    TunnelStats traffic;
    std::optional<CaptureStatus> capture;   ///< a VPN forward's capture, once it opened; else nothing
};

/// Runs one tunnel on a thread of its own. The object owns the SSH sessions,
/// their channels and sockets; destroying it stops the tunnel.
/// All member functions are thread-safe. A failed tunnel is not restarted by
/// this class (TunnelManager does that); call start() again to retry.
class PYTUN_EXPORT Tunnel {
public:
    explicit Tunnel(TunnelOptions options);
    ~Tunnel();
    Tunnel(const Tunnel &) = delete;
    Tunnel &operator=(const Tunnel &) = delete;

    /// Connect, verify the host key, authenticate and start every forward.
    /// Blocks until the tunnel is up (returns {}: at least one forward
    /// serves; forwards() tells about the others, which are retried) or has
    /// failed (returns the error; last_error_message() has the details).
    std::error_code start();

    /// Stop every forward, close every connection and the session.
    /// Returns within about a second, whatever the network does.
    void stop();

    /// Block until the tunnel ends; returns why (Errc::stopped after stop()).
    std::error_code wait();
    /// As wait(), for at most `timeout`; false if still running.
    bool wait_for(std::chrono::milliseconds timeout, std::error_code &reason);

    TunnelState state() const;
    /// The port the first forward listens on (for the reverse tunnel: on the
    /// bastion, the one it chose when 0 was asked).
    std::uint16_t listen_port() const;
    std::error_code last_error() const;
    /// The last error in words, with specifics and what to do about it.
    std::string last_error_message() const;
    /// The sum over every forward.
    TunnelStats stats() const;
    /// Each forward, in all_forwards() order.
    std::vector<ForwardStatus> forwards() const;
    const TunnelOptions &options() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
