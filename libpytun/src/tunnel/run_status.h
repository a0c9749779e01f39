// SPDX-License-Identifier: MIT
// RunStatus: what a tunnel run publishes about its forwards and sessions.
// Written on the tunnel's loop thread, read from any thread (status, stats);
// shared by the run and whoever reports on it.
#pragma once

#include "internal.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include <pytun/tunnel.h>

#include "forward/traffic.h"

namespace pytun::detail {

class CaptureState;

class RunStatus {
public:
    /// One row per forward, in all_forwards() order.
    explicit RunStatus(const std::vector<ForwardSpec> &forwards);

    std::size_t size() const { return counters_.size(); }
    const std::shared_ptr<TrafficCounters> &counters(std::size_t forward) const { return counters_[forward]; }
    void set_serving(std::size_t forward, std::uint16_t bound_port);
    void set_failed(std::size_t forward, const std::string &error);
    void set_detail(std::size_t forward, const std::string &detail);

    /// A VPN forward's capture, shown with the forward from now on.
    void set_capture(std::size_t forward, std::shared_ptr<const CaptureState> state);

    std::vector<ForwardStatus> forwards() const;
    /// The sum over every forward.
    TunnelStats total() const;

    std::atomic<unsigned> sessions{0}; ///< SSH connections to the bastion ready for channels, the tunnel's own included

private:
    mutable std::mutex mutex_;
    std::vector<ForwardStatus> rows_; ///< traffic filled in at read time
    std::vector<std::shared_ptr<TrafficCounters>> counters_;
    std::vector<std::shared_ptr<const CaptureState>> captures_; ///< by forward; null for other kinds
};

} // namespace pytun::detail
