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
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace pytun::detail {

class Admission;
class ChannelStream;
class SshConnection;

/// Where forwards that open channels get them: the tunnel's sessions
/// (tunnel/session_pool.h).
class ChannelOpener {
public:
    virtual ~ChannelOpener() = default;
    /// Open a direct-tcpip channel to host:port for `stream` (opening, not
    /// adopted by any session yet) on one of the tunnel's sessions; the
    /// outcome reaches the stream (attach, or open_failed). `origin` is the
    /// client's address as the bastion is told it.
    virtual void open_direct_tcpip(std::shared_ptr<ChannelStream> stream, const std::string &host,
                                   std::uint16_t port, const std::string &origin_host,
                                   std::uint16_t origin_port) = 0;
};

/// What a forward keeps from one run of its tunnel to the next while the
/// tunnel reconnects: the VPN capture (its firewall rules and listener stay
/// in place, so nothing leaks during an outage). The forward makes it on its
/// first start; whoever restarts the tunnel (the manager's supervisor) holds
/// it across runs and close()s it on the loop thread when the tunnel stops
/// for good (stop, reload, removal).
class ForwardKeep {
public:
    virtual ~ForwardKeep() = default;
    /// Release what is kept (the firewall rules); idempotent.
    virtual void close() = 0;
};

/// A tunnel's keeps, one slot per forward in all_forwards() order (empty
/// until a forward fills it).
struct ForwardKeeps {
    explicit ForwardKeeps(std::size_t forwards) : slots(forwards) {}
    ~ForwardKeeps() { close(); }
    /// Close and drop every keep.
    void close()
    {
        for (auto &slot : slots)
            if (auto keep = std::exchange(slot, nullptr))
                keep->close();
    }
    std::vector<std::shared_ptr<ForwardKeep>> slots;
};

/// What a forward works with, lent by its tunnel run for the forward's life.
struct ForwardContext {
    SshConnection &connection; ///< authenticated
    ChannelOpener &opener;     ///< for channels the forward opens
    Admission &admission;      ///< every new connection passes it
    std::shared_ptr<ForwardKeep> &keep; ///< this forward's slot in the tunnel's ForwardKeeps
};

class Forward {
public:
    struct Handlers {
        /// Serving. `bound_port`: the port that listens for this forward (on
        /// the bastion for a reverse forward), 0 if none.
        std::function<void(std::uint16_t bound_port)> ready;
        /// Cannot serve (e.g. the bastion refused the port): the tunnel ends.
        std::function<void(std::error_code, const std::string &)> failed;
        /// Optional: what the forward tells about itself once serving, for
        /// status (ForwardStatus::detail).
        std::function<void(const std::string &)> described;
    };

    virtual ~Forward() = default;
    /// Begin serving.
    virtual void start(ForwardContext context, Handlers handlers) = 0;
    /// Accept no new streams; streams in flight go on. `done` runs once
    /// nothing new can arrive (for a reverse forward: the bastion has
    /// released its port).
    virtual void stop_accepting(std::function<void()> done) = 0;
};

} // namespace pytun::detail
