// SPDX-License-Identifier: MIT
// LogCapture: every libpytun log line while it lives, for assertions such as
// "no password was logged" or "libssh2 never saw a call out of turn".
#pragma once

#include <algorithm>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <pytun/log.h>

namespace pytun::test {

class LogCapture {
public:
    explicit LogCapture(pytun::LogLevel level = pytun::LogLevel::debug)
    {
        pytun::set_log_level(level);
        pytun::set_log_handler([this](pytun::LogLevel, std::string_view logger, std::string_view message) {
            std::lock_guard lock(mutex_);
            lines_.push_back(std::string(logger) + ": " + std::string(message));
        });
    }
    ~LogCapture() { pytun::set_log_handler(nullptr); }
    LogCapture(const LogCapture &) = delete;
    LogCapture &operator=(const LogCapture &) = delete;

    std::vector<std::string> snapshot() const
    {
        std::lock_guard lock(mutex_);
        return lines_;
    }
    std::size_t count_containing(const std::string &needle) const
    {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string &line) {
            return line.find(needle) != std::string::npos;
        }));
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> lines_;
};

} // namespace pytun::test
