// SPDX-License-Identifier: MIT
// FdBudget: how the process's descriptors are shared. A reserve is kept for
// the control plane (SSH sessions and reconnects, health probes, the status
// server, log and archive files); forwarded connections share the rest, each
// tunnel guaranteed a part of it, so that one tunnel's flood can take only
// what is not guaranteed to the others. Thread-safe.
#pragma once

#include "internal.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

namespace pytun::detail {

/// Descriptors a tunnel's control plane needs: its SSH socket, the socket of
/// a reconnect while the old one closes, a health probe.
inline constexpr std::uint64_t k_fds_per_tunnel = 3;
/// The process's own: stdio, event loops (epoll, eventfd, timerfd), the
/// alerter's connections, the status server's listener, log and archive
/// files being written, libssh2/OpenSSL's own.
inline constexpr std::uint64_t k_fds_base = 64;

/// A tunnel's count of forwarded connections holding a descriptor.
struct FdShare {
    std::atomic<std::uint64_t> held{0};
};

class FdBudget;

/// One forwarded connection's descriptor; gives it back when destroyed.
class FdLease {
public:
    FdLease() = default;
    FdLease(FdLease &&other) noexcept
        : share_(std::move(other.share_)), shared_pool_(std::exchange(other.shared_pool_, false))
    {
    }
    FdLease &operator=(FdLease &&other) noexcept;
    ~FdLease() { release(); }
    explicit operator bool() const { return share_ != nullptr; }
    void release();

private:
    friend class FdBudget;
    std::shared_ptr<FdShare> share_;
    bool shared_pool_ = false;
};

class FdBudget {
public:
    PYTUN_CONNECTOR_USES static FdBudget &instance();

    /// How many tunnels share the budget (the manager sets it on apply).
    void set_tunnels(std::size_t tunnels);
    /// Descriptors a component holds at most (the status server: its
    /// connection limits); kept out of the forwarded connections' part.
    void reserve(std::int64_t delta) { extra_reserve_.fetch_add(delta); }

    /// A descriptor for one more forwarded connection of the tunnel whose
    /// share this is; empty when that would eat into the reserve or into
    /// another tunnel's guaranteed part.
    FdLease acquire(const std::shared_ptr<FdShare> &share);

    /// An operation failed with EMFILE/ENFILE (counted for the metric).
    void note_exhausted() { exhausted_.fetch_add(1, std::memory_order_relaxed); }
    std::uint64_t exhausted_total() const { return exhausted_.load(std::memory_order_relaxed); }

    std::uint64_t limit() const;
    std::uint64_t reserved() const;
    std::uint64_t forwarded() const { return forwarded_.load(std::memory_order_relaxed); }
    std::uint64_t refused_total() const { return refused_.load(std::memory_order_relaxed); }
    /// Forwarded connections each tunnel may always have.
    std::uint64_t guaranteed() const;

private:
    friend class FdLease;
    void give_back(bool shared_pool);

    std::atomic<std::size_t> tunnels_{0};
    std::atomic<std::int64_t> extra_reserve_{0};
    std::atomic<std::uint64_t> forwarded_{0};
    std::atomic<std::uint64_t> shared_used_{0};
    std::atomic<std::uint64_t> exhausted_{0};
    std::atomic<std::uint64_t> refused_{0};
};

/// EMFILE or ENFILE: pytun (or the system) is out of descriptors. Such a
/// failure says nothing about the peer and must not be blamed on it.
bool is_fd_exhaustion(const std::error_code &ec);

/// The words for it, with what to do.
std::string fd_exhaustion_text();

} // namespace pytun::detail
