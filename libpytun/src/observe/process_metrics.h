// SPDX-License-Identifier: MIT
// The standard process_* metrics (as Prometheus client libraries export them),
// read from /proc for this process.
#pragma once

#include "internal.h"

#include <cstdint>

namespace pytun::detail {

struct ProcessMetrics {
    bool ok = false;                    ///< /proc could be read (Linux)
    double cpu_seconds = 0;             ///< user + system CPU time
    std::uint64_t resident_bytes = 0;
    std::uint64_t virtual_bytes = 0;
    std::uint64_t open_fds = 0;
    std::uint64_t max_fds = 0;          ///< the soft RLIMIT_NOFILE
    double start_time_seconds = 0;      ///< Unix time the process started
};

/// Reads /proc/self/stat, /proc/stat (boot time) and /proc/self/fd; costs
/// a few tens of microseconds plus one directory entry per open descriptor.
ProcessMetrics read_process_metrics();

} // namespace pytun::detail
