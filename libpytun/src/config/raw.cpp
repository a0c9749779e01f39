// SPDX-License-Identifier: MIT
// Diagnostics collection and the small string helpers of the config readers.
#include "config/raw.h"

#include <algorithm>
#include <cctype>

#include "util/text.h"

namespace pytun::config {

void Diagnostics::error(std::string file, int line, std::string key, std::string message)
{
    ++errors_;
    add(Diagnostic::Severity::error, std::move(file), line, std::move(key), std::move(message));
}

void Diagnostics::warning(std::string file, int line, std::string key, std::string message)
{
    add(Diagnostic::Severity::warning, std::move(file), line, std::move(key), std::move(message));
}

void Diagnostics::add(Diagnostic::Severity severity, std::string file, int line, std::string key,
                      std::string message)
{
    std::size_t &count = per_file_[file];
    if (++count > k_max_per_file) {
        if (count == k_max_per_file + 1)
            list_.push_back({severity, detail::printable(file, 4096), 0, "",
                             "more problems in this file are not listed: fix the ones above (is it a config file?)"});
        return;
    }
    list_.push_back({severity, detail::printable(file, 4096), line, detail::printable(key, 64),
                     detail::printable(message, 4096)});
}

std::string quote_value(std::string_view key, std::string_view value)
{
    if (detail::is_secret_key(key))
        return "(value not shown: " + std::string(detail::printable(key, 64)) + " holds a secret)";
    return "'" + detail::printable(value) + "'";
}

std::string to_lower(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

std::string_view trim(std::string_view s)
{
    constexpr std::string_view ws = " \t\r\n\f\v";
    std::size_t b = s.find_first_not_of(ws);
    if (b == std::string_view::npos)
        return {};
    std::size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

} // namespace pytun::config
