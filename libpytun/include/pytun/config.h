// SPDX-License-Identifier: MIT
// Configuration of a pytun connector: the main section, one entry per tunnel,
// and the loader that reads INI (compatible with the original) or TOML files
// and reports every problem at once as "file:line: key: message".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pytun/export.h>
#include <pytun/log.h>
#include <pytun/tunnel.h>

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
    /// At most one e-mail per tunnel and kind of alert in this window; what is
    /// held back is summarised ("flapping") when it ends. 0: no limit.
    std::chrono::seconds smtp_rate_limit{600};
    std::chrono::seconds http_rate_limit{60}; ///< the same for webhook alerts
    std::chrono::seconds alert_reminder_interval{600}; ///< "still down" reminders while a tunnel stays down

    friend bool operator==(const ConnectorConfig &, const ConnectorConfig &) = default;
};

/// One tunnel (`[tunnel]` section of a tunnel file, or a TOML `[[tunnel]]`):
/// one SSH connection, carrying the original connector's reverse tunnel
/// (`port` -> `remote_host`:`remote_port`) and/or the forwards of
/// `local_forward`, `dynamic_forward` and `remote_forward`.
struct TunnelConfig {
    std::string tunnel_name;                ///< default: the tunnel file's path
    std::string server_host;                ///< required
    std::uint16_t server_port = 22;
    std::uint16_t port = 4000;              ///< port the bastion listens on
    std::string bind_address;               ///< address the bastion binds; empty: its default
    std::string remote_host;                ///< required unless the tunnel declares forwards; empty: no reverse tunnel
    std::uint16_t remote_port = 22;
    /// local_forward, dynamic_forward and remote_forward, in the order
    /// written, with socks_allow, socks_user and socks_password applied to
    /// the SOCKS ones.
    std::vector<ForwardSpec> forwards;
    std::vector<std::string> socks_allow;   ///< destinations SOCKS clients may reach; empty: any (-D only)
    std::string socks_user;                 ///< set: dynamic_forward clients must authenticate (RFC 1929)
    std::string socks_password;
    unsigned max_sessions = 8;              ///< SSH connections for channel opens, the tunnel's own included
    std::chrono::seconds open_timeout{10};  ///< per channel pytun opens; 0: no limit
    std::string username;                   ///< required
    std::string keyfile;                    ///< required; absolute
    std::string server_key;                 ///< known_hosts file; absolute; empty: none
    std::chrono::seconds keep_alive_time{30};
    std::uint32_t max_connections = 512;    ///< forwarded connections open at once
    LogLevel log_level = LogLevel::debug;
    bool log_to_console = false;
    std::string source_file;                ///< absolute path of the file that defined it
    std::string source_name;                ///< base name for the tunnel's log file
};

/// A whole configuration: what the connector runs.
struct Config {
    ConnectorConfig connector;
    std::vector<TunnelConfig> tunnels;      ///< in file name order (INI) or file order (TOML)
    std::string main_file;                  ///< absolute path of the file actually read
};

/// One problem found while loading.
struct PYTUN_EXPORT Diagnostic {
    enum class Severity { warning, error };
    Severity severity = Severity::error;
    std::string file;
    int line = 0;                           ///< 1-based; 0 when no line applies
    std::string key;                        ///< empty when no key applies
    std::string message;                    ///< what is wrong and what to do

    /// "file:line: key: message"; warnings are prefixed "warning: ".
    std::string to_string() const;
};

/// Result of loading: `config` is set only when no diagnostic is an error.
struct PYTUN_EXPORT LoadResult {
    std::optional<Config> config;
    std::vector<Diagnostic> diagnostics;    ///< in the order found

    bool ok() const;
};

/// What loading checks besides the files and what they name.
struct LoadOptions {
    /// Also what only the running connector would meet: log_path writable by
    /// this user, libcurl loadable when alerts are configured. `pytun --check`
    /// sets it; start-up does not (libcurl is loaded when the first alert goes).
    bool check_runtime = false;
};

/// Load the main configuration and every tunnel it names. `.toml` selects
/// TOML, anything else INI; a missing INI path falls back to `pytun.ini` in
/// the same directory (the original's legacy name).
PYTUN_EXPORT LoadResult load_config(const std::string &path);
PYTUN_EXPORT LoadResult load_config(const std::string &path, const LoadOptions &options);
PYTUN_EXPORT LoadResult load_config_ini(const std::string &path);
PYTUN_EXPORT LoadResult load_config_toml(const std::string &path);
/// Load from memory ("ini" or "toml"); relative paths resolve against
/// `base_dir` and diagnostics name the file "<string>".
PYTUN_EXPORT LoadResult load_config_from_string(std::string_view text, std::string_view format,
                                                std::string base_dir);

/// The engine's options for a tunnel read from a file (name, paths, ports,
/// keep_alive_time, forwards; config_path is the file it came from).
PYTUN_EXPORT TunnelOptions to_tunnel_options(const TunnelConfig &tunnel);

} // namespace pytun
