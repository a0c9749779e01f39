// SPDX-License-Identifier: MIT
// SSH wire format reading and writing.
#include "ssh/wire.h"

namespace pytun::detail {

bool WireReader::u32(std::uint32_t &out)
{
    if (!ok_ || data_.size() - pos_ < 4)
        return ok_ = false;
    out = (std::uint32_t(data_[pos_]) << 24) | (std::uint32_t(data_[pos_ + 1]) << 16) |
          (std::uint32_t(data_[pos_ + 2]) << 8) | std::uint32_t(data_[pos_ + 3]);
    pos_ += 4;
    return true;
}

bool WireReader::byte(unsigned char &out)
{
    if (!ok_ || pos_ >= data_.size())
        return ok_ = false;
    out = data_[pos_++];
    return true;
}

bool WireReader::string(std::span<const unsigned char> &out)
{
    std::uint32_t length = 0;
    if (!u32(length))
        return false;
    if (length > data_.size() - pos_)
        return ok_ = false;
    out = data_.subspan(pos_, length);
    pos_ += length;
    return true;
}

bool WireReader::string(std::string &out)
{
    std::span<const unsigned char> bytes;
    if (!string(bytes))
        return false;
    out.assign(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    return true;
}

bool WireReader::skip_string()
{
    std::span<const unsigned char> ignored;
    return string(ignored);
}

void wire_put_u32(std::vector<unsigned char> &out, std::uint32_t value)
{
    out.push_back(static_cast<unsigned char>(value >> 24));
    out.push_back(static_cast<unsigned char>(value >> 16));
    out.push_back(static_cast<unsigned char>(value >> 8));
    out.push_back(static_cast<unsigned char>(value));
}

void wire_put_string(std::vector<unsigned char> &out, std::span<const unsigned char> bytes)
{
    wire_put_u32(out, static_cast<std::uint32_t>(bytes.size()));
    out.insert(out.end(), bytes.begin(), bytes.end());
}

void wire_put_string(std::vector<unsigned char> &out, std::string_view text)
{
    wire_put_string(out, std::span(reinterpret_cast<const unsigned char *>(text.data()), text.size()));
}

// An mpint is two's complement: no leading zero bytes, except one when the
// top bit is set (so the number stays positive); zero is the empty string.
void wire_put_mpint(std::vector<unsigned char> &out, std::span<const unsigned char> magnitude)
{
    while (!magnitude.empty() && magnitude.front() == 0)
        magnitude = magnitude.subspan(1);
    const bool pad = !magnitude.empty() && (magnitude.front() & 0x80);
    wire_put_u32(out, static_cast<std::uint32_t>(magnitude.size() + (pad ? 1 : 0)));
    if (pad)
        out.push_back(0);
    out.insert(out.end(), magnitude.begin(), magnitude.end());
}

} // namespace pytun::detail
