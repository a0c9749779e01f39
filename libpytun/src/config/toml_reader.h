// SPDX-License-Identifier: MIT
// Reads connector.toml into format-neutral sections (toml++ does the parsing).
#pragma once

#include "internal.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/raw.h"

namespace pytun::config {

struct TomlSections {
    std::optional<RawSection> main;       ///< the [pytun] table
    std::vector<RawSection> tunnels;      ///< each [[tunnel]] table
};

/// Parse errors and misplaced tables go to `diag`.
TomlSections read_toml(std::string_view text, const std::string &file, Diagnostics &diag);

} // namespace pytun::config
