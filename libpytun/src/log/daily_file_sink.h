// SPDX-License-Identifier: MIT
// DailyUtcFileSink: one log file (NAME.log), rotated at midnight UTC into
// NAME.log.YYYY-MM-DD. It holds no descriptor between lines (the file is
// opened, appended to and closed per line: 1,000 tunnels do not hold 1,000
// descriptors), never writes through a symbolic link, and stops writing for
// the rest of the day once the day's lines reach a size limit, saying so
// once in the file and, after midnight, how many lines were dropped.
#pragma once

#include "internal.h"

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include <spdlog/sinks/base_sink.h>

namespace pytun::detail {

class DailyUtcFileSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    /// `max_bytes_per_day` 0: no limit. Throws spdlog::spdlog_ex when the
    /// file cannot be created.
    DailyUtcFileSink(std::string path, std::size_t max_files, std::uint64_t max_bytes_per_day);

protected:
    void sink_it_(const spdlog::details::log_msg &msg) override;
    void flush_() override {}

private:
    bool append(const char *data, std::size_t size);
    void rotate(std::chrono::system_clock::time_point now, const spdlog::details::log_msg &msg);
    void prune();
    void note(const spdlog::details::log_msg &like, const std::string &text);

    std::string path_;
    std::size_t max_files_;
    std::uint64_t max_bytes_per_day_;
    std::chrono::system_clock::time_point rotate_at_;
    std::uint64_t written_today_ = 0;
    std::uint64_t dropped_ = 0;
    std::string dropped_day_;
};

} // namespace pytun::detail
