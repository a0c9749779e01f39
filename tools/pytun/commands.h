// SPDX-License-Identifier: MIT
// The pytun command's sub-commands (one file each) and what they share.
#pragma once

#include <optional>
#include <ostream>
#include <string>

#include <pytun/config.h>

namespace pytun::cli {

/// Exit statuses (compat.md).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failed = 1;
inline constexpr int k_exit_not_configured = 2;
inline constexpr int k_exit_connections_failed = 3;
inline constexpr int k_exit_tunnels_failed = 4;

/// Load the configuration; print every diagnostic to stderr (warnings too).
/// Empty when there was an error.
std::optional<Config> load_or_report(const std::string &path, const LoadOptions &options = {});

int run_connector(const std::string &config_path);
int check_config(const std::string &config_path);
int test_smtp(const Config &config, std::ostream &out);
int test_http(const Config &config, std::ostream &out);
int test_connections(const Config &config, std::ostream &out);
int test_tunnels(const Config &config, std::ostream &out);
int test_all(const Config &config, std::ostream &out);
int make_key(const std::string &tunnel_file);
int print_version(std::ostream &out);

} // namespace pytun::cli
