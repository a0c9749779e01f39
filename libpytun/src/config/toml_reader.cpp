// SPDX-License-Identifier: MIT
// TOML reader: turns toml++ nodes into RawSections with their source lines,
// keeping value types so the validator can say what to write instead.
#include "config/toml_reader.h"

// toml++ 3.3 asserts that a table header's key starts with a key character,
// and "[#x]" or "[[[1]]]" break that (fixed upstream in marzer/tomlplusplus
// #301): a debug build aborts, a clang release build turns the broken
// precondition into an assumption, i.e. undefined behaviour. The parser's
// own check right after it reports a proper parse error, so the library's
// assertions are compiled out, and without NDEBUG none becomes an assumption.
#pragma push_macro("NDEBUG")
#undef NDEBUG
#define TOML_ASSERT(expr) static_assert(true)
#include <toml++/toml.h>
#pragma pop_macro("NDEBUG")

#include "util/text.h"

namespace pytun::config {

namespace {

int line_of(const toml::node &n)
{
    return static_cast<int>(n.source().begin.line);
}

// A NUL or other control character in a key or string (TOML allows them
// escaped, "\u0000") would be cut or misread by the C APIs the value
// reaches: reported, and the entry dropped.
bool has_control_char(const RawValue &v, const std::string &file, Diagnostics &diag)
{
    std::size_t bad = detail::find_control_char(v.key);
    std::string_view where = "key";
    if (bad == std::string_view::npos && v.kind == RawValue::Kind::text) {
        bad = detail::find_control_char(v.text);
        where = "value";
    }
    for (const auto &s : v.strings) {
        if (bad != std::string_view::npos)
            break;
        bad = detail::find_control_char(s);
        where = "value";
    }
    if (bad == std::string_view::npos)
        return false;
    diag.error(file, v.line, detail::find_control_char(v.key) == std::string_view::npos ? v.key : "",
               "the " + std::string(where) + " contains a control character (at byte " + std::to_string(bad + 1) +
                   "): remove it; values are text on one line");
    return true;
}

RawSection to_section(const toml::table &table, const std::string &file, std::string name, int header_line,
                      Diagnostics &diag)
{
    RawSection s;
    s.file = file;
    s.name = std::move(name);
    s.line = header_line;
    for (const auto &[k, node] : table) {
        RawValue v;
        v.from_ini = false;
        v.key = to_lower(k.str());
        v.line = line_of(node);
        if (v.line == 0)
            v.line = static_cast<int>(k.source().begin.line);
        if (auto str = node.value_exact<std::string>()) {
            v.kind = RawValue::Kind::text;
            v.text = *str;
        } else if (auto i = node.value_exact<std::int64_t>()) {
            v.kind = RawValue::Kind::integer;
            v.integer = *i;
        } else if (auto b = node.value_exact<bool>()) {
            v.kind = RawValue::Kind::boolean;
            v.boolean = *b;
        } else if (node.is_floating_point()) {
            v.kind = RawValue::Kind::floating;
        } else if (const toml::array *arr = node.as_array(); arr && arr->is_homogeneous(toml::node_type::string)) {
            v.kind = RawValue::Kind::string_array;
            for (const auto &e : *arr)
                v.strings.push_back(*e.value_exact<std::string>());
        } else {
            v.kind = RawValue::Kind::other;
        }
        if (has_control_char(v, file, diag))
            continue;
        s.entries.push_back(std::move(v));
    }
    return s;
}

} // namespace

TomlSections read_toml(std::string_view text, const std::string &file, Diagnostics &diag)
{
    TomlSections out;
    toml::table root;
    try {
        root = toml::parse(text, file);
    } catch (const toml::parse_error &e) {
        // toml++ quotes what it found where it failed: on a secret's line
        // (smtp_password "x", the = forgotten) that could be the secret.
        const std::string description(e.description());
        const auto saw = description.find(", saw ");
        diag.error(file, static_cast<int>(e.source().begin.line), "",
                   description.substr(0, saw) + ": fix the TOML syntax");
        return out;
    }
    for (const auto &[k, node] : root) {
        const std::string key(k.str());
        const int line = static_cast<int>(k.source().begin.line);
        if (key == "pytun") {
            if (const toml::table *t = node.as_table())
                out.main = to_section(*t, file, "pytun", line_of(*t) ? line_of(*t) : line, diag);
            else
                diag.error(file, line, key, "must be a table: write [pytun] followed by its keys");
        } else if (key == "tunnel") {
            const toml::array *arr = node.as_array();
            if (!arr || !arr->is_homogeneous(toml::node_type::table)) {
                diag.error(file, line, key, "must be an array of tables: write [[tunnel]] before each tunnel's keys");
                continue;
            }
            for (const auto &e : *arr)
                out.tunnels.push_back(to_section(*e.as_table(), file, "tunnel", line_of(e), diag));
        } else {
            diag.warning(file, line, key, "unknown top-level key or table: ignored (expected [pytun] and [[tunnel]])");
        }
    }
    return out;
}

} // namespace pytun::config
