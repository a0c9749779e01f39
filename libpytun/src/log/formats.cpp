// SPDX-License-Identifier: MIT
// JSON lines and the journal's stderr form for the connector's logs.
#include "log/formats.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>

namespace pytun::detail {
namespace {

thread_local LineFields t_line;

std::string rfc3339_utc(std::chrono::system_clock::time_point tp)
{
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count() % 1000;
    const std::time_t t = std::chrono::system_clock::to_time_t(tp);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms < 0 ? ms + 1000 : ms));
    return buf;
}

nlohmann::ordered_json text_or_null(std::string_view s)
{
    return s.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(std::string(s));
}

class JsonFormatter final : public spdlog::formatter {
public:
    JsonFormatter() : pid_(::getpid()) {}

    void format(const spdlog::details::log_msg &msg, spdlog::memory_buf_t &dest) override
    {
        const std::string_view logger(msg.logger_name.data(), msg.logger_name.size());
        const auto level = spdlog::level::to_string_view(msg.level);
        nlohmann::ordered_json j;
        j["time"] = rfc3339_utc(msg.time);
        j["level"] = std::string(level.data(), level.size());
        j["pid"] = pid_;
        j["logger"] = std::string(logger);
        const LogFields *fields = t_line.fields;
        j["tunnel"] = t_line.tunnel ? text_or_null(logger) : nullptr;
        j["event"] = fields ? text_or_null(fields->event) : nullptr;
        j["message"] = std::string(msg.payload.data(), msg.payload.size());
        j["error"] = fields ? text_or_null(fields->error) : nullptr;
        // Messages quote peers and files: invalid UTF-8 must not throw.
        const std::string line = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        dest.append(line.data(), line.data() + line.size());
        dest.push_back('\n');
    }

    std::unique_ptr<spdlog::formatter> clone() const override
    {
        return std::make_unique<JsonFormatter>();
    }

private:
    int pid_;
};

// Syslog priorities (sd-daemon(3)): debug 7, info 6, warning 4, error 3, critical 2.
char priority(spdlog::level::level_enum level)
{
    switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return '7';
    case spdlog::level::info: return '6';
    case spdlog::level::warn: return '4';
    case spdlog::level::err: return '3';
    default: return '2';
    }
}

class JournalFormatter final : public spdlog::formatter {
public:
    explicit JournalFormatter(std::unique_ptr<spdlog::formatter> inner) : inner_(std::move(inner)) {}

    void format(const spdlog::details::log_msg &msg, spdlog::memory_buf_t &dest) override
    {
        dest.push_back('<');
        dest.push_back(priority(msg.level));
        dest.push_back('>');
        inner_->format(msg, dest);
    }

    std::unique_ptr<spdlog::formatter> clone() const override
    {
        return std::make_unique<JournalFormatter>(inner_->clone());
    }

private:
    std::unique_ptr<spdlog::formatter> inner_;
};

} // namespace

ScopedLogFields::ScopedLogFields(const LogFields &fields, bool tunnel) : previous_(t_line)
{
    t_line = {&fields, tunnel};
}

ScopedLogFields::~ScopedLogFields()
{
    t_line = previous_;
}

std::unique_ptr<spdlog::formatter> make_json_formatter()
{
    return std::make_unique<JsonFormatter>();
}

std::unique_ptr<spdlog::formatter> make_journal_formatter(std::unique_ptr<spdlog::formatter> inner)
{
    return std::make_unique<JournalFormatter>(std::move(inner));
}

bool stderr_is_journal()
{
    const char *stream = std::getenv("JOURNAL_STREAM");
    if (!stream)
        return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2)
        return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0)
        return false;
    return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

} // namespace pytun::detail
