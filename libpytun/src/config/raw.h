// SPDX-License-Identifier: MIT
// Format-neutral view of a config section (keys, values, line numbers) and the
// diagnostics collector shared by the INI and TOML readers and the validator.
#pragma once

#include "internal.h"

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <pytun/config.h>

namespace pytun::config {

/// One `key = value` as read. INI values are always text and get converted
/// the way people write them; TOML values keep their type so a wrong type can
/// be reported with what to write instead.
struct RawValue {
    enum class Kind { text, integer, boolean, floating, string_array, other };
    Kind kind = Kind::text;
    bool from_ini = true;
    std::string key;                   ///< lower-cased
    std::string text;                  ///< Kind::text
    std::int64_t integer = 0;          ///< Kind::integer
    bool boolean = false;              ///< Kind::boolean
    std::vector<std::string> strings;  ///< Kind::string_array
    int line = 0;
};

/// A section (INI) or table (TOML) with the line of its header.
struct RawSection {
    std::string file;
    std::string name;                  ///< lower-cased
    int line = 0;
    std::vector<RawValue> entries;     ///< in file order
};

/// Collects every problem; loading never stops at the first one. Past
/// k_shown_per_file problems in one file (a binary file, or the wrong file
/// given) the rest are only counted, and take() says how many there were.
/// What it keeps is safe to print: control characters escaped, keys and
/// messages bounded.
class Diagnostics {
public:
    static constexpr std::size_t k_shown_per_file = 20;

    void error(std::string file, int line, std::string key, std::string message);
    void warning(std::string file, int line, std::string key, std::string message);
    bool has_errors() const { return errors_ > 0; }
    std::vector<Diagnostic> take();

private:
    struct PerFile {
        std::size_t count = 0;
        std::size_t hidden_errors = 0;
        std::size_t last_shown = 0; ///< index in list_ of the file's last shown diagnostic
    };
    void add(Diagnostic d);

    std::vector<Diagnostic> list_;
    std::map<std::string, PerFile> per_file_;
    int errors_ = 0;
};

/// A value as a diagnostic may quote it: 'value' with control characters
/// escaped and at most k_quote_max bytes, or "(value not shown)" when the
/// key's values are secrets.
std::string quote_value(std::string_view key, std::string_view value);

std::string to_lower(std::string_view s);
std::string_view trim(std::string_view s);

} // namespace pytun::config
