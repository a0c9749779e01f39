// SPDX-License-Identifier: MIT
// Base64 on OpenSSL's EVP encoder.
#include "util/base64.h"

#include <cctype>

#include <openssl/evp.h>

namespace pytun::detail {

std::vector<unsigned char> base64_decode(std::string_view text)
{
    std::string clean;
    clean.reserve(text.size());
    for (char c : text)
        if (!std::isspace(static_cast<unsigned char>(c)))
            clean += c;
    if (clean.size() % 4 != 0)
        return {};
    std::vector<unsigned char> out(clean.size() / 4 * 3 + 3);
    int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char *>(clean.data()),
                            static_cast<int>(clean.size()));
    if (n < 0)
        return {};
    // EVP_DecodeBlock counts the bytes '=' padding stands for: drop them.
    std::size_t padding = 0;
    if (!clean.empty() && clean.back() == '=')
        padding = (clean.size() >= 2 && clean[clean.size() - 2] == '=') ? 2 : 1;
    if (static_cast<std::size_t>(n) < padding)
        return {};
    out.resize(static_cast<std::size_t>(n) - padding);
    return out;
}

std::string base64_encode(const unsigned char *data, std::size_t size, bool pad)
{
    std::string out(4 * ((size + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()), data, static_cast<int>(size));
    out.resize(static_cast<std::size_t>(n));
    if (!pad)
        while (!out.empty() && out.back() == '=')
            out.pop_back();
    return out;
}

} // namespace pytun::detail
