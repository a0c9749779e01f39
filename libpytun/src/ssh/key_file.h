// SPDX-License-Identifier: MIT
// Inspection of a private key file before it is handed to libssh2, whose
// error codes cannot tell a missing file from a wrong passphrase.
#pragma once

#include "internal.h"

#include <string>
#include <system_error>

namespace pytun::detail {

struct KeyFileInfo {
    enum class Format { openssh, pem, pkcs8, unknown };
    Format format = Format::unknown;
    bool encrypted = false;
    std::string key_type;   ///< "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", ... or "" if not known
    bool is_rsa() const { return key_type == "ssh-rsa"; }
};

/// Reads `path` and fills `info`. On failure returns Errc::key_file_unreadable
/// (or key_unsupported) and puts the reason, naming the file, in `message`.
std::error_code inspect_key_file(const std::string &path, KeyFileInfo &info, std::string &message);

} // namespace pytun::detail
