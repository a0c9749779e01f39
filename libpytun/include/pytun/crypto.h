// SPDX-License-Identifier: MIT
// How libpytun runs libssh2's AES-CTR cipher (process-wide).
#pragma once

#include <string>

#include <pytun/export.h>

namespace pytun {

/// libssh2 1.10 encrypts and decrypts one 16-byte block per OpenSSL call. For
/// AES-CTR (what OpenSSH servers negotiate with libssh2 1.10) libpytun makes
/// the keystream in batches instead, which saves about 0.35 CPU seconds per
/// GiB moved, a sixth of libssh2's user time (docs/benchmarks.md). It does so through a small OpenSSL provider,
/// registered in OpenSSL's default library context together with the default
/// property query "?pytun.batched=yes" when the first tunnel starts. It stays
/// off in FIPS mode. A program that sets OpenSSL default properties of its own,
/// or wants OpenSSL's global state untouched, calls this with false before
/// starting any tunnel; later calls have no effect.
PYTUN_EXPORT void set_aes_ctr_batching(bool enabled);

/// What libssh2's AES-CTR runs on, for logs and support: "batched keystream",
/// or "OpenSSL" followed by the reason in parentheses; "not decided yet"
/// until the first tunnel starts.
PYTUN_EXPORT std::string aes_ctr_implementation();

} // namespace pytun
