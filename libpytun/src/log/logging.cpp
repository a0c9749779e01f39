// SPDX-License-Identifier: MIT
// Connector logging: daily-rotated files per logger, console output, the
// journal, and the routing of libpytun's lines to them.
#include <pytun/logging.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <shared_mutex>

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "log.h"
#include "log/daily_file_sink.h"
#include "log/formats.h"

namespace pytun {
namespace {

using detail::to_spdlog;

namespace fs = std::filesystem;

constexpr const char *k_file_pattern = "%Y-%m-%d %H:%M:%S.%e UTC [%P] [%n] [%l] %v";
constexpr const char *k_console_pattern = "%Y-%m-%d %H:%M:%S.%e UTC [%P] [%n] [%^%l%$] %v";
constexpr const char *k_journal_pattern = "[%n] %v"; // the journal records time, pid and priority

} // namespace

LoggingOptions logging_options(const ConnectorConfig &connector)
{
    LoggingOptions o;
    o.directory = connector.log_path;
    o.level = connector.log_level;
    o.to_console = connector.log_to_console;
    o.max_bytes_per_day = static_cast<std::uint64_t>(connector.log_max_mb_per_day) << 20;
    return o;
}

LogFileTarget log_target(const TunnelConfig &tunnel)
{
    LogFileTarget t;
    t.logger = to_tunnel_options(tunnel).name;
    t.file_base = tunnel.source_name;
    t.level = tunnel.log_level;
    t.to_console = tunnel.log_to_console;
    return t;
}

struct Logging::Impl {
    LoggingOptions options;
    std::shared_ptr<spdlog::sinks::sink> console;   // stderr: a terminal, a file, or the journal
    bool journal = false;                           // stderr is the journal: every logger writes there
    std::shared_ptr<spdlog::sinks::sink> main_file;
    std::shared_ptr<spdlog::logger> main;

    mutable std::shared_mutex mutex;
    std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> targets;  // by logger name
    std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> others;   // lazily, main sinks
    std::map<std::string, std::shared_ptr<spdlog::sinks::sink>> files;            // by file base
    bool installed = false;

    std::shared_ptr<spdlog::sinks::sink> file_sink(const std::string &base, std::string &message)
    {
        if (options.directory.empty())
            return nullptr;
        if (auto it = files.find(base); it != files.end())
            return it->second;
        const std::string path = (fs::path(options.directory) / (base + ".log")).string();
        try {
            auto sink = std::make_shared<detail::DailyUtcFileSink>(path, options.max_files, options.max_bytes_per_day);
            sink->set_formatter(formatter(k_file_pattern));
            files.emplace(base, sink);
            return sink;
        } catch (const std::exception &e) {
            message = "cannot open the log file " + path + ": " + e.what();
            return nullptr;
        }
    }

    std::unique_ptr<spdlog::formatter> formatter(const char *text_pattern) const
    {
        if (options.format == LogFormat::json)
            return detail::make_json_formatter();
        return std::make_unique<spdlog::pattern_formatter>(text_pattern, spdlog::pattern_time_type::utc);
    }

    std::shared_ptr<spdlog::logger> make(const std::string &name, std::shared_ptr<spdlog::sinks::sink> file,
                                         bool to_console, LogLevel level)
    {
        std::vector<spdlog::sink_ptr> sinks;
        if (file)
            sinks.push_back(std::move(file));
        if (to_console || journal)
            sinks.push_back(console);
        auto logger = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
        logger->set_level(to_spdlog(level));
        logger->flush_on(spdlog::level::trace); // operators tail these files
        return logger;
    }

    /// `tunnel`: set when the logger is a tunnel's (it has a target of its own).
    std::shared_ptr<spdlog::logger> find(std::string_view logger, bool &tunnel)
    {
        {
            std::shared_lock lock(mutex);
            if (auto it = targets.find(logger); it != targets.end()) {
                tunnel = true;
                return it->second;
            }
            if (logger == options.main_logger)
                return main;
            if (auto it = others.find(logger); it != others.end())
                return it->second;
        }
        std::unique_lock lock(mutex);
        auto &slot = others[std::string(logger)];
        if (!slot)
            slot = make(std::string(logger), main_file, options.to_console, options.level);
        return slot;
    }

    // Every line, libpytun's and the connector's, goes through here.
    void write(std::string_view logger, LogLevel level, std::string_view message, const LogFields &fields)
    {
        bool tunnel = false;
        auto target = logger.empty() ? main : find(logger, tunnel);
        if (options.format == LogFormat::text) {
            if (fields.error.empty())
                target->log(to_spdlog(level), "{}", message);
            else
                target->log(to_spdlog(level), "{}: {}", message, fields.error);
            return;
        }
        detail::ScopedLogFields scope(fields, tunnel);
        target->log(to_spdlog(level), "{}", message);
    }

    // libpytun filters before the handler: let through what any logger wants.
    void update_library_level()
    {
        LogLevel lowest = options.level;
        for (const auto &[name, logger] : targets)
            lowest = std::min(lowest, static_cast<LogLevel>(std::clamp(static_cast<int>(logger->level()), 0, 6)));
        set_log_level(lowest);
    }
};

Logging::Logging(LoggingOptions options) : impl_(std::make_unique<Impl>())
{
    impl_->options = std::move(options);
}

Logging::~Logging()
{
    if (impl_->installed)
        set_log_handler({});
    if (impl_->main)
        impl_->main->flush();
}

std::error_code Logging::start(std::string &message)
{
    Impl &d = *impl_;
    d.journal = d.options.journal == LoggingOptions::Journal::automatic && detail::stderr_is_journal();
    if (d.journal) {
        auto journal = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        journal->set_formatter(detail::make_journal_formatter(d.formatter(k_journal_pattern)));
        // The service's level, not each tunnel file's (DEBUG by default, as in
        // the original): per-connection lines would hit journald's rate limit
        // and make it drop the warnings that matter.
        journal->set_level(to_spdlog(d.options.level));
        d.console = journal;
    } else {
        auto console = std::make_shared<spdlog::sinks::ansicolor_stderr_sink_mt>(
            d.options.color == LoggingOptions::Color::always  ? spdlog::color_mode::always
            : d.options.color == LoggingOptions::Color::never ? spdlog::color_mode::never
                                                              : spdlog::color_mode::automatic);
        console->set_formatter(d.formatter(k_console_pattern));
        d.console = console;
    }
    if (!d.options.directory.empty()) {
        std::error_code ec;
        fs::create_directories(d.options.directory, ec);
        if (ec) {
            message = "cannot create the log directory " + d.options.directory + ": " + ec.message();
            return ec;
        }
        d.main_file = d.file_sink(d.options.main_file_base, message);
        if (!d.main_file)
            return std::make_error_code(std::errc::io_error);
    }
    d.main = d.make(d.options.main_logger, d.main_file, d.options.to_console || d.options.directory.empty(),
                    d.options.level);
    set_log_handler([&d](LogLevel level, std::string_view logger, std::string_view text) {
        d.write(logger, level, text, {});
    });
    d.installed = true;
    d.update_library_level();
    return {};
}

std::error_code Logging::set_targets(const std::vector<LogFileTarget> &targets, std::string &message)
{
    Impl &d = *impl_;
    std::unique_lock lock(d.mutex);
    std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> next;
    std::error_code result;
    for (const auto &t : targets) {
        std::string why;
        auto file = d.file_sink(t.file_base, why);
        if (!file && !d.options.directory.empty()) {
            message += (message.empty() ? "" : "; ") + why;
            result = std::make_error_code(std::errc::io_error);
        }
        next[t.logger] = d.make(t.logger, file, t.to_console, t.level);
    }
    d.targets = std::move(next);
    d.update_library_level();
    return result;
}

void Logging::log(LogLevel level, std::string_view message)
{
    log({}, level, message, {});
}

void Logging::log(std::string_view logger, LogLevel level, std::string_view message)
{
    log(logger, level, message, {});
}

void Logging::log(std::string_view logger, LogLevel level, std::string_view message, const LogFields &fields)
{
    if (impl_->main)
        impl_->write(logger, level, message, fields);
}

bool Logging::to_journal() const
{
    return impl_->journal;
}

void Logging::flush()
{
    std::shared_lock lock(impl_->mutex);
    if (impl_->main)
        impl_->main->flush();
    for (const auto &[name, logger] : impl_->targets)
        logger->flush();
}

} // namespace pytun
