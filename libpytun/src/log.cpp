// SPDX-License-Identifier: MIT
// Routing of libpytun's log lines to the application's handler or stderr.
#include "log.h"

#include <pytun/log.h>

#include <cstdio>
#include <mutex>
#include <vector>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

namespace pytun {
namespace detail {
namespace {

// One sink shared by every logger: it holds the handler, so replacing the
// handler affects loggers that already exist.
class HandlerSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    void set_handler(LogHandler handler)
    {
        std::lock_guard lock(mutex_);
        handler_ = std::move(handler);
    }

protected:
    void sink_it_(const spdlog::details::log_msg &msg) override
    {
        if (handler_) {
            handler_(from_spdlog(msg.level), std::string_view(msg.logger_name.data(), msg.logger_name.size()),
                     std::string_view(msg.payload.data(), msg.payload.size()));
            return;
        }
        spdlog::memory_buf_t line;
        formatter_->format(msg, line);
        std::fwrite(line.data(), 1, line.size(), stderr);
    }
    void flush_() override { std::fflush(stderr); }

private:
    LogHandler handler_;
};

struct Registry {
    std::mutex mutex;
    std::shared_ptr<HandlerSink> sink = std::make_shared<HandlerSink>();
    spdlog::level::level_enum level = spdlog::level::info;
    std::vector<std::weak_ptr<spdlog::logger>> loggers;
};

Registry &registry()
{
    static Registry *r = [] {
        auto *reg = new Registry; // never destroyed: loggers may outlive static destruction order
        reg->sink->set_formatter(std::make_unique<spdlog::pattern_formatter>(
            "%Y-%m-%d %H:%M:%S.%e %n %l: %v", spdlog::pattern_time_type::utc));
        return reg;
    }();
    return *r;
}

} // namespace

LogLevel from_spdlog(spdlog::level::level_enum level)
{
    switch (level) {
    case spdlog::level::trace: return LogLevel::trace;
    case spdlog::level::debug: return LogLevel::debug;
    case spdlog::level::info: return LogLevel::info;
    case spdlog::level::warn: return LogLevel::warning;
    case spdlog::level::err: return LogLevel::error;
    case spdlog::level::critical: return LogLevel::critical;
    default: return LogLevel::off;
    }
}

spdlog::level::level_enum to_spdlog(LogLevel level)
{
    switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warning: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::critical: return spdlog::level::critical;
    case LogLevel::off: return spdlog::level::off;
    }
    return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger(const std::string &name)
{
    Registry &reg = registry();
    std::lock_guard lock(reg.mutex);
    auto logger = std::make_shared<spdlog::logger>(name, reg.sink);
    logger->set_level(reg.level);
    std::erase_if(reg.loggers, [](const auto &weak) { return weak.expired(); });
    reg.loggers.push_back(logger);
    return logger;
}

} // namespace detail

void set_log_handler(LogHandler handler)
{
    detail::registry().sink->set_handler(std::move(handler));
}

void set_log_level(LogLevel level)
{
    detail::Registry &reg = detail::registry();
    std::lock_guard lock(reg.mutex);
    reg.level = detail::to_spdlog(level);
    for (auto &weak : reg.loggers)
        if (auto logger = weak.lock())
            logger->set_level(reg.level);
}

} // namespace pytun
