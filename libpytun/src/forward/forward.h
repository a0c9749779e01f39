// SPDX-License-Identifier: MIT
// Forward: one kind of traffic carried over an SSH connection (today the
// reverse forward; local, dynamic and the transparent mode build on the same
// shape). A forward knows where its streams come from and where they go;
// the session's driver knows how to move their bytes. A tunnel
// (tunnel/tunnel_run.h) owns one connection and its forwards. All calls on
// the connection's loop thread.
#pragma once

#include "internal.h"

#include <cstdint>
#include <functional>
#include <string>
#include <system_error>

namespace pytun::detail {

class SshConnection;

class Forward {
public:
    struct Handlers {
        /// Serving. `bound_port`: the port that listens for this forward (on
        /// the bastion for a reverse forward), 0 if none.
        std::function<void(std::uint16_t bound_port)> ready;
        /// Cannot serve (e.g. the bastion refused the port): the tunnel ends.
        std::function<void(std::error_code, const std::string &)> failed;
    };

    virtual ~Forward() = default;
    /// Begin serving over `connection`, which is authenticated. The
    /// connection outlives the forward's use of it.
    virtual void start(SshConnection &connection, Handlers handlers) = 0;
    /// Accept no new streams; streams in flight go on. `done` runs once
    /// nothing new can arrive (for a reverse forward: the bastion has
    /// released its port).
    virtual void stop_accepting(std::function<void()> done) = 0;
};

} // namespace pytun::detail
