// SPDX-License-Identifier: MIT
// A VPN capture's published state.
#include "vpn/capture_state.h"

#include "vpn/dns_relay.h"

namespace pytun::detail {

void CaptureState::set_port(std::uint16_t port)
{
    std::lock_guard lock(mutex_);
    port_ = port;
}

void CaptureState::set_installed(bool installed, const std::string &method)
{
    std::lock_guard lock(mutex_);
    installed_ = installed;
    method_ = method;
}

void CaptureState::set_dns(std::shared_ptr<const DnsCounters> dns)
{
    std::lock_guard lock(mutex_);
    dns_ = std::move(dns);
}

CaptureStatus CaptureState::snapshot() const
{
    CaptureStatus s;
    std::shared_ptr<const DnsCounters> dns;
    {
        std::lock_guard lock(mutex_);
        s.installed = installed_;
        s.method = method_;
        s.port = port_;
        dns = dns_;
    }
    s.captured = captured.load(std::memory_order_relaxed);
    s.reset_while_down = reset_while_down.load(std::memory_order_relaxed);
    s.not_redirected = not_redirected.load(std::memory_order_relaxed);
    if (dns) {
        auto &d = s.dns.emplace();
        d.queries = dns->queries.load(std::memory_order_relaxed);
        d.answered = dns->answered.load(std::memory_order_relaxed);
        d.truncated = dns->truncated.load(std::memory_order_relaxed);
        d.servfail = dns->servfail.load(std::memory_order_relaxed);
        d.timeouts = dns->timeouts.load(std::memory_order_relaxed);
        d.rejected = dns->rejected.load(std::memory_order_relaxed);
    }
    return s;
}

} // namespace pytun::detail
