// SPDX-License-Identifier: MIT
// Diagnostics collection and the small string helpers of the config readers.
#include "config/raw.h"

#include <algorithm>
#include <cctype>

namespace pytun::config {

void Diagnostics::error(std::string file, int line, std::string key, std::string message)
{
    list_.push_back({Diagnostic::Severity::error, std::move(file), line, std::move(key), std::move(message)});
    ++errors_;
}

void Diagnostics::warning(std::string file, int line, std::string key, std::string message)
{
    list_.push_back({Diagnostic::Severity::warning, std::move(file), line, std::move(key), std::move(message)});
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
