// SPDX-License-Identifier: MIT
// Tunnel: one reverse SSH tunnel (ssh -R). The bastion listens on a port and
// every connection that arrives there is relayed to remote_host:remote_port.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

#include <pytun/export.h>

namespace pytun {

/// Everything one reverse tunnel needs. Only the configured key is used (no
/// agent, no key discovery) and the bastion's host key is always verified
/// against known_hosts_file.
struct TunnelOptions {
    std::string name;                      ///< used in log lines; defaults to user@host:port
    std::string server_host;               ///< the bastion (name or address)
    std::uint16_t server_port = 22;
    std::string username;
    std::string key_file;                  ///< private key (OpenSSH or PEM format)
    std::string key_passphrase;            ///< empty: the key must not be encrypted
    std::string known_hosts_file;          ///< OpenSSH known_hosts; an unknown or changed key is refused
    std::string bind_address;              ///< address the bastion binds; empty: the bastion's default
    std::uint16_t listen_port = 4000;      ///< port on the bastion; 0: the bastion chooses
    std::string remote_host;               ///< the service each connection is relayed to
    std::uint16_t remote_port = 22;
    std::chrono::milliseconds connect_timeout{10000};      ///< resolve + TCP connect + SSH set-up
    std::chrono::milliseconds local_connect_timeout{2000}; ///< per forwarded connection
    std::chrono::seconds keep_alive{30};   ///< health interval (keep_alive_time); 0: no checks
    std::string config_path;               ///< the file this tunnel came from, if any (a status key)
};

enum class TunnelState {
    stopped,     ///< not started, or stopped on request
    connecting,  ///< resolving, connecting, verifying, authenticating, requesting the port
    up,          ///< the bastion listens and connections are relayed
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

/// Counters since start(); read without waiting on the network.
struct TunnelStats {
    std::uint64_t connections_active = 0;
    std::uint64_t connections_total = 0;
    std::uint64_t connections_failed = 0;   ///< the local service refused or timed out
    std::uint64_t bytes_to_service = 0;     ///< relayed from the bastion to remote_host
    std::uint64_t bytes_from_service = 0;   ///< relayed from remote_host to the bastion
    SetupTimeHistogram connection_setup;
};

/// Runs one reverse tunnel on a thread of its own. The object owns the SSH
/// session, its channels and sockets; destroying it stops the tunnel.
/// All member functions are thread-safe. A failed tunnel is not restarted by
/// this class (TunnelManager does that); call start() again to retry.
class PYTUN_EXPORT Tunnel {
public:
    explicit Tunnel(TunnelOptions options);
    ~Tunnel();
    Tunnel(const Tunnel &) = delete;
    Tunnel &operator=(const Tunnel &) = delete;

    /// Connect, verify the host key, authenticate and request the remote
    /// listen. Blocks until the tunnel is up (returns {}) or has failed
    /// (returns the error; last_error_message() has the details).
    std::error_code start();

    /// Cancel the remote listen, close every connection and the session.
    /// Returns within about a second, whatever the network does.
    void stop();

    /// Block until the tunnel ends; returns why (Errc::stopped after stop()).
    std::error_code wait();
    /// As wait(), for at most `timeout`; false if still running.
    bool wait_for(std::chrono::milliseconds timeout, std::error_code &reason);

    TunnelState state() const;
    /// The port the bastion listens on (the one it chose when 0 was asked).
    std::uint16_t listen_port() const;
    std::error_code last_error() const;
    /// The last error in words, with specifics and what to do about it.
    std::string last_error_message() const;
    TunnelStats stats() const;
    const TunnelOptions &options() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
