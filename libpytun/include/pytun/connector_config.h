// SPDX-License-Identifier: MIT
// The `[pytun]` section of a connector's configuration as plain data: what
// the loader (config.h, libpytun-connector) fills in and what the Alerter
// (libpytun) reads its channels and rate limits from.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <pytun/log.h>

namespace pytun {

/// How alert e-mails reach the SMTP server (`smtp_security`).
enum class SmtpSecurity {
    none,     ///< "none": plain SMTP
    starttls, ///< "tls": SMTP, then STARTTLS
    ssl,      ///< "ssl": implicit TLS from the first byte (SMTPS)
};

/// The `[pytun]` section. Field names are the key names. Empty strings mean
/// "not set". Paths are absolute once loaded (resolved against the main file's
/// directory).
struct ConnectorConfig {
    std::string tunnel_manager_id;          ///< required
    std::string tunnel_dirs;                ///< INI default: "configs"; TOML default: none
    LogLevel log_level = LogLevel::info;
    bool log_to_console = false;
    std::string log_path;                   ///< default "./logs"
    std::uint32_t log_max_mb_per_day = 100;  ///< per log file; 0: no limit
    std::uint16_t inspection_port = 9999;
    bool inspection_localhost_only = true;
    std::string inspection_token;           ///< required by the HTTP API to serve other hosts
    std::string smtp_hostname;              ///< set: e-mail alerts are on
    std::uint16_t smtp_port = 25;
    SmtpSecurity smtp_security = SmtpSecurity::none;
    std::string smtp_login;                 ///< set: SMTP AUTH is used
    std::string smtp_password;
    std::string smtp_from;                  ///< defaults to smtp_login
    std::vector<std::string> smtp_to;       ///< one or more addresses (INI: comma-separated)
    std::string smtp_ca_file;               ///< CA bundle for the SMTP server; empty: system store
    bool smtp_verify_tls = true;
    std::string http_url;                   ///< set: webhook alerts are on
    std::string http_user;
    std::string http_password;
    std::string signature;                  ///< device authorization blob; empty: authorized
    std::string mac_address_pub_key;        ///< PEM public key that checks `signature`
    std::chrono::milliseconds grace_period_ms{5000}; ///< drain time for connections on stop/reload
    std::chrono::milliseconds reachability_probe_ms{300}; ///< ManagerOptions::reachability_probe; 0: off
    std::chrono::seconds failback_after{60}; ///< for tunnels that do not set their own; 0: never
    /// At most one e-mail per tunnel and kind of alert in this window; what is
    /// held back is summarised ("flapping") when it ends. 0: no limit.
    std::chrono::seconds smtp_rate_limit{600};
    std::chrono::seconds http_rate_limit{60}; ///< the same for webhook alerts
    std::chrono::seconds alert_reminder_interval{600}; ///< "still down" reminders while a tunnel stays down
    /// Default of every tunnel's `standby` (TunnelConfig::standby): this
    /// connector is one of several for the same bastion ports.
    bool standby = false;
    /// Proxy URL for every tunnel that names none (http://, socks5://), or
    /// "none"; empty: not set (the pytun command then reads https_proxy /
    /// all_proxy). May hold a password: never print it (describe()).
    std::string proxy;

    friend bool operator==(const ConnectorConfig &, const ConnectorConfig &) = default;
};

} // namespace pytun
