// SPDX-License-Identifier: MIT
// Logging: the connector's log files (main_connector.log plus one file per
// tunnel), rotated daily at midnight UTC, with optional console output; it
// takes over libpytun's log lines and routes each tunnel's to its file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <pytun/config.h>
#include <pytun/export.h>
#include <pytun/log.h>

namespace pytun {

/// Where the lines of one logger go.
struct LogFileTarget {
    std::string logger;                 ///< the logger's name (a tunnel's TunnelOptions::name)
    std::string file_base;              ///< file name without ".log" (TunnelConfig::source_name)
    LogLevel level = LogLevel::debug;
    bool to_console = false;            ///< also write to stderr
};

struct LoggingOptions {
    enum class Color { automatic, always, never };
    std::string directory;              ///< log_path; created when missing; empty: no files
    std::string main_file_base = "main_connector";
    std::string main_logger = "pytun";  ///< name of the connector's own lines
    LogLevel level = LogLevel::info;    ///< of the main file (and of unknown loggers)
    bool to_console = false;            ///< the main lines also go to stderr
    Color color = Color::automatic;     ///< automatic: only when stderr is a terminal
    std::size_t max_files = 30;         ///< rotated files kept per log
    /// Past this many bytes in one day a file takes no more lines until
    /// midnight UTC (it says so once, and how many were dropped); 0: no limit.
    std::uint64_t max_bytes_per_day = 100ull << 20;
};

/// The options of the `[pytun]` section / a tunnel section.
PYTUN_EXPORT LoggingOptions logging_options(const ConnectorConfig &connector);
PYTUN_EXPORT LogFileTarget log_target(const TunnelConfig &tunnel);

/// Owns the log files and console output. start() installs it as libpytun's
/// log handler (set_log_handler); destruction restores the default. Lines are
/// "YYYY-MM-DD HH:MM:SS.mmm UTC [pid] [logger] [level] message". Thread-safe.
class PYTUN_EXPORT Logging {
public:
    explicit Logging(LoggingOptions options);
    ~Logging();
    Logging(const Logging &) = delete;
    Logging &operator=(const Logging &) = delete;

    /// Create the directory, open the main file and take over libpytun's lines.
    std::error_code start(std::string &message);

    /// Route these loggers to their own files (replaces the previous set, as
    /// on reload); lines of other loggers go to the main file.
    std::error_code set_targets(const std::vector<LogFileTarget> &targets, std::string &message);

    /// A line of the connector itself (main logger), or of a named logger.
    void log(LogLevel level, std::string_view message);
    void log(std::string_view logger, LogLevel level, std::string_view message);

    void flush();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
