// SPDX-License-Identifier: MIT
// Helpers shared by the pytun sub-commands.
#include "commands.h"

#include <algorithm>
#include <cctype>
#include <iostream>

namespace pytun::cli {

std::optional<LogLevel> parse_log_level(std::string name)
{
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (name == "trace")
        return LogLevel::trace;
    if (name == "debug")
        return LogLevel::debug;
    if (name == "info")
        return LogLevel::info;
    if (name == "warning" || name == "warn") // as log_level in the configuration
        return LogLevel::warning;
    if (name == "error")
        return LogLevel::error;
    if (name == "critical")
        return LogLevel::critical;
    return std::nullopt;
}

LoggingOptions console_logging(const LogFlags &flags)
{
    LoggingOptions o;
    o.to_console = true;
    o.level = flags.level.value_or(LogLevel::info);
    o.format = flags.format;
    return o;
}

std::optional<Config> load_or_report(const std::string &path, const LoadOptions &options,
                                     std::vector<Diagnostic> *warnings)
{
    LoadResult result = load_config(path, options);
    if (warnings && result.ok()) {
        *warnings = std::move(result.diagnostics);
        return std::move(result.config);
    }
    for (const auto &d : result.diagnostics)
        std::cerr << d.to_string() << "\n";
    if (!result.ok()) {
        std::size_t errors = 0;
        for (const auto &d : result.diagnostics)
            errors += d.severity == Diagnostic::Severity::error;
        std::cerr << "pytun: " << errors << (errors == 1 ? " problem" : " problems") << " in the configuration ("
                  << path << "); nothing was started\n";
        return std::nullopt;
    }
    return std::move(result.config);
}

} // namespace pytun::cli
