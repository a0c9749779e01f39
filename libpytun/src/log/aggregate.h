// SPDX-License-Identifier: MIT
// Aggregation of repeated log lines: the first line of a kind is written at
// once, the others are counted and summarised in one line per interval, so
// a client that makes thousands of failing connections a second makes two
// lines per interval, not thousands.
#pragma once

#include "internal.h"

#include <chrono>
#include <string>

#include <spdlog/logger.h>

namespace pytun::detail {

inline constexpr std::chrono::seconds k_log_aggregate_interval{10};

/// Logs `message` on the logger named like `logger` at `level` if it is the
/// first with this `key` (per logger) within the interval; otherwise counts
/// it. At the end of an interval with more of them, one line says how many
/// and repeats the last message. Any thread; never blocks on I/O beyond the
/// log line itself.
void log_aggregated(spdlog::logger &logger, spdlog::level::level_enum level, const std::string &key,
                    const std::string &message);

} // namespace pytun::detail
