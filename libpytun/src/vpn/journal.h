// SPDX-License-Identifier: MIT
// The capture journal: before a tunnel installs firewall rules it writes
// what it is about to install and who it is (pid, start time, boot, network
// namespace) to a file under $RUNTIME_DIRECTORY (systemd) or /run/pytun, and
// removes the file after removing the rules. A file whose owner is gone
// (SIGKILL, a crash) names rules nobody will remove: the next start, or
// `pytun vpn --cleanup`, removes them (vpn/capture.h).
#pragma once

#include "internal.h"

#include <cstdint>
#include <string>
#include <vector>

#include <pytun/tunnel.h>

namespace pytun::detail {

/// A process as the journal identifies it: a pid alone could be reused.
struct ProcessIdentity {
    int pid = 0;
    std::uint64_t start_time = 0; ///< /proc/PID/stat field 22 (clock ticks after boot)
    std::string boot_id;          ///< /proc/sys/kernel/random/boot_id
    std::uint64_t netns = 0;      ///< inode of its network namespace

    static ProcessIdentity self();
    /// The same process still runs (same boot, pid and start time).
    bool alive() const;
    bool operator==(const ProcessIdentity &) const = default;
};

struct CaptureJournal {
    std::string id;                    ///< capture_id(): names the table and chains
    std::string tunnel;                ///< for messages
    CaptureMethod method = CaptureMethod::nft;
    ProcessIdentity owner;
};

/// Where journals are: $RUNTIME_DIRECTORY (its first path) or /run/pytun,
/// then "vpn".
std::string journal_dir();
/// Writes (or replaces) the journal of `journal.id` in its owner's network
/// namespace; false and `error` when it cannot.
bool write_journal(const CaptureJournal &journal, std::string &error);
void remove_journal(const CaptureJournal &journal);
/// Every readable journal of network namespace `netns`.
std::vector<CaptureJournal> read_journals(std::uint64_t netns);

} // namespace pytun::detail
