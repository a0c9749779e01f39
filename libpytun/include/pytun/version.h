// SPDX-License-Identifier: MIT
// Versions of libpytun and of the libraries it runs with.
#pragma once

#include <string>

#include <pytun/export.h>

namespace pytun {

/// libpytun's version, "MAJOR.MINOR.PATCH".
PYTUN_EXPORT std::string version();
/// The libssh2 version loaded at run time (libssh2_version(0)).
PYTUN_EXPORT std::string libssh2_version();
/// The OpenSSL version loaded at run time (OpenSSL_version(OPENSSL_VERSION)).
PYTUN_EXPORT std::string openssl_version();

} // namespace pytun
