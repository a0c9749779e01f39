// SPDX-License-Identifier: MIT
// The /configs and /logs zip archives. libzip writes them to an unlinked
// temporary file, reading and redacting one input file at a time, so a
// request holds about one config file (at most 1 MiB) and libzip's buffers
// in memory whatever the directories hold; the reply is streamed from the
// file.
#pragma once

#include "internal.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pytun::detail {

/// Name of the listing of what /configs left out or redacted.
inline constexpr const char *k_redaction_list_name = "REDACTED.txt";

/// A config file larger than this is left out of /configs (the loader
/// refuses it too).
inline constexpr std::size_t k_archive_max_config_file = 1u << 20;

/// At most this many directory entries are examined per archive; the rest
/// are named as left out by count.
inline constexpr std::size_t k_archive_max_files = 10000;

/// A finished archive: an open, already unlinked file. Move-only; closes
/// the descriptor unless release()d.
class ArchiveFile {
public:
    ArchiveFile() = default;
    ArchiveFile(int fd, std::uint64_t size) : fd_(fd), size_(size) {}
    ArchiveFile(ArchiveFile &&other) noexcept : fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}
    ArchiveFile &operator=(ArchiveFile &&other) noexcept;
    ~ArchiveFile();
    int fd() const { return fd_; }
    std::uint64_t size() const { return size_; }
    int release() { return std::exchange(fd_, -1); }
    /// The whole archive in memory (for small archives and tests).
    std::string read_all() const;

private:
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

/// A zip of `entries` (name inside the archive, bytes). Throws
/// std::runtime_error when libzip fails (the handler turns that into the
/// original's error reply).
std::string make_zip(const std::vector<std::pair<std::string, std::string>> &entries);

/// Why `path` may not be archived (symbolic link, not a regular file, owned
/// by a user other than pytun's or root, more than one hard link), or empty
/// when it may; then `fd` is its open descriptor (opened with O_NOFOLLOW and
/// checked with fstat, so the checks hold for what is read).
std::string open_for_archive(const std::string &path, int &fd);

/// The main config file (at the archive's root) and the regular files
/// directly inside `config_dir` (under its base name), secret values
/// replaced; private keys, binary files, symbolic links, hard links, other
/// users' files, files over 1 MiB and those beyond `max_bytes` in total left
/// out. REDACTED.txt says what was done to which file.
ArchiveFile make_config_archive(const std::string &main_config_file, const std::string &config_dir,
                                std::size_t max_bytes);

/// The `*.log` files directly inside `log_dir` (newest first until
/// `max_bytes`), with the same checks as /configs (private keys included),
/// plus LEFT_OUT.txt naming those left out and why.
ArchiveFile make_log_archive(const std::string &log_dir, std::size_t max_bytes);

} // namespace pytun::detail
