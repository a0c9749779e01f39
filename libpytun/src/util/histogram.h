// SPDX-License-Identifier: MIT
// AtomicSetupTimeHistogram: connection set-up times counted by the event-loop
// threads and read by status readers on any thread, without a lock.
#pragma once

#include "internal.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

#include <pytun/tunnel.h>

namespace pytun::detail {

/// Buckets of SetupTimeHistogram. observe() is a few relaxed atomic adds, so
/// it can sit next to the relay's other counters; read() sees each bucket
/// exactly, but a read during an observe() may see the bucket and not yet
/// the sum (Prometheus tolerates that, as every client library does).
class AtomicSetupTimeHistogram {
public:
    void observe(std::chrono::steady_clock::duration elapsed) noexcept
    {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
        const std::uint64_t value = ns > 0 ? static_cast<std::uint64_t>(ns) : 0;
        std::size_t bucket = 0;
        while (bucket < k_bounds_ns.size() && value > k_bounds_ns[bucket])
            ++bucket;
        counts_[bucket].fetch_add(1, std::memory_order_relaxed);
        sum_ns_.fetch_add(value, std::memory_order_relaxed);
    }

    SetupTimeHistogram read() const noexcept
    {
        SetupTimeHistogram h;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            h.counts[i] = counts_[i].load(std::memory_order_relaxed);
            h.count += h.counts[i];
        }
        h.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
        return h;
    }

private:
    static constexpr std::array<std::uint64_t, SetupTimeHistogram::bounds.size()> k_bounds_ns = [] {
        std::array<std::uint64_t, SetupTimeHistogram::bounds.size()> ns{};
        for (std::size_t i = 0; i < ns.size(); ++i)
            ns[i] = static_cast<std::uint64_t>(SetupTimeHistogram::bounds[i] * 1e9 + 0.5);
        return ns;
    }();

    std::array<std::atomic<std::uint64_t>, SetupTimeHistogram::bounds.size() + 1> counts_{};
    std::atomic<std::uint64_t> sum_ns_{0};
};

} // namespace pytun::detail
