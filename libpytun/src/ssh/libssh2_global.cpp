// SPDX-License-Identifier: MIT
// Process-wide libssh2 initialisation.
#include "ssh/libssh2_global.h"

#include <atomic>
#include <mutex>
#include <stdexcept>

#include <libssh2.h>

#include <pytun/crypto.h>

#include "ssh/batched_ctr.h"

namespace pytun::detail {

namespace {

// Off unless the program asks (pytun/crypto.h): the provider and the default
// property query change OpenSSL for the whole process.
std::atomic<bool> batching_wanted{false};
std::atomic<const char *> ctr_implementation{"not decided yet"};

const char *describe(BatchedCtrStatus status)
{
    switch (status) {
    case BatchedCtrStatus::installed:
        return "batched keystream";
    case BatchedCtrStatus::fips_mode:
        return "OpenSSL (FIPS mode)";
    case BatchedCtrStatus::no_default_provider:
        return "OpenSSL (its default provider is not loaded)";
    case BatchedCtrStatus::failed:
        return "OpenSSL (the batched provider failed its self-test)";
    }
    return "OpenSSL";
}

} // namespace

void ensure_libssh2_initialised()
{
    static std::once_flag once;
    std::call_once(once, [] {
        // libssh2_exit() is deliberately never called: sessions may be freed
        // by threads that outlive static destruction, and the process exit
        // releases what libssh2_init took.
        if (libssh2_init(0) != 0)
            throw std::runtime_error("libssh2_init failed");
        ctr_implementation = batching_wanted ? describe(install_batched_aes_ctr()) : "OpenSSL (batching not turned on)";
    });
}

} // namespace pytun::detail

namespace pytun {

void set_aes_ctr_batching(bool enabled) { detail::batching_wanted = enabled; }

std::string aes_ctr_implementation() { return detail::ctr_implementation.load(); }

} // namespace pytun
