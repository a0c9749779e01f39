// SPDX-License-Identifier: MIT
// SshConnection: one SSH connection to a bastion, whatever runs over it:
// resolve and connect with a deadline (directly, through a proxy, or through
// a Transport such as a jump host's channel), verify the host key,
// authenticate, keep it alive (keepalive + an end-to-end probe), say
// goodbye, and report a failure once. It knows no forward: forwards use its
// session (the driver) once it is ready. All calls on the loop thread.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include <asio.hpp>
#include <spdlog/logger.h>

#include <pytun/route.h>

#include "ssh/key_file.h"
#include "ssh/known_hosts.h"
#include "ssh/session.h"

namespace pytun::detail {

class SshSession;
class UserAuth;

/// A way to the bastion's sshd other than a TCP connect of the connection's
/// own: a direct-tcpip channel of a jump host's connection (tunnel/jump.h).
/// The connection starts it, keeps it while its session runs and closes it
/// with itself. All calls on the loop thread.
class Transport {
public:
    using Ready = std::function<void(std::error_code, const std::string &message, SshSession::Socket)>;
    using Lost = std::function<void(std::error_code, const std::string &message)>;
    virtual ~Transport() = default;
    /// `ready` once, never inside this call: a stream socket on which the
    /// bastion's sshd answers, or why there is none. `lost` once afterwards
    /// if the way breaks (before the socket shows it).
    virtual void start(Ready ready, Lost lost) = 0;
    /// Free everything now; no handler runs afterwards. Idempotent.
    virtual void close() = 0;
};
using TransportFactory =
    std::function<std::shared_ptr<Transport>(asio::io_context &, std::shared_ptr<spdlog::logger>)>;

struct ConnectionOptions {
    std::string server_host;
    std::uint16_t server_port = 22;
    std::string username;
    std::string key_file;
    std::string key_passphrase;
    std::string known_hosts_file;
    std::chrono::milliseconds connect_timeout{10000}; ///< resolve + TCP connect (+ the proxy's handshake)
    /// From start() to ready (handshake and authentication included); 0:
    /// none here (the owner keeps its own deadline, as a tunnel run does).
    std::chrono::milliseconds setup_timeout{0};
    std::chrono::seconds keep_alive{30};              ///< health interval; 0: no checks
    ProxyOptions proxy;     ///< the TCP connect goes to it, then CONNECT / SOCKS5 to the bastion
    TransportFactory via;   ///< set: the bastion is reached through this instead (proxy unused here)
    std::string route;      ///< " through the proxy ...", " through the jump host ...": for messages
    std::string role = "bastion"; ///< what the host is to the user ("jump host"), for messages
    /// Keep an idle "session" channel open (SshSession::set_anchor): for
    /// connections that open channels themselves and may have no listener.
    /// Probes then are requests on it, which no pending open can hold up.
    bool anchor = false;
    /// Non-zero: SO_MARK of the socket to the bastion, set before it
    /// connects (the VPN capture returns packets with this mark first, so it
    /// never captures its own connection, a reconnect's included).
    std::uint32_t socket_mark = 0;
    /// Once authenticated, run `true` on the bastion (through the user's
    /// shell, or the key's forced command); ready once sshd has answered the
    /// exec request. sshd turns on TCP_NODELAY for a connection only when
    /// one of its sessions runs a command. Without it, sshd holds a small
    /// packet (a channel-open reply, an echo) until the one before it is
    /// acknowledged: a round trip more for connections opened back to back.
    bool server_nodelay = false;
};

class SshConnection : public std::enable_shared_from_this<SshConnection> {
public:
    struct Handlers {
        std::function<void()> ready;                                    ///< authenticated: forwards may start
        std::function<void(std::error_code, const std::string &)> failed; ///< once; not after close()
        std::function<void(std::chrono::microseconds rtt)> probed;      ///< a health probe answered
    };

    SshConnection(asio::io_context &io, ConnectionOptions options, std::shared_ptr<spdlog::logger> log,
                  Handlers handlers);
    ~SshConnection();
    SshConnection(const SshConnection &) = delete;
    SshConnection &operator=(const SshConnection &) = delete;

    /// Checks the key file and known_hosts, then connects; `ready` or
    /// `failed` report the outcome.
    void start();
    /// The driver; valid from `ready` until close().
    SshSession &session() { return *session_; }
    /// "host:port" of the bastion, for messages.
    std::string where() const;
    /// How the bastion is reached, for messages: "", " through the proxy
    /// http://p:3128", " through the jump host user@j:22".
    const std::string &route() const { return options_.route; }
    /// Why set-up is not done after `limit`, naming the step that hangs: the
    /// proxy's handshake (Errc::proxy_failed), else the SSH set-up
    /// (Errc::bastion_timeout).
    std::pair<std::error_code, std::string> overdue(std::chrono::milliseconds limit) const;

    /// From now on every keep_alive: an SSH keepalive and an end-to-end probe
    /// (plus TCP keepalive and TCP_USER_TIMEOUT on the socket). A probe not
    /// answered in time fails the connection.
    void start_health_checks();
    void stop_health_checks();
    /// Ask the bastion something it must answer: a request on the anchor
    /// channel, or without one, a "session" channel opened and closed.
    /// `done(rc)`: 0, or a refusal, mean the bastion answered. sshd handles
    /// requests in order, so an answer also confirms every request sent
    /// before it. `started` runs when the probe is actually sent (an open
    /// lane may be busy before).
    void probe(std::function<void(int rc)> done, std::function<void()> started = nullptr);
    /// Send SSH_MSG_DISCONNECT, then free everything; `done` runs once after.
    void disconnect(std::function<void()> done);
    /// Free everything now (no handler is called afterwards). Idempotent.
    void close();

private:
    void connect_direct();
    void connect_via();
    void on_transport(SshSession::Socket socket);
    void on_handshake(int rc);
    void on_authenticated(int rc);
    void open_anchor();
    void become_ready();
    void ask_server_nodelay();
    void schedule_health_check();
    void run_health_check();
    void fail(std::error_code ec, const std::string &message);

    asio::io_context &io_;
    ConnectionOptions options_;
    std::shared_ptr<spdlog::logger> log_;
    Handlers handlers_;
    asio::ip::tcp::socket socket_; ///< while connecting; the session owns it after
    std::shared_ptr<Transport> transport_;
    std::shared_ptr<SshSession> session_;
    std::unique_ptr<UserAuth> auth_; ///< during authentication
    asio::steady_timer setup_timer_;
    asio::steady_timer health_timer_;
    asio::steady_timer probe_deadline_;
    KeyFileInfo key_;
    KnownHosts known_hosts_;
    bool ended_ = false;
    bool asked_server_nodelay_ = false;
    bool checking_health_ = false;
    bool proxying_ = false; ///< in the proxy's handshake
};

} // namespace pytun::detail
