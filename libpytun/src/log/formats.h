// SPDX-License-Identifier: MIT
// Line formats of the connector's logs besides spdlog's patterns: JSON lines,
// and the journal's form of stderr (sd-daemon(3) priority prefixes), plus the
// structured fields (event, error) of the line being logged.
#pragma once

#include "internal.h"

#include <memory>
#include <string>

#include <spdlog/formatter.h>

#include <pytun/logging.h>

namespace pytun::detail {

/// What the JSON format shows of the line being logged besides spdlog's
/// log_msg: its structured fields, and whether its logger is a tunnel's.
struct LineFields {
    const LogFields *fields = nullptr;
    bool tunnel = false;
};

/// Makes these the fields of the lines this thread logs until it is
/// destroyed. spdlog formats synchronously on the logging thread, so the JSON
/// formatter reads them while the line is written.
class ScopedLogFields {
public:
    ScopedLogFields(const LogFields &fields, bool tunnel);
    ~ScopedLogFields();
    ScopedLogFields(const ScopedLogFields &) = delete;
    ScopedLogFields &operator=(const ScopedLogFields &) = delete;

private:
    LineFields previous_;
};

/// One JSON object per line: time (RFC 3339, UTC), level, pid, logger,
/// tunnel (the logger, when it is a tunnel's), event, message, error; absent
/// values are null.
std::unique_ptr<spdlog::formatter> make_json_formatter();

/// "<N>" (the line's syslog priority) followed by what `inner` makes; journald
/// stores N as PRIORITY and adds the time, pid and unit itself.
std::unique_ptr<spdlog::formatter> make_journal_formatter(std::unique_ptr<spdlog::formatter> inner);

/// Whether systemd connected stderr to the journal: $JOURNAL_STREAM holds the
/// device and inode of stderr (systemd.exec(5)).
bool stderr_is_journal();

} // namespace pytun::detail
