// SPDX-License-Identifier: MIT
// CaptureState: what status and metrics show of a VPN capture (its rules,
// method, port, counters, and its DNS relay's counters), kept by the
// capture's keep across the tunnel's SSH sessions. Written on the tunnel's
// loop thread, read from any thread.
#pragma once

#include "internal.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <pytun/tunnel.h>

namespace pytun::detail {

struct DnsCounters;

class CaptureState {
public:
    void set_port(std::uint16_t port);
    /// The rules are in place (true) or removed (false); `method` "nft" or "nat".
    void set_installed(bool installed, const std::string &method);
    /// The DNS relay's counters, once it listens (vpn/dns_relay.h).
    void set_dns(std::shared_ptr<const DnsCounters> dns);

    std::atomic<std::uint64_t> captured{0};
    std::atomic<std::uint64_t> reset_while_down{0};
    std::atomic<std::uint64_t> not_redirected{0};

    CaptureStatus snapshot() const;

private:
    mutable std::mutex mutex_;
    bool installed_ = false;
    std::string method_;
    std::uint16_t port_ = 0;
    std::shared_ptr<const DnsCounters> dns_;
};

} // namespace pytun::detail
