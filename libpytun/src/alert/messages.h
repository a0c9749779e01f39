// SPDX-License-Identifier: MIT
// The wording of alerts (kept as the original connector's where compat.md
// gives it) and the time formats they use.
#pragma once

#include "internal.h"

#include <chrono>
#include <string>

#include <pytun/alerter.h>

namespace pytun::detail {

using SysTime = std::chrono::system_clock::time_point;

/// "2024-05-07T10:00:00Z"
std::string iso8601_utc(SysTime t);
/// "Tue, 07 May 2024 10:00:00 +0000" (RFC 5322), independent of the locale.
std::string rfc5322_date(SysTime t);
/// "1h 02m 03s", "4m 05s", "12s"
std::string duration_words(std::chrono::seconds d);

/// Fill subject, message, body and state of `alert` from its other fields.
void word_alert(Alert &alert);

} // namespace pytun::detail
