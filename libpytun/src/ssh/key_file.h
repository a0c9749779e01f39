// SPDX-License-Identifier: MIT
// Inspection of a private key file before it is handed to libssh2, whose
// error codes cannot tell a missing file from a wrong passphrase.
#pragma once

#include "internal.h"

#include <string>
#include <string_view>
#include <system_error>
#include <vector>

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
PYTUN_CONNECTOR_USES std::error_code inspect_key_file(const std::string &path, KeyFileInfo &info, std::string &message);

/// The whole key file; key_file_unreadable with the reason otherwise.
std::error_code read_key_text(const std::string &path, std::string &text, std::string &message);

/// The text between a PEM-style BEGIN line and its END line; empty if absent.
std::string pem_body(const std::string &text, std::string_view begin, std::string_view end);

/// An OpenSSH-format ("openssh-key-v1") private key file, unpacked.
struct OpensshKeyFile {
    std::string cipher;                         ///< "none" when not encrypted
    std::vector<unsigned char> public_key;      ///< the public key blob
    std::vector<unsigned char> private_section; ///< encrypted unless cipher is "none"
};
/// False when `text` is not a well-formed single-key OpenSSH private key file.
bool parse_openssh_key(const std::string &text, OpensshKeyFile &out);

} // namespace pytun::detail
