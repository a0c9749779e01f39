// SPDX-License-Identifier: MIT
// Replies of the inspection API built from one status snapshot: the original
// connector's JSON shapes, the richer /api/v1 JSON, Prometheus text and the
// dashboard page. Pure functions, so tests can check them without a socket.
#pragma once

#include "internal.h"

#include <chrono>
#include <string>
#include <vector>

#include <pytun/alerter.h>
#include <pytun/manager.h>
#include <pytun/resources.h>

#include "observe/process_metrics.h"

namespace pytun::detail {

/// What every reply is made from: taken once per request.
struct Snapshot {
    std::vector<TunnelStatus> tunnels;
    std::vector<AlertChannelStats> alerts;
    DescriptorStats descriptors;
    std::chrono::system_clock::time_point now;
};

struct RenderContext {
    std::string tunnel_manager_id;
    std::string version;
    std::string mac_address;                         ///< empty: null
    std::chrono::system_clock::time_point created_at;
};

/// Unix seconds as a float, as the original's time.time().
double unix_seconds(std::chrono::system_clock::time_point t);

/// `GET /` (and unknown paths): {"status": "ok", "version", "tunnel_manager_id"}.
std::string render_ping(const RenderContext &ctx);
/// `GET /status` in the original's shape.
std::string render_status(const RenderContext &ctx, const Snapshot &snap);
/// The original's error shape {"error", "tunnel_manager_id"}.
std::string render_error(const RenderContext &ctx, const std::string &error);
/// `GET /api/v1/tunnels`.
std::string render_tunnels(const RenderContext &ctx, const Snapshot &snap);
/// `GET /healthz`.
std::string render_healthz(const RenderContext &ctx, const Snapshot &snap);
/// `GET /readyz`; `ready` is set to whether every tunnel is up.
std::string render_readyz(const RenderContext &ctx, const Snapshot &snap, bool &ready);
/// `GET /metrics`, Prometheus text exposition format 0.0.4; `process` gives
/// the standard process_* metrics (left out when not `ok`).
std::string render_metrics(const RenderContext &ctx, const Snapshot &snap, const ProcessMetrics &process);
/// `GET /ui`: one self-contained page with the snapshot inlined.
std::string render_dashboard(const RenderContext &ctx, const Snapshot &snap);

/// A Prometheus label value with \\, \" and \\n escaped.
std::string escape_label(const std::string &value);

} // namespace pytun::detail
