// SPDX-License-Identifier: MIT
// pytun --version: pytun's version and the libssh2 and OpenSSL it runs with.
#include "commands.h"

#include <pytun/version.h>

namespace pytun::cli {

int print_version(std::ostream &out)
{
    out << "pytun " << pytun::version() << "\n"
        << "libssh2 " << pytun::libssh2_version() << "\n"
        << pytun::openssl_version() << "\n";
    return k_exit_ok;
}

} // namespace pytun::cli
