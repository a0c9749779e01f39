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

/// One tunnel (`[tunnel]` section of a tunnel file, or a TOML `[[tunnel]]`).
struct TunnelConfig {
    std::string tunnel_name;                ///< default: the tunnel file's path
    std::string server_host;                ///< required
    std::uint16_t server_port = 22;
    std::uint16_t port = 4000;              ///< port the bastion listens on
    std::string bind_address;               ///< address the bastion binds; empty: its default
    std::string remote_host;                ///< required
    std::uint16_t remote_port = 22;
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

/// Load the main configuration and every tunnel it names. `.toml` selects
/// TOML, anything else INI; a missing INI path falls back to `pytun.ini` in
/// the same directory (the original's legacy name).
PYTUN_EXPORT LoadResult load_config(const std::string &path);
PYTUN_EXPORT LoadResult load_config_ini(const std::string &path);
PYTUN_EXPORT LoadResult load_config_toml(const std::string &path);
/// Load from memory ("ini" or "toml"); relative paths resolve against
/// `base_dir` and diagnostics name the file "<string>".
PYTUN_EXPORT LoadResult load_config_from_string(std::string_view text, std::string_view format,
                                                std::string base_dir);

/// The engine's options for a tunnel read from a file (name, paths, ports,
/// keep_alive_time; config_path is the file it came from).
PYTUN_EXPORT TunnelOptions to_tunnel_options(const TunnelConfig &tunnel);

} // namespace pytun
