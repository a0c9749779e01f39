// SPDX-License-Identifier: MIT
// Escaping and bounding of untrusted text for diagnostics; secret key names.
#include "util/text.h"

#include <algorithm>
#include <cctype>

namespace pytun::detail {

namespace {

// Length of the C1 control character (U+0080..U+009F, UTF-8 C2 80..C2 9F) at `i`, or 0.
std::size_t c1_at(std::string_view s, std::size_t i)
{
    return i + 1 < s.size() && static_cast<unsigned char>(s[i]) == 0xC2 &&
                   static_cast<unsigned char>(s[i + 1]) >= 0x80 && static_cast<unsigned char>(s[i + 1]) <= 0x9F
               ? 2
               : 0;
}

} // namespace

std::string printable(std::string_view text, std::size_t max_bytes)
{
    static constexpr char hex[] = "0123456789abcdef";
    const std::string_view shown = text.substr(0, std::min(text.size(), max_bytes));
    std::string out;
    out.reserve(shown.size() + 16);
    auto escape = [&](unsigned char c) {
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
    };
    for (std::size_t i = 0; i < shown.size(); ++i) {
        const auto c = static_cast<unsigned char>(shown[i]);
        if (c == '\t')
            out += "\\t";
        else if (c == '\n')
            out += "\\n";
        else if (c == '\r')
            out += "\\r";
        else if (c < 0x20 || c == 0x7f)
            escape(c);
        else if (c1_at(shown, i)) {
            escape(c);
            escape(static_cast<unsigned char>(shown[++i]));
        } else
            out += static_cast<char>(c);
    }
    if (shown.size() < text.size())
        out += "... (" + std::to_string(text.size()) + " bytes)";
    return out;
}

std::size_t find_control_char(std::string_view text)
{
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if ((c < 0x20 && c != '\t') || c == 0x7f || c1_at(text, i))
            return i;
    }
    return std::string_view::npos;
}

std::string key_name(std::string_view key)
{
    std::string k(key);
    std::transform(k.begin(), k.end(), k.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    while (!k.empty() && std::isspace(static_cast<unsigned char>(k.back())))
        k.pop_back();
    if (auto dot = k.find_last_of('.'); dot != std::string::npos)
        k.erase(0, dot + 1);
    if (k.size() >= 2 && (k.front() == '"' || k.front() == '\'') && k.back() == k.front())
        k = k.substr(1, k.size() - 2);
    return k;
}

bool is_secret_key(std::string_view key)
{
    const std::string k = key_name(key);
    static constexpr std::string_view parts[] = {"password", "passwd",  "passphrase", "token",     "secret",
                                                 "api_key",  "apikey",  "credential", "signature", "private_key"};
    return std::any_of(std::begin(parts), std::end(parts),
                       [&](std::string_view p) { return k.find(p) != std::string::npos; });
}

} // namespace pytun::detail
