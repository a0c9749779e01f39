// SPDX-License-Identifier: MIT
// The /configs and /logs zip archives, built in memory with libzip.
#pragma once

#include "internal.h"

#include <cstddef>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace pytun::detail {

/// Name of the listing of what /configs left out or redacted.
inline constexpr const char *k_redaction_list_name = "REDACTED.txt";

/// A zip of `entries` (name inside the archive, bytes). Throws
/// std::runtime_error when libzip fails (the handler turns that into the
/// original's error reply).
std::string make_zip(const std::vector<std::pair<std::string, std::string>> &entries);

/// The main config file (at the archive's root) and the regular files
/// directly inside `config_dir` (under its base name), secret values
/// replaced; private keys, binary files, symbolic links and files beyond
/// `max_bytes` in total left out. REDACTED.txt says what was done to which file.
std::string make_config_archive(const std::string &main_config_file, const std::string &config_dir,
                                std::size_t max_bytes);

/// The `*.log` files directly inside `log_dir` (newest first until
/// `max_bytes`), plus a note of those left out when the limit was reached.
std::string make_log_archive(const std::string &log_dir, std::size_t max_bytes);

} // namespace pytun::detail
