// SPDX-License-Identifier: MIT
// A small INI parser: inih cannot give the line of each key, which every
// diagnostic needs, and the original's dialect (inline comments, quotes,
// `key: value`) needs handling of its own anyway.
#include "config/ini_parser.h"

#include <cctype>

namespace pytun::config {

namespace {

bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/// Index where an inline comment starts (a # or ; preceded by whitespace), or npos.
std::size_t comment_start(std::string_view s, std::size_t from = 0)
{
    for (std::size_t i = from; i < s.size(); ++i) {
        if ((s[i] == '#' || s[i] == ';') && i > 0 && is_space(s[i - 1]))
            return i;
    }
    return std::string_view::npos;
}

} // namespace

std::string clean_ini_value(std::string_view raw)
{
    std::string_view v = trim(raw);
    // A quoted value may hold " #" (passwords do): when the closing quote is
    // followed only by whitespace or a comment, the quotes delimit the value.
    if (!v.empty() && (v.front() == '"' || v.front() == '\'')) {
        std::size_t close = v.find(v.front(), 1);
        if (close != std::string_view::npos) {
            std::string_view rest = trim(v.substr(close + 1));
            if (rest.empty() || rest.front() == '#' || rest.front() == ';')
                return std::string(v.substr(1, close - 1));
        }
    }
    std::size_t c = comment_start(v);
    if (c != std::string_view::npos)
        v = trim(v.substr(0, c));
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
        v = v.substr(1, v.size() - 2);
    return std::string(v);
}

std::vector<RawSection> parse_ini(std::string_view text, const std::string &file, Diagnostics &diag)
{
    std::vector<RawSection> sections;
    bool reported_orphans = false;
    int lineno = 0;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        std::size_t end = text.find('\n', pos);
        if (end == std::string_view::npos)
            end = text.size();
        std::string_view line = trim(text.substr(pos, end - pos));
        pos = end + 1;
        ++lineno;
        if (lineno == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") // editors on Windows write a BOM
            line = trim(line.substr(3));
        if (line.empty() || line.front() == '#' || line.front() == ';')
            continue;

        if (line.front() == '[') {
            std::size_t close = line.find(']');
            std::string_view after = close == std::string_view::npos ? "" : trim(line.substr(close + 1));
            if (close == std::string_view::npos || (!after.empty() && after.front() != '#' && after.front() != ';')) {
                diag.error(file, lineno, "", "malformed section header '" + std::string(line) +
                                                 "': write it as [name] on a line of its own");
                continue;
            }
            RawSection s;
            s.file = file;
            s.name = to_lower(trim(line.substr(1, close - 1)));
            s.line = lineno;
            sections.push_back(std::move(s));
            continue;
        }

        std::size_t sep = line.find_first_of("=:");
        if (sep == std::string_view::npos || sep == 0) {
            diag.error(file, lineno, "",
                       "cannot read '" + std::string(line) + "': write key = value (or a [section] header)");
            continue;
        }
        RawValue v;
        v.key = to_lower(trim(line.substr(0, sep)));
        v.text = clean_ini_value(line.substr(sep + 1));
        v.line = lineno;
        if (sections.empty()) {
            // Reported once: a missing header usually makes every line orphaned.
            if (!reported_orphans)
                diag.error(file, lineno, v.key, "key before any section: put a section header such as [pytun] or "
                                                "[tunnel] above it");
            reported_orphans = true;
            continue;
        }
        sections.back().entries.push_back(std::move(v));
    }
    return sections;
}

} // namespace pytun::config
