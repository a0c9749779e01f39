// SPDX-License-Identifier: MIT
// File descriptors: the process limit, what pytun needs of it, and what
// happened when it ran short. Every forwarded connection, SSH session,
// health probe and status-API client is a descriptor; pytun keeps a reserve
// for its control plane and guarantees each tunnel a share of the rest, so a
// flood on one tunnel cannot stop the others (docs/architecture.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <pytun/export.h>

namespace pytun {

struct DescriptorLimit {
    std::uint64_t soft = 0;       ///< RLIMIT_NOFILE now
    std::uint64_t hard = 0;
    std::uint64_t before = 0;     ///< the soft limit before raise_descriptor_limit()
};

/// Raise the soft RLIMIT_NOFILE to the hard one (pytun uses no select(), so
/// descriptor numbers beyond 1024 are fine). `message` says what was done or
/// why it could not be (then the limit is unchanged).
PYTUN_EXPORT DescriptorLimit raise_descriptor_limit(std::string &message);

/// The descriptors pytun needs for `tunnels` tunnels with no forwarded
/// connection yet: its reserve (SSH sessions and their reconnects, health
/// probes, the status API's clients, log and archive files). Every open
/// forwarded connection needs one more.
PYTUN_EXPORT std::uint64_t descriptors_needed(std::size_t tunnels);

/// A warning when `limit` cannot hold `tunnels` tunnels and a fair number of
/// connections each (empty when it can): what pytun needs and how to raise it.
PYTUN_EXPORT std::string descriptor_limit_warning(std::uint64_t limit, std::size_t tunnels);

struct DescriptorStats {
    std::uint64_t limit = 0;              ///< RLIMIT_NOFILE (soft)
    std::uint64_t reserved = 0;           ///< kept for the control plane
    std::uint64_t forwarded = 0;          ///< forwarded connections holding a descriptor now
    std::uint64_t exhausted_total = 0;    ///< operations that failed with EMFILE/ENFILE
    std::uint64_t refused_total = 0;      ///< forwarded connections refused to keep the reserve
};

/// Now; any thread.
PYTUN_EXPORT DescriptorStats descriptor_stats();

} // namespace pytun
