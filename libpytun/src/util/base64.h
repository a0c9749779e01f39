// SPDX-License-Identifier: MIT
// Base64 (RFC 4648) on OpenSSL's EVP encoder, for key blobs and fingerprints.
#pragma once

#include "internal.h"

#include <string>
#include <string_view>
#include <vector>

namespace pytun::detail {

/// Decodes, ignoring whitespace; empty on malformed input.
std::vector<unsigned char> base64_decode(std::string_view text);
/// Encodes; without '=' padding when `pad` is false (OpenSSH fingerprints).
std::string base64_encode(const unsigned char *data, std::size_t size, bool pad = true);

} // namespace pytun::detail
