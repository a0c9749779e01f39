// SPDX-License-Identifier: MIT
// What /configs may ship: secret values in INI and TOML files replaced by a
// marker, private keys (found by content, whatever the file is called) and
// binary files left out.
#pragma once

#include "internal.h"

#include <string>
#include <string_view>
#include <vector>

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

/// True for key names whose values are secrets (smtp_password,
/// http_password, signature, inspection_token, anything with password,
/// passphrase, token, secret, api_key, credential in it).
bool is_secret_key(std::string_view key);

struct Redaction {
    int line = 0;         ///< 1-based
    std::string key;
};

/// `content` with the value of every secret `key = value` / `key: value`
/// (INI) or `key = "value"` (TOML, also inside inline tables and multi-line
/// strings) replaced by the marker; `redactions` lists what was replaced.
std::string redact_config(std::string_view content, std::vector<Redaction> &redactions);

} // namespace pytun::detail
