// SPDX-License-Identifier: MIT
// The per-tunnel connection cap and descriptor share.
#include "forward/admission.h"

#include <string>

#include "forward/relay.h"

namespace pytun::detail {

bool Admission::admit(Relay &relay)
{
    // The relay counts itself as active already.
    if (active_() > max_connections_) {
        relay.refuse("the tunnel has " + std::to_string(max_connections_) + " connections open (max_connections)");
        return false;
    }
    FdLease lease = FdBudget::instance().acquire(share_);
    if (!lease) {
        relay.refuse("pytun keeps its remaining file descriptors for the other tunnels and its control plane "
                     "(limit " + std::to_string(FdBudget::instance().limit()) + "); raise LimitNOFILE");
        return false;
    }
    relay.hold(std::move(lease));
    return true;
}

} // namespace pytun::detail
