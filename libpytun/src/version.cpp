// SPDX-License-Identifier: MIT
// Versions of libpytun and of the libraries it runs with.
#include <pytun/version.h>

#include <libssh2.h>
#include <openssl/crypto.h>

namespace pytun {

std::string version()
{
    return PYTUN_VERSION;
}

std::string libssh2_version()
{
    const char *v = ::libssh2_version(0);
    return v ? v : "unknown";
}

std::string openssl_version()
{
    return OpenSSL_version(OPENSSL_VERSION);
}

} // namespace pytun
