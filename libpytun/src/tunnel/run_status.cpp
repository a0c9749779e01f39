// SPDX-License-Identifier: MIT
// A tunnel run's published state.
#include "tunnel/run_status.h"

namespace pytun::detail {

RunStatus::RunStatus(const std::vector<ForwardSpec> &forwards)
{
    for (const auto &spec : forwards) {
        ForwardStatus row;
        row.description = describe(spec);
        rows_.push_back(std::move(row));
        counters_.push_back(std::make_shared<TrafficCounters>());
    }
}

void RunStatus::set_serving(std::size_t forward, std::uint16_t bound_port)
{
    std::lock_guard lock(mutex_);
    rows_[forward].serving = true;
    rows_[forward].bound_port = bound_port;
    rows_[forward].error.clear();
}

void RunStatus::set_failed(std::size_t forward, const std::string &error)
{
    std::lock_guard lock(mutex_);
    rows_[forward].serving = false;
    rows_[forward].error = error;
}

void RunStatus::set_detail(std::size_t forward, const std::string &detail)
{
    std::lock_guard lock(mutex_);
    rows_[forward].detail = detail;
}

std::vector<ForwardStatus> RunStatus::forwards() const
{
    std::vector<ForwardStatus> out;
    {
        std::lock_guard lock(mutex_);
        out = rows_;
    }
    for (std::size_t i = 0; i < out.size(); ++i)
        out[i].traffic = counters_[i]->snapshot();
    return out;
}

TunnelStats RunStatus::total() const
{
    TunnelStats sum;
    for (const auto &c : counters_) {
        const TunnelStats s = c->snapshot();
        sum.connections_active += s.connections_active;
        sum.connections_total += s.connections_total;
        sum.connections_failed += s.connections_failed;
        sum.connections_refused += s.connections_refused;
        sum.bytes_to_service += s.bytes_to_service;
        sum.bytes_from_service += s.bytes_from_service;
        for (std::size_t i = 0; i < sum.connection_setup.counts.size(); ++i)
            sum.connection_setup.counts[i] += s.connection_setup.counts[i];
        sum.connection_setup.count += s.connection_setup.count;
        sum.connection_setup.sum_seconds += s.connection_setup.sum_seconds;
    }
    return sum;
}

} // namespace pytun::detail
