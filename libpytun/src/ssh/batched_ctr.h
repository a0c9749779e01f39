// SPDX-License-Identifier: MIT
// AES-CTR with a batched keystream, for libssh2 1.10.
//
// libssh2 1.10 encrypts and decrypts every packet one 16-byte block at a time,
// one EVP_Cipher() call per block. With AES-NI a lone block costs the full
// latency of ten dependent rounds plus OpenSSL 3's dispatch: over a third of
// pytun's CPU time at full speed (docs/benchmarks.md has the profile).
// CTR mode's keystream does not depend on the data, so it can be made ahead in
// batches, where AES-NI pipelines eight blocks at once; each 16-byte call is
// then an XOR. This file is a small OpenSSL provider with AES-128/192/256-CTR
// made that way (the keystream itself comes from the default provider), and
// a default-property preference that makes libssh2's plain fetch pick it.
#pragma once

#include "internal.h"

namespace pytun::detail {

enum class BatchedCtrStatus {
    installed,
    fips_mode,            ///< the process runs OpenSSL in FIPS mode: left alone
    no_default_provider,  ///< the default provider is not available
    failed,               ///< loading or the self-test failed; OpenSSL's own AES-CTR is used
};

/// Registers the provider and the preference, process-wide, then checks that
/// a plain fetch of AES-128-CTR gets it and that it agrees with the default
/// provider. Call once, before the first libssh2 session.
BatchedCtrStatus install_batched_aes_ctr();

} // namespace pytun::detail
