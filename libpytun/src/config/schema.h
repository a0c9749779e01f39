// SPDX-License-Identifier: MIT
// Turns RawSections into ConnectorConfig/TunnelConfig: types, defaults,
// ranges, required keys, referenced files, and checks across tunnels.
#pragma once

#include "internal.h"

#include <filesystem>
#include <string>
#include <vector>

#include <pytun/config.h>

#include "config/raw.h"

namespace pytun::config {

enum class Format { ini, toml };

struct BuiltConnector {
    ConnectorConfig config;
    int tunnel_dirs_line = 0;     ///< where tunnel_dirs was set, else the section header
    bool tunnel_dirs_set = false;
    bool holds_secrets = false;   ///< passwords or the API token: the file must be private
    int proxy_password_line = 0;  ///< where `proxy` holds a password (the file must be private), else 0
};

struct BuiltTunnel {
    TunnelConfig config;
    std::string file;             ///< as shown in diagnostics
    int section_line = 0;
    int name_line = 0;
    int port_line = 0;
    std::vector<int> forward_lines; ///< where each of config.forwards was written
    std::string vpn_key;          ///< the VPN capture's key at its forward_lines entry (vpn_listen, vpn_subnets...)
    int secret_line = 0;          ///< where a password is first set (secret_key), else 0
    std::string secret_key = "socks_password"; ///< socks_password, or proxy when its URL holds one
    bool standby_set = false;     ///< the file sets standby; otherwise [pytun]'s applies
};

BuiltConnector build_connector(const RawSection &s, const std::filesystem::path &base_dir, Format format,
                               Diagnostics &diag);

/// `base_dir` resolves keyfile and server_key; `default_name` applies when
/// neither tunnel_name nor connector_name is set.
BuiltTunnel build_tunnel(const RawSection &s, const std::filesystem::path &base_dir, std::string default_name,
                         Diagnostics &diag);

/// Duplicate names, shared log files, a bastion port asked for twice (by the
/// classic `port` or a remote_forward), a local address and port listened on
/// twice (local_forward, dynamic_forward).
void check_tunnel_set(const std::vector<BuiltTunnel> &tunnels, Diagnostics &diag);

/// Syntax only: the original's DNS lookup made start-up fail without public DNS.
bool valid_email(std::string_view address);

/// Every key pytun knows, of the main section and of a tunnel section.
bool is_known_key(std::string_view key);

/// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);

} // namespace pytun::config
