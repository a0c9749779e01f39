// SPDX-License-Identifier: MIT
// Text from files and clients made safe to print in a diagnostic or a log
// line: control characters escaped, length bounded; and the check that a
// config value holds none.
#pragma once

#include "internal.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace pytun::detail {

/// How much of a value or line a diagnostic quotes at most.
inline constexpr std::size_t k_quote_max = 80;

/// `text` with every control character (C0, DEL, U+0080..U+009F) written as
/// \xNN (\t, \r, \n as such), cut after `max_bytes` bytes of input with
/// "..." and the total length appended, so that a 256 MiB line prints as
/// 80 bytes and nothing in it can move a terminal's cursor or forge a
/// second log line.
PYTUN_CONNECTOR_USES std::string printable(std::string_view text, std::size_t max_bytes = k_quote_max);

/// Index of the first byte a config value must not contain (a control
/// character other than tab: NUL, ESC, CR, DEL, U+0080..U+009F), or npos.
PYTUN_CONNECTOR_USES std::size_t find_control_char(std::string_view text);

/// A key as written (`alert.SMTP_Password`, `"db_secret"`) reduced to the
/// name that says what it holds: lower case, the last part of a dotted TOML
/// key, quotes removed.
PYTUN_CONNECTOR_USES std::string key_name(std::string_view key);

/// True for key names whose values are secrets: smtp_password,
/// http_password, signature, inspection_token and every name containing
/// password, passwd, passphrase, token, secret, api_key, apikey,
/// credential, signature or private_key. A dotted TOML key is judged by its
/// last part, quotes removed.
PYTUN_CONNECTOR_USES bool is_secret_key(std::string_view key);

} // namespace pytun::detail
