// SPDX-License-Identifier: MIT
// Logging: the connector's log files (main_connector.log plus one file per
// tunnel), rotated daily at midnight UTC, with optional console output and
// the journal under systemd; it takes over libpytun's log lines and routes
// each tunnel's to its file.
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

/// The form of every line: `text` is the original connector's
/// ("YYYY-MM-DD HH:MM:SS.mmm UTC [pid] [logger] [level] message"), `json` one
/// object per line with time, level, pid, logger, tunnel, event, message and
/// error (null when not applicable).
enum class LogFormat { text, json };

struct LoggingOptions {
    enum class Color { automatic, always, never };
    enum class Journal {
        automatic, ///< when $JOURNAL_STREAM names stderr (run by systemd): every line goes there too
        never,
    };
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
    LogFormat format = LogFormat::text; ///< of the files, the console and the journal
    /// Under systemd stderr is the journal, and a service's lines belong there
    /// whatever log_to_console says: every logger's lines at `level` and above,
    /// with their level as the priority, without the time and pid the journal
    /// records itself.
    Journal journal = Journal::automatic;
};

/// Structured fields of one line. In JSON they are the "event" and "error"
/// keys; the text format appends ": error" to the message.
struct LogFields {
    std::string_view event;             ///< a short name for what happened, e.g. "tunnel_up"
    std::string_view error;             ///< why, when something failed
};

/// The options of the `[pytun]` section / a tunnel section.
PYTUN_EXPORT LoggingOptions logging_options(const ConnectorConfig &connector);
PYTUN_EXPORT LogFileTarget log_target(const TunnelConfig &tunnel);

/// Owns the log files and console output. start() installs it as libpytun's
/// log handler (set_log_handler); destruction restores the default. Lines are
/// in LoggingOptions::format. Thread-safe.
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
    /// The same with structured fields (`logger` empty: the main logger).
    void log(std::string_view logger, LogLevel level, std::string_view message, const LogFields &fields);

    /// Whether lines go to the journal (see LoggingOptions::journal); valid after start().
    bool to_journal() const;

    void flush();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace pytun
