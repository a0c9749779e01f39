// SPDX-License-Identifier: MIT
// The pytun command's sub-commands (one file each) and what they share.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <pytun/config.h>

namespace pytun::cli {

/// Exit statuses (compat.md).
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failed = 1;
inline constexpr int k_exit_not_configured = 2;
inline constexpr int k_exit_usage = 2;      ///< bad command line (as argparse, and CLI11's parse errors)
inline constexpr int k_exit_connections_failed = 3;
inline constexpr int k_exit_tunnels_failed = 4;

/// Load the configuration; print every diagnostic to stderr (warnings too).
/// Empty when there was an error.
std::optional<Config> load_or_report(const std::string &path);

/// `pytun forward` (docs/cli.md): its command line.
struct ForwardArgs {
    std::string remote;       ///< -r [USER@]HOST[:PORT]
    std::string key_file;     ///< -i
    std::string known_hosts;  ///< --known-hosts
    std::vector<std::string> local, dynamic, reverse; ///< -L, -D, -R
    std::vector<std::string> allow; ///< --allow: destinations SOCKS forwards may reach
    std::string socks_user;
    std::string socks_password_file;
    unsigned keep_alive = 30;
    unsigned max_sessions = 8;
    unsigned grace = 5;
    bool verbose = false;
};

int run_connector(const std::string &config_path);
int run_forward(const ForwardArgs &args);
int check_config(const std::string &config_path);
int test_smtp(const Config &config, std::ostream &out);
int test_http(const Config &config, std::ostream &out);
int test_connections(const Config &config, std::ostream &out);
int test_tunnels(const Config &config, std::ostream &out);
int test_all(const Config &config, std::ostream &out);
int make_key(const std::string &tunnel_file);
int print_version(std::ostream &out);

} // namespace pytun::cli
