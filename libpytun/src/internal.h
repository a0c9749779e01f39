// SPDX-License-Identifier: MIT
// Guard for internal headers: they are not part of the installed API.
#pragma once

#ifndef PYTUN_INTERNAL
#error "internal libpytun header: only the library and its internal tests may include it"
#endif

// The few internals libpytun-connector.so calls in libpytun.so: it must use
// libpytun's own instance of what holds process-wide state (the logger
// registry behind set_log_handler, the descriptor budget), and shares its
// text helpers rather than carry a second copy. Exported (pytun::detail), but
// not API: the connector is built from the same tree and version.
#if defined(PYTUN_BUILDING_LIBRARY)
#define PYTUN_CONNECTOR_USES __attribute__((visibility("default")))
#else
#define PYTUN_CONNECTOR_USES
#endif
