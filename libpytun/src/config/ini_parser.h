// SPDX-License-Identifier: MIT
// Reader for pytun's INI files, keeping the line of every key for diagnostics.
#pragma once

#include "internal.h"

#include <string>
#include <string_view>
#include <vector>

#include "config/raw.h"

namespace pytun::config {

/// Splits `text` into sections. Syntax problems (a line that is not
/// `key = value`, a key before any section) go to `diag`; duplicate keys are
/// kept in order and reported later by the validator.
std::vector<RawSection> parse_ini(std::string_view text, const std::string &file, Diagnostics &diag);

/// The value part of a line as the original's users wrote it: inline comment
/// (` #`, ` ;`) removed, surrounding whitespace trimmed, one pair of matching
/// surrounding quotes removed.
std::string clean_ini_value(std::string_view raw);

} // namespace pytun::config
