// SPDX-License-Identifier: MIT
// printable(): untrusted bytes made safe to put into a log line or a message.
#pragma once

#include "internal.h"

#include <string>
#include <string_view>

namespace pytun::detail {

/// `text` with every byte outside printable ASCII (and the backslash) written
/// as \xNN, so a peer's bytes cannot forge log lines or terminal sequences.
std::string printable(std::string_view text);

} // namespace pytun::detail
