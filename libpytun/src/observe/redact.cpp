// SPDX-License-Identifier: MIT
// Redaction of secrets in config files and detection of private keys by content.
#include "observe/redact.h"

#include <algorithm>
#include <cctype>
#include <regex>

namespace pytun::detail {

namespace {

std::string lower(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

bool contains(std::string_view haystack, std::string_view needle)
{
    return haystack.find(needle) != std::string_view::npos;
}

// Strip surrounding quotes and take the last component of a dotted TOML key
// (alert.smtp_password): that component names the value.
std::string key_name(std::string_view raw)
{
    std::string k = lower(raw);
    while (!k.empty() && std::isspace(static_cast<unsigned char>(k.back())))
        k.pop_back();
    auto dot = k.find_last_of('.');
    if (dot != std::string::npos)
        k = k.substr(dot + 1);
    if (k.size() >= 2 && (k.front() == '"' || k.front() == '\'') && k.back() == k.front())
        k = k.substr(1, k.size() - 2);
    return k;
}

// The marker in a form that keeps the file loadable: quoted where the value
// was a TOML string, bare in INI.
std::string marker_for(std::string_view value)
{
    if (!value.empty() && (value.front() == '"' || value.front() == '\''))
        return std::string("\"") + std::string(k_redacted_marker) + "\"";
    return std::string(k_redacted_marker);
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

bool is_secret_key(std::string_view key)
{
    const std::string k = key_name(key);
    static const char *const exact[] = {"smtp_password", "http_password", "signature", "inspection_token",
                                        "key_passphrase", "passphrase", "password", "token", "secret"};
    for (const char *e : exact)
        if (k == e)
            return true;
    static const char *const parts[] = {"password", "passwd", "passphrase", "token", "secret",
                                        "api_key", "apikey", "credential", "signature", "private_key"};
    for (const char *p : parts)
        if (contains(k, p))
            return true;
    return false;
}

std::string redact_config(std::string_view content, std::vector<Redaction> &redactions)
{
    // `key = value` or `key: value` at the start of a line (INI, TOML).
    static const std::regex line_re(R"(^(\s*)("[^"]*"|'[^']*'|[^\s=:"'#;\[][^=:]*?)(\s*[=:]\s*)(.*?)(\r?\n?)$)");
    // `key = value` pairs inside TOML inline tables: `smtp = { password = "x" }`.
    static const std::regex inline_re(R"(([A-Za-z0-9_\-]+|"[^"]*")(\s*=\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^,}\s]+))");

    std::string out;
    out.reserve(content.size());
    auto lines = split_lines(content);
    for (std::size_t n = 0; n < lines.size(); ++n) {
        std::string line(lines[n]);
        const int line_no = static_cast<int>(n) + 1;
        std::smatch m;
        const auto first = line.find_first_not_of(" \t");
        const bool comment = first != std::string::npos && (line[first] == '#' || line[first] == ';');
        if (comment || !std::regex_match(line, m, line_re)) {
            out += line;
            continue;
        }
        const std::string key = m[2].str();
        const std::string value = m[4].str();
        if (is_secret_key(key)) {
            redactions.push_back({line_no, key_name(key)});
            out += m[1].str() + key + m[3].str() + marker_for(value) + m[5].str();
            // A TOML multi-line string goes on until its closing quotes: none
            // of those lines may survive.
            for (const char *triple : {"\"\"\"", "'''"}) {
                if (value.rfind(triple, 0) == 0 && value.find(triple, 3) == std::string::npos) {
                    while (n + 1 < lines.size()) {
                        ++n;
                        if (std::string_view(lines[n]).find(triple) != std::string_view::npos)
                            break;
                    }
                }
            }
            // INI continuation lines (indented, no key of their own) belong to the value.
            while (n + 1 < lines.size()) {
                std::string_view next = lines[n + 1];
                const bool indented = !next.empty() && (next[0] == ' ' || next[0] == '\t');
                const bool blank = next.find_first_not_of(" \t\r\n") == std::string_view::npos;
                if (!indented || blank || next.find_first_of("=:") != std::string_view::npos)
                    break;
                ++n;
            }
            continue;
        }
        // Not a secret itself, but a TOML inline table may hold one.
        if (value.find('{') != std::string::npos) {
            std::string rebuilt;
            auto begin = value.cbegin();
            std::smatch im;
            bool changed = false;
            while (std::regex_search(begin, value.cend(), im, inline_re)) {
                rebuilt.append(begin, im[0].first);
                if (is_secret_key(im[1].str())) {
                    redactions.push_back({line_no, key_name(im[1].str())});
                    rebuilt += im[1].str() + im[2].str() + marker_for(im[3].str());
                    changed = true;
                } else {
                    rebuilt += im[0].str();
                }
                begin = im[0].second;
            }
            rebuilt.append(begin, value.cend());
            if (changed) {
                out += m[1].str() + key + m[3].str() + rebuilt + m[5].str();
                continue;
            }
        }
        // Credentials inside a URL (http_url = https://user:secret@host/).
        static const std::regex userinfo_re(R"(([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):([^/\s@]+)@)");
        if (std::regex_search(value, userinfo_re)) {
            redactions.push_back({line_no, key_name(key) + " (password in URL)"});
            out += m[1].str() + key + m[3].str() +
                   std::regex_replace(value, userinfo_re, "$1:" + std::string(k_redacted_marker) + "@") + m[5].str();
            continue;
        }
        out += line;
    }
    return out;
}

} // namespace pytun::detail
