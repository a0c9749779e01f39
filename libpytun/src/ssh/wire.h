// SPDX-License-Identifier: MIT
// The SSH wire format (RFC 4251 section 5): uint32, string and mpint, read
// from key files and data to sign, written into public-key blobs.
#pragma once

#include "internal.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pytun::detail {

/// Reads fields in order; every read fails (false) past the end, and stays
/// failed, so a caller can check once after a run of reads.
class WireReader {
public:
    explicit WireReader(std::span<const unsigned char> data) : data_(data) {}

    bool u32(std::uint32_t &out);
    bool byte(unsigned char &out);
    /// The string's bytes, as a view into the buffer.
    bool string(std::span<const unsigned char> &out);
    bool string(std::string &out);
    bool skip_string();
    bool ok() const { return ok_; }

private:
    std::span<const unsigned char> data_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

void wire_put_u32(std::vector<unsigned char> &out, std::uint32_t value);
void wire_put_string(std::vector<unsigned char> &out, std::span<const unsigned char> bytes);
void wire_put_string(std::vector<unsigned char> &out, std::string_view text);
/// A non-negative integer given as big-endian bytes, written as an mpint.
void wire_put_mpint(std::vector<unsigned char> &out, std::span<const unsigned char> magnitude);

} // namespace pytun::detail
