// SPDX-License-Identifier: MIT
// Checks of the files a configuration names, so that what would fail at run
// time is reported at load time (`pytun --check`) with the fix: key and
// known_hosts contents, permissions that keep the service's access, `~`,
// the log directory and the alert library.
#pragma once

#include "internal.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "config/raw.h"

namespace pytun::config {

/// `~/x` for the user pytun runs as ($HOME, else the password database) and
/// `~name/x` for that user, as the original connector's Python expanduser
/// does. Other paths, and `~name` of an unknown user, come back unchanged.
std::string expand_home(std::string_view path);

/// Warns when a file with secrets can be read by others or by a group that
/// is not the service's (its own groups, or `pytun`, docs/service.md), or
/// written by its group; the advice keeps the service's own access.
void check_private_mode(const std::filesystem::path &path, const std::string &file, int line,
                        const std::string &key, const std::string &why, Diagnostics &diag);

/// keyfile: a private key pytun can use without a passphrase (not the .pub
/// file, not encrypted: there is no passphrase setting).
void check_key_content(const std::filesystem::path &path, const std::string &file, int line,
                       const std::string &key, Diagnostics &diag);

/// server_key: a known_hosts file (not a .pub or private key file) with an
/// entry for host:port.
void check_known_hosts_content(const std::filesystem::path &path, const std::string &host, std::uint16_t port,
                               const std::string &file, int line, const std::string &key, Diagnostics &diag);

/// What only the running connector meets, for `pytun --check`: log_path
/// writable (or creatable) by this user, libcurl loadable when alerts are on.
void check_runtime_needs(const RawSection &main, const std::string &log_path, bool email, bool webhook,
                         Diagnostics &diag);

} // namespace pytun::config
