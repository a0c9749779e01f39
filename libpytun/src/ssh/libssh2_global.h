// SPDX-License-Identifier: MIT
// Process-wide libssh2 initialisation (libssh2_init must precede every session).
#pragma once

#include "internal.h"

namespace pytun::detail {

/// Calls libssh2_init(0) once, thread-safely. Every code path that creates a
/// session calls this first.
void ensure_libssh2_initialised();

} // namespace pytun::detail
