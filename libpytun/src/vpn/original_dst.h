// SPDX-License-Identifier: MIT
// original_destination: where a connection that the capture redirected to
// pytun's listener was going, from the kernel's connection tracking
// (SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6).
#pragma once

#include "internal.h"

#include <optional>

#include <asio.hpp>

namespace pytun::detail {

/// The original destination of an accepted connection; nothing when the
/// kernel knows none (no connection tracking entry). A connection made to
/// the listener itself, not redirected, reports the listener's address.
std::optional<asio::ip::tcp::endpoint> original_destination(asio::ip::tcp::socket &socket);

} // namespace pytun::detail
