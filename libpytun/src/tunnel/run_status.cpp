// SPDX-License-Identifier: MIT
// A tunnel run's published state, and the forward spec helpers of tunnel.h.
#include "tunnel/run_status.h"

namespace pytun {
namespace {

std::string endpoint(const std::string &host, std::uint16_t port)
{
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string bind_text(const std::string &bind, std::uint16_t port)
{
    return endpoint(bind.empty() ? std::string("localhost") : bind, port);
}

} // namespace

std::string describe(const ForwardSpec &forward)
{
    struct Text {
        std::string operator()(const RemoteForward &f) const
        {
            return "R " + bind_text(f.bind_address, f.listen_port) + " -> " + endpoint(f.target_host, f.target_port);
        }
        std::string operator()(const LocalForward &f) const
        {
            return "L " + bind_text(f.bind_address, f.listen_port) + " -> " + endpoint(f.target_host, f.target_port);
        }
        std::string operator()(const DynamicForward &f) const
        {
            return "D " + bind_text(f.bind_address, f.listen_port) + " (SOCKS)";
        }
        std::string operator()(const RemoteDynamicForward &f) const
        {
            return "R " + bind_text(f.bind_address, f.listen_port) + " (SOCKS)";
        }
    };
    return std::visit(Text{}, forward);
}

std::vector<ForwardSpec> all_forwards(const TunnelOptions &options)
{
    std::vector<ForwardSpec> out;
    if (!options.remote_host.empty())
        out.push_back(RemoteForward{options.bind_address, options.listen_port, options.remote_host,
                                    options.remote_port});
    out.insert(out.end(), options.forwards.begin(), options.forwards.end());
    return out;
}

} // namespace pytun

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
        sum.bytes_to_service += s.bytes_to_service;
        sum.bytes_from_service += s.bytes_from_service;
    }
    return sum;
}

} // namespace pytun::detail
