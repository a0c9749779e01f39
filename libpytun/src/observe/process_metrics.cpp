// SPDX-License-Identifier: MIT
// process_* metrics from /proc (proc(5)).
#include "observe/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pytun::detail {
namespace {

// Seconds since the epoch at which the system booted ("btime" in /proc/stat).
double boot_time()
{
    std::ifstream in("/proc/stat");
    std::string key;
    double value = 0;
    while (in >> key) {
        if (key == "btime") {
            in >> value;
            return value;
        }
        in.ignore(1 << 16, '\n');
    }
    return 0;
}

} // namespace

ProcessMetrics read_process_metrics()
{
    ProcessMetrics m;
    std::ifstream in("/proc/self/stat");
    std::string stat;
    if (!std::getline(in, stat))
        return m;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from the last ')'.
    const auto close = stat.rfind(')');
    if (close == std::string::npos)
        return m;
    std::istringstream fields(stat.substr(close + 2));
    std::string field;
    // Field 3 (state) is the first after ')'; utime is 14, stime 15,
    // starttime 22, vsize 23, rss 24.
    unsigned long long utime = 0, stime = 0, starttime = 0, vsize = 0, rss = 0;
    for (int n = 3; n <= 24 && fields >> field; ++n) {
        switch (n) {
        case 14: utime = std::strtoull(field.c_str(), nullptr, 10); break;
        case 15: stime = std::strtoull(field.c_str(), nullptr, 10); break;
        case 22: starttime = std::strtoull(field.c_str(), nullptr, 10); break;
        case 23: vsize = std::strtoull(field.c_str(), nullptr, 10); break;
        case 24: rss = std::strtoull(field.c_str(), nullptr, 10); break;
        default: break;
        }
    }
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    m.cpu_seconds = static_cast<double>(utime + stime) / ticks;
    m.start_time_seconds = boot_time() + static_cast<double>(starttime) / ticks;
    m.virtual_bytes = vsize;
    m.resident_bytes = rss * page;

    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        ++m.open_fds;
    if (m.open_fds > 0)
        --m.open_fds; // the directory iterator's own descriptor
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0)
        m.max_fds = limit.rlim_cur;
    m.ok = true;
    return m;
}

} // namespace pytun::detail
