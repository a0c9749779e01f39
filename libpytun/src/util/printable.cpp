// SPDX-License-Identifier: MIT
// printable(): untrusted bytes made safe for logs and messages.
#include "util/printable.h"

namespace pytun::detail {

std::string printable(std::string_view text)
{
    static constexpr char k_hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size());
    for (unsigned char c : text) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += k_hex[c >> 4];
            out += k_hex[c & 0xf];
        }
    }
    return out;
}

} // namespace pytun::detail
