// SPDX-License-Identifier: MIT
// The descriptor budget (FdBudget), the RLIMIT_NOFILE raise and the public
// descriptor figures of <pytun/resources.h>.
#include "util/fd_budget.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <pytun/resources.h>

namespace pytun {
namespace detail {

namespace {

// The status server's default limits (StatusServerOptions): waiting
// connections, queued requests, workers, connections being closed.
constexpr std::uint64_t k_fds_status_server_default = 256 + 64 + 4 + 32;
// Fewer connections per tunnel than this is not a usable connector.
constexpr std::uint64_t k_min_connections_per_tunnel = 16;
// More guaranteed per tunnel buys nothing: the shared part is first come,
// first served for everyone.
constexpr std::uint64_t k_max_guaranteed = 256;

std::uint64_t soft_limit()
{
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1u << 20;
    return static_cast<std::uint64_t>(rl.rlim_cur);
}

} // namespace

FdLease &FdLease::operator=(FdLease &&other) noexcept
{
    if (this != &other) {
        release();
        share_ = std::move(other.share_);
        shared_pool_ = std::exchange(other.shared_pool_, false);
    }
    return *this;
}

void FdLease::release()
{
    if (!share_)
        return;
    share_->held.fetch_sub(1, std::memory_order_relaxed);
    share_.reset();
    FdBudget::instance().give_back(std::exchange(shared_pool_, false));
}

FdBudget &FdBudget::instance()
{
    static FdBudget *budget = new FdBudget; // never destroyed: leases may outlive static destruction
    return *budget;
}

void FdBudget::set_tunnels(std::size_t tunnels)
{
    tunnels_.store(tunnels);
}

std::uint64_t FdBudget::limit() const
{
    return soft_limit();
}

std::uint64_t FdBudget::reserved() const
{
    const std::int64_t extra = std::max<std::int64_t>(0, extra_reserve_.load());
    return k_fds_base + tunnels_.load() * k_fds_per_tunnel + static_cast<std::uint64_t>(extra);
}

std::uint64_t FdBudget::guaranteed() const
{
    const std::uint64_t lim = limit(), res = reserved();
    const std::uint64_t pool = lim > res ? lim - res : 0;
    const std::uint64_t tunnels = std::max<std::uint64_t>(1, tunnels_.load());
    return std::min(k_max_guaranteed, pool / (2 * tunnels));
}

FdLease FdBudget::acquire(const std::shared_ptr<FdShare> &share)
{
    FdLease lease;
    const std::uint64_t lim = limit(), res = reserved();
    const std::uint64_t pool = lim > res ? lim - res : 0;
    const std::uint64_t tunnels = std::max<std::uint64_t>(1, tunnels_.load());
    const std::uint64_t g = std::min(k_max_guaranteed, pool / (2 * tunnels));
    const std::uint64_t shared_size = pool - std::min(pool, g * tunnels);
    if (share->held.load(std::memory_order_relaxed) < g) {
        lease.shared_pool_ = false;
    } else {
        std::uint64_t used = shared_used_.load();
        do {
            if (used >= shared_size) {
                refused_.fetch_add(1, std::memory_order_relaxed);
                return lease;
            }
        } while (!shared_used_.compare_exchange_weak(used, used + 1));
        lease.shared_pool_ = true;
    }
    share->held.fetch_add(1, std::memory_order_relaxed);
    forwarded_.fetch_add(1, std::memory_order_relaxed);
    lease.share_ = share;
    return lease;
}

void FdBudget::give_back(bool shared_pool)
{
    forwarded_.fetch_sub(1, std::memory_order_relaxed);
    if (shared_pool)
        shared_used_.fetch_sub(1);
}

bool is_fd_exhaustion(const std::error_code &ec)
{
    return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system;
}

std::string fd_exhaustion_text()
{
    return "pytun is out of file descriptors (limit " + std::to_string(soft_limit()) +
           "): this is pytun's own limit, not the peer's fault; raise LimitNOFILE in the service unit (or ulimit -n)";
}

} // namespace detail

DescriptorLimit raise_descriptor_limit(std::string &message)
{
    DescriptorLimit out;
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        message = std::string("cannot read the descriptor limit: ") + std::strerror(errno);
        return out;
    }
    out.before = out.soft = rl.rlim_cur;
    out.hard = rl.rlim_max;
    if (rl.rlim_cur >= rl.rlim_max) {
        message = "descriptor limit " + std::to_string(out.soft);
        return out;
    }
    rlim_t target = rl.rlim_max;
    if (target == RLIM_INFINITY) {
        // The kernel caps descriptors at fs.nr_open whatever the limit says.
        std::uint64_t nr_open = 1u << 20;
        std::ifstream("/proc/sys/fs/nr_open") >> nr_open;
        target = static_cast<rlim_t>(nr_open);
    }
    rlimit raised{target, rl.rlim_max};
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
        message = "descriptor limit " + std::to_string(out.soft) + " (raising it to " + std::to_string(target) +
                  " failed: " + std::strerror(errno) + ")";
        return out;
    }
    out.soft = target;
    message = "descriptor limit raised from " + std::to_string(out.before) + " to " + std::to_string(out.soft);
    return out;
}

std::uint64_t descriptors_needed(std::size_t tunnels)
{
    return detail::k_fds_base + tunnels * detail::k_fds_per_tunnel + detail::k_fds_status_server_default;
}

std::string descriptor_limit_warning(std::uint64_t limit, std::size_t tunnels)
{
    const std::uint64_t needed =
        descriptors_needed(tunnels) + tunnels * detail::k_min_connections_per_tunnel;
    if (limit >= needed)
        return {};
    return "the descriptor limit " + std::to_string(limit) + " cannot hold " + std::to_string(tunnels) +
           " tunnel(s): pytun needs " + std::to_string(descriptors_needed(tunnels)) +
           " for itself (3 per tunnel, " + std::to_string(detail::k_fds_base) + " of its own, " +
           std::to_string(detail::k_fds_status_server_default) +
           " for the status API) and one per forwarded connection (at least " + std::to_string(needed) +
           " for " + std::to_string(detail::k_min_connections_per_tunnel) +
           " connections per tunnel); raise LimitNOFILE in the service unit (or ulimit -n)";
}

DescriptorStats descriptor_stats()
{
    auto &b = detail::FdBudget::instance();
    DescriptorStats s;
    s.limit = b.limit();
    s.reserved = b.reserved();
    s.forwarded = b.forwarded();
    s.exhausted_total = b.exhausted_total();
    s.refused_total = b.refused_total();
    return s;
}

} // namespace pytun
