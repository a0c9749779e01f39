// SPDX-License-Identifier: MIT
// Where libpytun's log lines go. By default: stderr, level info.
#pragma once

#include <functional>
#include <string_view>

#include <pytun/export.h>

namespace pytun {

enum class LogLevel { trace, debug, info, warning, error, critical, off };

/// Receives every log line at or above the set level. Called on the thread
/// that logs (a tunnel's event-loop thread, or the caller's); must be
/// thread-safe and must not call back into libpytun. `logger` is the tunnel's
/// name, or "pytun" for library-wide lines.
using LogHandler = std::function<void(LogLevel level, std::string_view logger, std::string_view message)>;

/// Replace the default stderr output; an empty handler restores it.
PYTUN_EXPORT void set_log_handler(LogHandler handler);
/// Lines below `level` are not formatted at all.
PYTUN_EXPORT void set_log_level(LogLevel level);

} // namespace pytun
