// SPDX-License-Identifier: MIT
// SshConnection: one SSH connection to a bastion, whatever runs over it:
// resolve and connect with a deadline, verify the host key, authenticate,
// keep it alive (keepalive + an end-to-end probe), say goodbye, and report a
// failure once. It knows no forward: forwards use its session (the driver)
// once it is ready. All calls on the loop thread.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include <asio.hpp>
#include <spdlog/logger.h>

#include "ssh/key_file.h"
#include "ssh/known_hosts.h"

namespace pytun::detail {

class SshSession;
class UserAuth;

struct ConnectionOptions {
    std::string server_host;
    std::uint16_t server_port = 22;
    std::string username;
    std::string key_file;
    std::string key_passphrase;
    std::string known_hosts_file;
    std::chrono::milliseconds connect_timeout{10000}; ///< resolve + TCP connect
    std::chrono::seconds keep_alive{30};              ///< health interval; 0: no checks
    /// Keep an idle "session" channel open (SshSession::set_anchor): for
    /// connections that open channels themselves and may have no listener.
    /// Probes then are requests on it, which no pending open can hold up.
    bool anchor = false;
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
    void on_tcp_connected(asio::ip::tcp::socket socket);
    void on_handshake(int rc);
    void on_authenticated(int rc);
    void open_anchor();
    void schedule_health_check();
    void run_health_check();
    void fail(std::error_code ec, const std::string &message);

    asio::io_context &io_;
    ConnectionOptions options_;
    std::shared_ptr<spdlog::logger> log_;
    Handlers handlers_;
    asio::ip::tcp::socket socket_; ///< while connecting; the session owns it after
    std::shared_ptr<SshSession> session_;
    std::unique_ptr<UserAuth> auth_; ///< during authentication
    asio::steady_timer health_timer_;
    asio::steady_timer probe_deadline_;
    KeyFileInfo key_;
    KnownHosts known_hosts_;
    bool ended_ = false;
    bool checking_health_ = false;
};

} // namespace pytun::detail
