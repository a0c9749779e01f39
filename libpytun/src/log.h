// SPDX-License-Identifier: MIT
// Internal logging: spdlog loggers whose output goes to the handler set with
// pytun::set_log_handler (or stderr).
#pragma once

#include "internal.h"

#include <memory>
#include <string>

#include <spdlog/logger.h>

#include <pytun/log.h>

namespace pytun::detail {

/// A logger named `name` that follows set_log_level / set_log_handler.
PYTUN_CONNECTOR_USES std::shared_ptr<spdlog::logger> make_logger(const std::string &name);

/// Between the public LogLevel and spdlog's levels.
PYTUN_CONNECTOR_USES spdlog::level::level_enum to_spdlog(LogLevel level);
PYTUN_CONNECTOR_USES LogLevel from_spdlog(spdlog::level::level_enum level);

} // namespace pytun::detail
