// SPDX-License-Identifier: MIT
// StatusServer: the HTTP inspection API (compatible with the original
// connector's), metrics, health probes and a live dashboard. Every reply is
// built from the manager's status snapshot; no request waits on the network.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

#include <pytun/export.h>

namespace pytun {

class TunnelManager;
class Alerter;

struct StatusServerOptions {
    std::string bind_address = "127.0.0.1";   ///< inspection_localhost_only=false: "0.0.0.0"
    std::uint16_t port = 9999;                 ///< inspection_port; 0: the kernel chooses (see port())
    std::string token;                         ///< inspection_token: Bearer token for non-loopback access
    std::string tunnel_manager_id;
    std::string mac_address;                   ///< the authorized MAC; empty: null in /status
    std::chrono::system_clock::time_point created_at = std::chrono::system_clock::now();
    std::string main_config_file;              ///< connector.ini, redacted into /configs
    std::string config_dir;                    ///< tunnel_dirs, redacted into /configs
    std::string log_dir;                       ///< log_path, its *.log files make /logs

    // Limits that keep a hostile or slow client from holding the server.
    unsigned threads = 4;                                 ///< workers running routes (half of them may build archives)
    std::chrono::milliseconds request_timeout{5000};      ///< whole request, from accept to last byte
    std::size_t max_header_bytes = 16 * 1024;             ///< request line plus headers; more: 431
    std::size_t max_headers = 64;                         ///< header lines; more: 431
    std::size_t max_target_length = 2048;                 ///< request target; longer: 414
    std::size_t max_body_bytes = 64 * 1024;               ///< request body; more: 413
    /// Connections whose request is not complete yet (and, as many again,
    /// complete ones waiting for a worker); past it the connection that has
    /// waited longest is answered 503 and closed.
    std::size_t max_pending = 256;
    std::size_t max_archive_bytes = 64u << 20;            ///< input of one /configs or /logs zip
};

class PYTUN_EXPORT StatusServer {
public:
    /// `manager` (and `alerter`, if given) must outlive the server.
    StatusServer(StatusServerOptions options, const TunnelManager &manager, const Alerter *alerter = nullptr);
    ~StatusServer();
    StatusServer(const StatusServer &) = delete;
    StatusServer &operator=(const StatusServer &) = delete;

    /// Bind and serve on a thread of the server's own. A port in use is an
    /// error with a message that says which and what to do.
    std::error_code start(std::string &message);
    /// Stop listening and cut the requests in progress short; returns
    /// promptly whatever the clients do. Safe to call twice.
    void stop();
    /// The bound port (the chosen one when 0 was asked).
    std::uint16_t port() const;
    /// True between a successful start() and stop().
    bool running() const;
    /// True when the archive endpoints (and, with a token, every endpoint)
    /// need `Authorization: Bearer <token>`: the bind address is not loopback.
    bool requires_token() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
