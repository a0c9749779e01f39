// SPDX-License-Identifier: MIT
// Helpers shared by the pytun sub-commands.
#include "commands.h"

#include <iostream>

namespace pytun::cli {

std::optional<Config> load_or_report(const std::string &path, const LoadOptions &options)
{
    LoadResult result = load_config(path, options);
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
