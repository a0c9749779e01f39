// SPDX-License-Identifier: MIT
// What /configs may ship: secret values in INI and TOML files replaced by a
// marker, private keys (found by content, whatever the file is called) and
// binary files left out.
#pragma once

#include "internal.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "util/text.h"

namespace pytun::detail {

/// Replaces every secret value.
inline constexpr std::string_view k_redacted_marker = "***REDACTED***";

/// Names the private-key format found in `content` ("OpenSSH private key",
/// "PEM private key (RSA)", "PKCS#8 private key", "PuTTY private key", ...),
/// or returns empty when there is none.
std::string private_key_kind(std::string_view content);

/// True when `content` does not look like text (NUL bytes or invalid UTF-8):
/// such a file could be a DER key and is never shipped.
bool looks_binary(std::string_view content);

/// Lines longer than this are not examined: they are replaced whole by the
/// marker (a config line is a few hundred bytes; a 40 kB one is junk or an
/// attack, and nothing of it is worth the risk of shipping a secret).
inline constexpr std::size_t k_redact_max_line = 16 * 1024;

struct Redaction {
    int line = 0;              ///< 1-based
    std::string key;           ///< whose value was replaced; empty: the whole line was
    std::size_t line_bytes = 0; ///< for a whole line: its length
};

/// `content` with the value of every secret `key = value` / `key: value`
/// (INI) or `key = "value"` (TOML, also inside inline tables and multi-line
/// strings) replaced by the marker, and the rest of a line whose first word
/// is a secret key but that has no `=` (`smtp_password hunter2`, a typo);
/// `redactions` lists what was replaced. One pass over the text, no
/// backtracking: the time is linear in the size of `content`.
std::string redact_config(std::string_view content, std::vector<Redaction> &redactions);

} // namespace pytun::detail
