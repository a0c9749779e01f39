// SPDX-License-Identifier: MIT
// A small INI parser: inih cannot give the line of each key, which every
// diagnostic needs, and the original's dialect (inline comments, quotes,
// `key: value`) needs handling of its own anyway.
#include "config/ini_parser.h"

#include <cctype>
#include <cstdio>

#include "config/schema.h"
#include "util/text.h"

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

        // NUL, ESC, CR and their kind have no place in a config: a value
        // with a NUL in it would be cut there by every C API it reaches
        // (server_host = 127.0.0.1\0evil connects to 127.0.0.1).
        if (const std::size_t bad = detail::find_control_char(line); bad != std::string_view::npos) {
            const std::size_t sep = line.find_first_of("=:");
            const std::string key = sep == std::string_view::npos || sep > bad ? "" : to_lower(trim(line.substr(0, sep)));
            char byte[8];
            std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(line[bad]));
            diag.error(file, lineno, key,
                       std::string("contains a control character (byte ") + byte + " at column " +
                           std::to_string(bad + 1) + "): remove it; values are text on one line");
            continue;
        }

        if (line.front() == '[') {
            std::size_t close = line.find(']');
            std::string_view after = close == std::string_view::npos ? "" : trim(line.substr(close + 1));
            if (close == std::string_view::npos || (!after.empty() && after.front() != '#' && after.front() != ';')) {
                diag.error(file, lineno, "",
                           "malformed section header " + quote_value(line, line) +
                               ": write it as [name] on a line of its own");
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
        // The key is one word. `smtp_password hunter2` (the = forgotten, or
        // a colon further on) must not be read as a key called
        // "smtp_password hunter2": the diagnostic would print the password.
        const std::string_view before = trim(line.substr(0, sep == std::string_view::npos ? line.size() : sep));
        const std::size_t blank = before.find_first_of(" \t");
        if (blank != std::string_view::npos || sep == std::string_view::npos) {
            const std::string first = to_lower(before.substr(0, blank));
            if (is_known_key(first) || detail::is_secret_key(first))
                diag.error(file, lineno, first,
                           "no '=' between the key and its value: write " + first +
                               " = VALUE (the line is not shown: it may hold a secret)");
            else if (sep == std::string_view::npos)
                diag.error(file, lineno, "",
                           "cannot read this line (" + std::to_string(line.size()) +
                               " bytes, no '=' or ':'; not shown, it may hold a secret): write key = value "
                               "(or a [section] header)");
            else
                diag.error(file, lineno, "",
                           "the key before '" + std::string(1, line[sep]) +
                               "' has a blank in it (not shown, it may hold a secret): write key = value, the key "
                               "one word");
            continue;
        }
        if (sep == 0) {
            diag.error(file, lineno, "", "no key before '" + std::string(1, line[0]) + "': write key = value");
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
