// SPDX-License-Identifier: MIT
// The connector's log files: open per line, daily UTC rotation, a size limit per day.
#include "log/daily_file_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <vector>

#include <spdlog/common.h>

namespace pytun::detail {

namespace {

namespace fs = std::filesystem;
using SysClock = std::chrono::system_clock;

std::string utc_date(SysClock::time_point tp)
{
    std::time_t t = SysClock::to_time_t(tp);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[16];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    return buf;
}

SysClock::time_point next_utc_midnight(SysClock::time_point tp)
{
    return std::chrono::floor<std::chrono::days>(tp) + std::chrono::days(1);
}

} // namespace

DailyUtcFileSink::DailyUtcFileSink(std::string path, std::size_t max_files, std::uint64_t max_bytes_per_day)
    : path_(std::move(path)), max_files_(max_files), max_bytes_per_day_(max_bytes_per_day)
{
    const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0666);
    if (fd < 0)
        throw spdlog::spdlog_ex("cannot open " + path_ + ": " + std::strerror(errno));
    struct stat st{};
    auto start = SysClock::now();
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
        start = std::min(start, SysClock::from_time_t(st.st_mtime));
        // Lines already written today count against today's limit.
        if (utc_date(start) == utc_date(SysClock::now()))
            written_today_ = static_cast<std::uint64_t>(st.st_size);
    }
    ::close(fd);
    rotate_at_ = next_utc_midnight(start);
}

bool DailyUtcFileSink::append(const char *data, std::size_t size)
{
    const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0666);
    if (fd < 0)
        return false;
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::write(fd, data + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    written_today_ += done;
    return done == size;
}

void DailyUtcFileSink::note(const spdlog::details::log_msg &like, const std::string &text)
{
    spdlog::details::log_msg msg(like.time, like.source, like.logger_name, spdlog::level::warn, text);
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    append(line.data(), line.size());
}

void DailyUtcFileSink::sink_it_(const spdlog::details::log_msg &msg)
{
    if (msg.time >= rotate_at_)
        rotate(msg.time, msg);
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    if (max_bytes_per_day_ && written_today_ + line.size() > max_bytes_per_day_) {
        if (dropped_++ == 0)
            note(msg, "this log file reached its limit of " + std::to_string(max_bytes_per_day_ >> 20) +
                          " MiB for today (log_max_mb_per_day): further lines are dropped until midnight UTC");
        return;
    }
    append(line.data(), line.size());
}

void DailyUtcFileSink::rotate(SysClock::time_point now, const spdlog::details::log_msg &msg)
{
    const std::string day = utc_date(rotate_at_ - std::chrono::seconds(1));
    std::string dated = path_ + "." + day;
    std::error_code ec;
    if (!fs::exists(dated, ec))
        fs::rename(path_, dated, ec);
    rotate_at_ = next_utc_midnight(now);
    written_today_ = 0;
    if (dropped_) {
        note(msg, std::to_string(dropped_) + " lines were dropped on " + day +
                      " after this log file reached its daily limit (log_max_mb_per_day)");
        dropped_ = 0;
    }
    prune();
}

void DailyUtcFileSink::prune()
{
    const fs::path p(path_);
    const std::string prefix = p.filename().string() + ".";
    std::vector<fs::path> old;
    std::error_code ec;
    for (const auto &entry : fs::directory_iterator(p.parent_path(), ec)) {
        const std::string name = entry.path().filename().string();
        if (name.size() == prefix.size() + 10 && name.starts_with(prefix))
            old.push_back(entry.path());
    }
    if (old.size() <= max_files_)
        return;
    std::sort(old.begin(), old.end()); // dates sort as strings
    for (std::size_t i = 0; i + max_files_ < old.size(); ++i)
        fs::remove(old[i], ec);
}

} // namespace pytun::detail
