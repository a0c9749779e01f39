// SPDX-License-Identifier: MIT
// Symbol visibility: libpytun is built with hidden visibility; PYTUN_EXPORT marks the public API.
#pragma once

#if defined(PYTUN_BUILDING_LIBRARY)
#define PYTUN_EXPORT __attribute__((visibility("default")))
#else
#define PYTUN_EXPORT
#endif
