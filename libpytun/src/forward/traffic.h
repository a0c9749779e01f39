// SPDX-License-Identifier: MIT
// TrafficCounters: the connection and byte counts of a tunnel's streams,
// written by relays on the loop thread and read from any thread.
#pragma once

#include "internal.h"

#include <atomic>
#include <cstdint>

#include <pytun/tunnel.h>

#include "util/histogram.h"

namespace pytun::detail {

struct TrafficCounters {
    std::atomic<std::uint64_t> active{0};
    std::atomic<std::uint64_t> total{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> refused{0}; ///< turned away: connection cap or descriptor reserve
    std::atomic<std::uint64_t> bytes_to_service{0};
    std::atomic<std::uint64_t> bytes_from_service{0};
    AtomicSetupTimeHistogram connection_setup; ///< arrival -> both ends connected

    TunnelStats snapshot() const
    {
        TunnelStats s;
        s.connections_active = active.load(std::memory_order_relaxed);
        s.connections_total = total.load(std::memory_order_relaxed);
        s.connections_failed = failed.load(std::memory_order_relaxed);
        s.connections_refused = refused.load(std::memory_order_relaxed);
        s.bytes_to_service = bytes_to_service.load(std::memory_order_relaxed);
        s.bytes_from_service = bytes_from_service.load(std::memory_order_relaxed);
        s.connection_setup = connection_setup.read();
        return s;
    }
};

} // namespace pytun::detail
