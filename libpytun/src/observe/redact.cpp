// SPDX-License-Identifier: MIT
// Redaction of secrets in config files and detection of private keys by
// content. Every scan is a single forward pass (no regular expressions: the
// backtracking of std::regex took seconds on an 8 kB line and overflowed the
// stack on a 40 kB one).
#include "observe/redact.h"

#include <algorithm>
#include <cctype>

namespace pytun::detail {

namespace {

bool contains(std::string_view haystack, std::string_view needle)
{
    return haystack.find(needle) != std::string_view::npos;
}

bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\v';
}

bool is_inline_key_char(char c)
{
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

// The marker in a form that keeps the file loadable: quoted where the value
// was a TOML string, bare in INI.
std::string marker_for(std::string_view value)
{
    if (!value.empty() && (value.front() == '"' || value.front() == '\''))
        return std::string("\"") + std::string(k_redacted_marker) + "\"";
    return std::string(k_redacted_marker);
}

std::size_t skip_blanks(std::string_view s, std::size_t i)
{
    while (i < s.size() && is_blank(s[i]))
        ++i;
    return i;
}

// One line cut into its parts: indent, key, separator (with the blanks
// around it), value, line end. `separator` is empty when the line has none.
struct Line {
    std::string_view indent, key, separator, value, eol;
};

// `key = value` / `key: value` at the start of a line (INI, TOML), or a
// line that starts with a key but has no separator. False for comments,
// section headers, blank lines and anything else.
bool split_line(std::string_view line, Line &out)
{
    std::size_t body_end = line.size();
    if (body_end > 0 && line[body_end - 1] == '\n')
        --body_end;
    if (body_end > 0 && line[body_end - 1] == '\r')
        --body_end;
    out.eol = line.substr(body_end);
    const std::string_view body = line.substr(0, body_end);
    const std::size_t start = skip_blanks(body, 0);
    if (start == body.size())
        return false;
    const char first = body[start];
    if (first == '#' || first == ';' || first == '[' || first == '=' || first == ':')
        return false;
    out.indent = body.substr(0, start);
    std::size_t key_end;
    if (first == '"' || first == '\'') {
        const std::size_t close = body.find(first, start + 1);
        if (close == std::string_view::npos)
            return false;
        key_end = close + 1;
    } else {
        key_end = body.find_first_of("=:", start);
        if (key_end == std::string_view::npos)
            key_end = body.size();
        while (key_end > start && is_blank(body[key_end - 1]))
            --key_end;
    }
    out.key = body.substr(start, key_end - start);
    const std::size_t sep_start = key_end;
    std::size_t i = skip_blanks(body, key_end);
    if (i < body.size() && (body[i] == '=' || body[i] == ':')) {
        i = skip_blanks(body, i + 1);
        out.separator = body.substr(sep_start, i - sep_start);
        out.value = body.substr(i);
    } else {
        out.separator = {};
        out.value = body.substr(key_end);
    }
    return true;
}

// Length of the inline-table value starting at `i`: "..." with escapes,
// '...', or a bare token up to , } or a blank; 0 if there is none.
std::size_t inline_value_length(std::string_view s, std::size_t i)
{
    if (i >= s.size())
        return 0;
    if (s[i] == '"') {
        for (std::size_t j = i + 1; j < s.size(); ++j) {
            if (s[j] == '\\')
                ++j;
            else if (s[j] == '"')
                return j + 1 - i;
        }
    } else if (s[i] == '\'') {
        if (auto close = s.find('\'', i + 1); close != std::string_view::npos)
            return close + 1 - i;
    }
    std::size_t j = i;
    while (j < s.size() && s[j] != ',' && s[j] != '}' && !std::isspace(static_cast<unsigned char>(s[j])))
        ++j;
    return j - i;
}

// `value` with the secrets of a TOML inline table replaced:
// `{ host = "mail", password = "x" }`. Empty when nothing was replaced.
std::string redact_inline_table(std::string_view value, int line_no, std::vector<Redaction> &redactions)
{
    std::string out;
    bool changed = false;
    std::size_t i = 0;
    while (i < value.size()) {
        std::size_t key_len = 0;
        if (is_inline_key_char(value[i])) {
            while (i + key_len < value.size() && is_inline_key_char(value[i + key_len]))
                ++key_len;
        } else if (value[i] == '"') {
            if (auto close = value.find('"', i + 1); close != std::string_view::npos)
                key_len = close + 1 - i;
        }
        if (key_len == 0) {
            out += value[i++];
            continue;
        }
        std::size_t j = i + key_len;
        while (j < value.size() && std::isspace(static_cast<unsigned char>(value[j])))
            ++j;
        std::size_t value_start = j + 1;
        while (value_start < value.size() && std::isspace(static_cast<unsigned char>(value[value_start])))
            ++value_start;
        const std::size_t value_len =
            j < value.size() && value[j] == '=' ? inline_value_length(value, value_start) : 0;
        if (value_len == 0) {
            // No `= value` after this key. A bare key's tail cannot start a
            // match either (it ends in the same place): skip it whole.
            const std::size_t skip = value[i] == '"' ? 1 : key_len;
            out.append(value.substr(i, skip));
            i += skip;
            continue;
        }
        const std::string_view key = value.substr(i, key_len);
        if (is_secret_key(key)) {
            redactions.push_back({line_no, key_name(key), 0});
            out.append(value.substr(i, value_start - i));
            out += marker_for(value.substr(value_start, value_len));
            changed = true;
        } else {
            out.append(value.substr(i, value_start + value_len - i));
        }
        i = value_start + value_len;
    }
    return changed ? out : std::string();
}

bool is_scheme_char(char c)
{
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '.' || c == '-';
}

// `value` with the password of every `scheme://user:password@` replaced.
// Empty when there was none.
std::string redact_url_passwords(std::string_view value)
{
    std::string out;
    std::size_t copied = 0;
    bool changed = false;
    for (std::size_t at = value.find("://"); at != std::string_view::npos; at = value.find("://", at + 1)) {
        // A scheme: letters, digits, + . - before "://", starting with a letter.
        std::size_t s = at;
        while (s > 0 && is_scheme_char(value[s - 1]))
            --s;
        while (s < at && !std::isalpha(static_cast<unsigned char>(value[s])))
            ++s;
        if (s == at || at < copied)
            continue;
        auto stop = [](char c, bool colon) {
            return c == '/' || c == '@' || std::isspace(static_cast<unsigned char>(c)) || (colon && c == ':');
        };
        std::size_t i = at + 3;
        while (i < value.size() && !stop(value[i], true))
            ++i;
        if (i >= value.size() || value[i] != ':')
            continue;
        const std::size_t pass = i + 1;
        std::size_t j = pass;
        while (j < value.size() && !stop(value[j], false))
            ++j;
        if (j == pass || j >= value.size() || value[j] != '@')
            continue;
        out.append(value.substr(copied, pass - copied));
        out += k_redacted_marker;
        copied = j;
        changed = true;
        at = j;
    }
    if (!changed)
        return {};
    out.append(value.substr(copied));
    return out;
}

std::vector<std::string_view> split_lines(std::string_view s)
{
    std::vector<std::string_view> lines;
    std::size_t start = 0;
    while (start < s.size()) {
        auto end = s.find('\n', start);
        if (end == std::string_view::npos) {
            lines.push_back(s.substr(start));
            break;
        }
        lines.push_back(s.substr(start, end - start + 1));
        start = end + 1;
    }
    return lines;
}

} // namespace

std::string private_key_kind(std::string_view content)
{
    // PEM armour of every private key type: "-----BEGIN RSA PRIVATE KEY-----",
    // "-----BEGIN EC PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----" (PKCS#8),
    // "-----BEGIN ENCRYPTED PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----".
    for (std::size_t pos = content.find("-----BEGIN "); pos != std::string_view::npos;
         pos = content.find("-----BEGIN ", pos + 1)) {
        auto end = content.find("-----", pos + 11);
        if (end == std::string_view::npos)
            break;
        std::string_view label = content.substr(pos + 11, end - pos - 11);
        if (!contains(label, "PRIVATE KEY"))
            continue;
        if (label == "OPENSSH PRIVATE KEY")
            return "OpenSSH private key";
        if (label == "PRIVATE KEY")
            return "PKCS#8 private key";
        if (label == "ENCRYPTED PRIVATE KEY")
            return "encrypted PKCS#8 private key";
        return "PEM private key (" + std::string(label) + ")";
    }
    if (contains(content, "PuTTY-User-Key-File-"))
        return "PuTTY private key";
    if (contains(content, "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----"))
        return "SSH2 private key";
    // The OpenSSH binary format, should someone have stored it unarmoured.
    if (contains(content, std::string_view("openssh-key-v1\0", 15)))
        return "OpenSSH private key (binary)";
    return {};
}

bool looks_binary(std::string_view content)
{
    if (content.find('\0') != std::string_view::npos)
        return true;
    // Validate UTF-8: DER keys and other binaries fail this quickly.
    std::size_t i = 0;
    while (i < content.size()) {
        auto c = static_cast<unsigned char>(content[i]);
        std::size_t extra = 0;
        if (c < 0x80) {
            if (c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' && c != '\v')
                return true;
            ++i;
            continue;
        }
        if ((c & 0xE0) == 0xC0 && c >= 0xC2)
            extra = 1;
        else if ((c & 0xF0) == 0xE0)
            extra = 2;
        else if ((c & 0xF8) == 0xF0 && c <= 0xF4)
            extra = 3;
        else
            return true;
        if (i + extra >= content.size())
            return true;
        for (std::size_t k = 1; k <= extra; ++k)
            if ((static_cast<unsigned char>(content[i + k]) & 0xC0) != 0x80)
                return true;
        i += extra + 1;
    }
    return false;
}

std::string redact_config(std::string_view content, std::vector<Redaction> &redactions)
{
    std::string out;
    out.reserve(content.size());
    const auto lines = split_lines(content);
    for (std::size_t n = 0; n < lines.size(); ++n) {
        const std::string_view line = lines[n];
        const int line_no = static_cast<int>(n) + 1;
        if (line.size() > k_redact_max_line) {
            redactions.push_back({line_no, {}, line.size()});
            out += k_redacted_marker;
            out += line.back() == '\n' ? "\n" : "";
            continue;
        }
        Line l;
        if (!split_line(line, l)) {
            out += line;
            continue;
        }
        // `smtp_password hunter2` (the = forgotten): the first word is the
        // key and everything after it may be the secret.
        std::string_view key = l.key;
        std::string_view separator = l.separator;
        std::string_view value = l.value;
        if (const auto blank = key.find_first_of(" \t\f\v");
            key.front() != '"' && key.front() != '\'' && blank != std::string_view::npos &&
            is_secret_key(key.substr(0, blank))) {
            separator = " ";
            key = key.substr(0, blank);
            value = "x";
        } else if (separator.empty()) {
            // One word and nothing else: a secret run into its key
            // (`smtp_passwordhunter2`) goes whole; anything else stays.
            if (is_secret_key(key)) {
                redactions.push_back({line_no, {}, line.size()});
                out.append(l.indent).append(k_redacted_marker).append(l.eol);
            } else {
                out += line;
            }
            continue;
        }
        if (is_secret_key(key)) {
            redactions.push_back({line_no, key_name(key), 0});
            out.append(l.indent).append(key).append(separator);
            out += marker_for(value);
            out.append(l.eol);
            // A TOML multi-line string goes on until its closing quotes: none
            // of those lines may survive.
            for (std::string_view triple : {std::string_view("\"\"\""), std::string_view("\'\'\'")}) {
                if (value.substr(0, 3) == triple && value.find(triple, 3) == std::string_view::npos) {
                    while (n + 1 < lines.size()) {
                        ++n;
                        if (lines[n].find(triple) != std::string_view::npos)
                            break;
                    }
                }
            }
            // INI continuation lines (indented, no key of their own) belong to the value.
            while (n + 1 < lines.size()) {
                const std::string_view next = lines[n + 1];
                const bool indented = !next.empty() && (next[0] == ' ' || next[0] == '\t');
                const bool blank = next.find_first_not_of(" \t\r\n") == std::string_view::npos;
                if (!indented || blank || next.find_first_of("=:") != std::string_view::npos)
                    break;
                ++n;
            }
            continue;
        }
        // Not a secret itself, but a TOML inline table may hold one.
        if (value.find('{') != std::string_view::npos) {
            if (std::string rebuilt = redact_inline_table(value, line_no, redactions); !rebuilt.empty()) {
                out.append(l.indent).append(key).append(separator).append(rebuilt).append(l.eol);
                continue;
            }
        }
        // Credentials inside a URL (http_url = https://user:secret@host/).
        if (std::string rebuilt = redact_url_passwords(value); !rebuilt.empty()) {
            redactions.push_back({line_no, key_name(key) + " (password in URL)", 0});
            out.append(l.indent).append(key).append(separator).append(rebuilt).append(l.eol);
            continue;
        }
        out += line;
    }
    return out;
}

} // namespace pytun::detail
