// SPDX-License-Identifier: MIT
// Diagnostics collection and the small string helpers of the config readers.
#include "config/raw.h"

#include <algorithm>
#include <cctype>

#include "util/text.h"

namespace pytun::config {

void Diagnostics::error(std::string file, int line, std::string key, std::string message)
{
    add({Diagnostic::Severity::error, std::move(file), line, std::move(key), std::move(message)});
}

void Diagnostics::warning(std::string file, int line, std::string key, std::string message)
{
    add({Diagnostic::Severity::warning, std::move(file), line, std::move(key), std::move(message)});
}

void Diagnostics::add(Diagnostic d)
{
    const bool is_error = d.severity == Diagnostic::Severity::error;
    errors_ += is_error;
    PerFile &f = per_file_[d.file];
    if (++f.count > k_shown_per_file) {
        f.hidden_errors += is_error;
        return;
    }
    f.last_shown = list_.size();
    // Kept safe to print: control characters escaped, lengths bounded.
    list_.push_back({d.severity, detail::printable(d.file, 4096), d.line, detail::printable(d.key, 64),
                     detail::printable(d.message, 4096)});
}

std::vector<Diagnostic> Diagnostics::take()
{
    // Each file's summary goes right after its last shown diagnostic; from
    // the back, so that the positions still to come stay valid.
    std::vector<std::pair<std::size_t, Diagnostic>> summaries;
    for (const auto &[file, f] : per_file_) {
        if (f.count <= k_shown_per_file)
            continue;
        const std::size_t hidden = f.count - k_shown_per_file;
        summaries.push_back(
            {f.last_shown + 1,
             {f.hidden_errors ? Diagnostic::Severity::error : Diagnostic::Severity::warning,
              detail::printable(file, 4096), 0, "",
              std::to_string(hidden) + " more problem" + (hidden == 1 ? "" : "s") + " in this file not shown (" +
                  std::to_string(f.hidden_errors) + " of them errors): is it the right file? Fix the " +
                  std::to_string(k_shown_per_file) + " above and check again"}});
    }
    std::sort(summaries.begin(), summaries.end(), [](const auto &a, const auto &b) { return a.first > b.first; });
    for (auto &[at, d] : summaries)
        list_.insert(list_.begin() + static_cast<std::ptrdiff_t>(at), std::move(d));
    per_file_.clear();
    return std::move(list_);
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
