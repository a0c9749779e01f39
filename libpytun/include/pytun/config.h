// SPDX-License-Identifier: MIT
// Configuration of a pytun connector: the main section, one entry per tunnel,
// and the loader that reads INI (compatible with the original) or TOML files
// and reports every problem at once as "file:line: key: message"
// (libpytun-connector; the [pytun] section's type is in connector_config.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pytun/connector_config.h>
#include <pytun/export.h>
#include <pytun/log.h>
#include <pytun/tunnel.h>

namespace pytun {

/// One tunnel (`[tunnel]` section of a tunnel file, or a TOML `[[tunnel]]`):
/// one SSH connection, carrying the original connector's reverse tunnel
/// (`port` -> `remote_host`:`remote_port`) and/or the forwards of
/// `local_forward`, `dynamic_forward` and `remote_forward`.
struct TunnelConfig {
    std::string tunnel_name;                ///< default: the tunnel file's path
    std::string server_host;                ///< required; the first entry of a failover list
    std::uint16_t server_port = 22;
    std::vector<Bastion> failover;          ///< server_host's later entries, in order
    /// Seconds the first bastion must answer before a tunnel served by a later
    /// one returns to it; 0: never. Unset in the file: [pytun]'s.
    std::optional<std::chrono::seconds> failback_after;
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
    unsigned min_sessions = 1;              ///< of those, kept open while idle (warm for bursts)
    std::chrono::seconds open_timeout{10};  ///< per channel pytun opens; 0: no limit
    std::string username;                   ///< required
    std::string keyfile;                    ///< required; absolute
    std::string server_key;                 ///< known_hosts file; absolute; empty: none
    std::chrono::seconds keep_alive_time{30};
    std::uint32_t max_connections = 512;    ///< forwarded connections open at once
    /// One of several connectors for the same bastion port: a refused listen
    /// is the state `standby`, not an error. Default: `[pytun]` standby.
    bool standby = false;
    LogLevel log_level = LogLevel::debug;
    bool log_to_console = false;
    /// Proxy URL, this tunnel's or else [pytun]'s; "none": no proxy, whatever
    /// the environment says; empty: not set. May hold a password.
    std::string proxy;
    std::string jump;                       ///< [USER@]HOST[:PORT]; empty: none
    std::string jump_keyfile;               ///< absolute; empty: keyfile
    std::string jump_server_key;            ///< absolute; empty: server_key
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
/// keep_alive_time, proxy and jump host; config_path is the file it came
/// from). An unset proxy stays Kind::none: the environment is the
/// program's to read (see the pytun command).
PYTUN_EXPORT TunnelOptions to_tunnel_options(const TunnelConfig &tunnel);

} // namespace pytun
