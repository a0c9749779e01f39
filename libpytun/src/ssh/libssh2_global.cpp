// SPDX-License-Identifier: MIT
// Process-wide libssh2 initialisation.
#include "ssh/libssh2_global.h"

#include <mutex>
#include <stdexcept>

#include <libssh2.h>

namespace pytun::detail {

void ensure_libssh2_initialised()
{
    static std::once_flag once;
    std::call_once(once, [] {
        // libssh2_exit() is deliberately never called: sessions may be freed
        // by threads that outlive static destruction, and the process exit
        // releases what libssh2_init took.
        if (libssh2_init(0) != 0)
            throw std::runtime_error("libssh2_init failed");
    });
}

} // namespace pytun::detail
