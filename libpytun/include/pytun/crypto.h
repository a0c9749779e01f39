// SPDX-License-Identifier: MIT
// How libpytun runs libssh2's AES-CTR cipher (process-wide).
#pragma once

#include <string>

#include <pytun/export.h>

namespace pytun {

/// libssh2 1.10 encrypts and decrypts one 16-byte block per OpenSSL call. For
/// AES-CTR (what OpenSSH servers negotiate with libssh2 1.10) libpytun can
/// make the keystream in batches instead, which saves about 0.35 CPU seconds
/// per GiB moved, a sixth of libssh2's user time (docs/benchmarks.md). It does
/// so through a small OpenSSL provider, registered in OpenSSL's default library
/// context together with the default property query "?pytun.batched=yes": a
/// change to the whole process, which is why it is OFF by default. A program
/// that owns its OpenSSL state (the pytun command and the benchmark programs
/// do) calls this with true before starting any tunnel; later calls have no
/// effect. It stays off in FIPS mode and when the default provider is not
/// loaded, whatever was asked.
PYTUN_EXPORT void set_aes_ctr_batching(bool enabled);

/// What libssh2's AES-CTR runs on, for logs and support: "batched keystream",
/// or "OpenSSL" followed by the reason in parentheses ("batching not turned
/// on" by default); "not decided yet" until the first tunnel starts.
PYTUN_EXPORT std::string aes_ctr_implementation();

} // namespace pytun
