// SPDX-License-Identifier: MIT
// Guard for internal headers: they are not part of the installed API.
#pragma once

#ifndef PYTUN_INTERNAL
#error "internal libpytun header: only the library and its internal tests may include it"
#endif
