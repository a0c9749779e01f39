// SPDX-License-Identifier: MIT
// Admission: the gate every new connection of a tunnel passes, whatever its
// forward: the tunnel's connection cap, then a descriptor from the tunnel's
// share (util/fd_budget.h), so that a flood on one tunnel can starve neither
// the others nor the control plane. One per tunnel run, on its loop thread.
#pragma once

#include "internal.h"

#include <cstdint>
#include <functional>
#include <memory>

#include "util/fd_budget.h"

namespace pytun::detail {

class Relay;

class Admission {
public:
    /// `active()`: the tunnel's open connections over all its forwards.
    Admission(std::uint32_t max_connections, std::function<std::uint64_t()> active)
        : max_connections_(max_connections), active_(std::move(active))
    {
    }
    /// True: `relay` holds its descriptor lease and may go on. False: it was
    /// refused (counted, logged aggregated, closed).
    bool admit(Relay &relay);

private:
    std::uint32_t max_connections_;
    std::function<std::uint64_t()> active_;
    std::shared_ptr<FdShare> share_ = std::make_shared<FdShare>();
};

} // namespace pytun::detail
