// SPDX-License-Identifier: MIT
// The /ui dashboard: one page with inline CSS and JS, no external assets, so
// it works on a machine without Internet access and under a strict CSP.
#include "observe/render.h"

#include <string_view>

namespace pytun::detail {

namespace {

// The first rows come inlined (so the page shows data at once, also if a
// poll fails); the script then polls /api/v1/tunnels every two seconds and
// derives throughput from the byte counters of two polls. Every value from
// the server is put in with textContent, never as HTML: tunnel names and
// error messages come from files and peers.
constexpr std::string_view k_head = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pytun</title>
<style>
  :root { --bg:#f6f7f9; --fg:#1d2430; --muted:#687385; --line:#dde1e7; --card:#fff;
          --up:#1f9d55; --degraded:#d69e2e; --connecting:#3182ce; --backing_off:#e53e3e; --stopped:#718096; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
  header { display:flex; align-items:baseline; gap:16px; padding:16px 24px; background:var(--card); border-bottom:1px solid var(--line); }
  header h1 { margin:0; font-size:20px; }
  header .meta { color:var(--muted); }
  #summary { display:flex; gap:12px; padding:16px 24px 0; flex-wrap:wrap; }
  .pill { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px 14px; }
  .pill b { font-size:18px; margin-right:6px; }
  main { padding:16px 24px; }
  table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  th, td { text-align:left; padding:9px 12px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; background:#fafbfc; }
  tr:last-child td { border-bottom:none; }
  td.num { font-variant-numeric: tabular-nums; white-space:nowrap; }
  .state { display:inline-flex; align-items:center; gap:6px; font-weight:600; white-space:nowrap; }
  .dot { width:10px; height:10px; border-radius:50%; background:var(--stopped); }
  tr[data-state="up"] .dot { background:var(--up); }
  tr[data-state="degraded"] .dot { background:var(--degraded); }
  tr[data-state="connecting"] .dot { background:var(--connecting); }
  tr[data-state="backing_off"] .dot { background:var(--backing_off); }
  tr[data-state="up"] td:first-child { box-shadow: inset 4px 0 var(--up); }
  tr[data-state="degraded"] td:first-child { box-shadow: inset 4px 0 var(--degraded); }
  tr[data-state="connecting"] td:first-child { box-shadow: inset 4px 0 var(--connecting); }
  tr[data-state="backing_off"] td:first-child { box-shadow: inset 4px 0 var(--backing_off); }
  tr[data-state="stopped"] td:first-child { box-shadow: inset 4px 0 var(--stopped); }
  .sub { color:var(--muted); font-size:12px; }
  .error { color:#9b2c2c; max-width:420px; word-break:break-word; }
  #status { color:var(--muted); padding:0 24px 16px; }
  #status.stale { color:#c53030; font-weight:600; }
</style>
</head>
<body data-updates="0">
<header><h1>pytun</h1><span class="meta" id="manager"></span><span class="meta" id="version"></span></header>
<section id="summary"></section>
<main>
<table id="tunnels">
<thead><tr><th>Tunnel</th><th>State</th><th>Uptime</th><th>Connections</th><th>Throughput</th><th>Traffic</th><th>Service</th><th>Last error</th></tr></thead>
<tbody></tbody>
</table>
</main>
<div id="status">loading…</div>
<script id="initial" type="application/json">)HTML";

constexpr std::string_view k_tail = R"HTML(</script>
<script>
"use strict";
(function () {
  const STATE_TEXT = { up: "up", degraded: "degraded", connecting: "connecting", backing_off: "backing off", stopped: "stopped" };
  const tbody = document.querySelector("#tunnels tbody");
  const statusLine = document.getElementById("status");
  let previous = null;  // the last reply, for throughput

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = value;
    return el;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.floor(seconds);
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
          m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function rate(now, before, seconds) {
    if (!before || seconds <= 0) return "–";
    const inRate = Math.max(0, now.bytes.to_service - before.bytes.to_service) / seconds;
    const outRate = Math.max(0, now.bytes.from_service - before.bytes.from_service) / seconds;
    return "↓ " + bytes(inRate) + "/s  ↑ " + bytes(outRate) + "/s";
  }

  function render(data) {
    document.getElementById("manager").textContent = "manager " + data.tunnel_manager_id;
    document.getElementById("version").textContent = "v" + data.version;
    const before = {};
    let elapsed = 0;
    if (previous) {
      for (const t of previous.tunnels) before[t.name] = t;
      elapsed = data.generated_at - previous.generated_at;
    }
    const counts = { up: 0, degraded: 0, connecting: 0, backing_off: 0, stopped: 0 };
    const rows = document.createDocumentFragment();
    for (const t of data.tunnels) {
      counts[t.state] = (counts[t.state] || 0) + 1;
      const tr = document.createElement("tr");
      tr.dataset.tunnel = t.name;
      tr.dataset.state = t.state;
      const name = document.createElement("td");
      name.appendChild(text("div", t.name));
      const bastion = t.server_host + ":" + (t.listen_port ? t.listen_port : "…");
      name.appendChild(text("div", bastion + " → " + t.remote_host + ":" + t.remote_port, "sub"));
      tr.appendChild(name);
      const state = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = "state";
      badge.appendChild(text("span", "", "dot"));
      badge.appendChild(text("span", STATE_TEXT[t.state] || t.state, "state-text"));
      state.appendChild(badge);
      if (t.state === "backing_off" && t.backoff_seconds !== null)
        state.appendChild(text("div", "retry in " + duration(t.backoff_seconds), "sub"));
      tr.appendChild(state);
      tr.appendChild(text("td", duration(t.uptime_seconds), "num uptime"));
      const conns = document.createElement("td");
      conns.className = "num connections";
      conns.appendChild(text("div", t.connections.active + " open"));
      conns.appendChild(text("div", t.connections.total + " total, " + t.connections.failed + " failed", "sub"));
      tr.appendChild(conns);
      tr.appendChild(text("td", rate(t, before[t.name], elapsed), "num throughput"));
      const traffic = document.createElement("td");
      traffic.className = "num";
      traffic.appendChild(text("div", "in " + bytes(t.bytes.to_service)));
      traffic.appendChild(text("div", "out " + bytes(t.bytes.from_service), "sub"));
      tr.appendChild(traffic);
      let service = "not checked";
      if (t.service.checked) service = t.service.reachable ? "reachable" : "unreachable";
      const svc = text("td", service, "service");
      if (t.probe_rtt_ms !== null) svc.appendChild(text("div", "probe " + t.probe_rtt_ms.toFixed(1) + " ms", "sub"));
      tr.appendChild(svc);
      tr.appendChild(text("td", t.last_error ? t.last_error.message : "", "error"));
      rows.appendChild(tr);
    }
    tbody.replaceChildren(rows);
    const summary = document.getElementById("summary");
    const pills = document.createDocumentFragment();
    for (const key of Object.keys(counts)) {
      const pill = document.createElement("div");
      pill.className = "pill";
      pill.dataset.state = key;
      pill.appendChild(text("b", String(counts[key])));
      pill.appendChild(text("span", STATE_TEXT[key]));
      pills.appendChild(pill);
    }
    summary.replaceChildren(pills);
    previous = data;
  }

  async function poll() {
    try {
      const reply = await fetch("/api/v1/tunnels", { cache: "no-store" });
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      render(await reply.json());
      document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
      statusLine.className = "";
      statusLine.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      statusLine.className = "stale";
      statusLine.textContent = "not updated: " + e.message;
    }
    setTimeout(poll, 2000);
  }

  render(JSON.parse(document.getElementById("initial").textContent));
  statusLine.textContent = "snapshot of page load";
  poll();
})();
</script>
</body>
</html>
)HTML";

} // namespace

std::string render_dashboard(const RenderContext &ctx, const Snapshot &snap)
{
    std::string json = render_tunnels(ctx, snap);
    // Inside <script>, "</" could close the element early: a tunnel named
    // "</script><script>..." must stay data.
    std::string safe;
    safe.reserve(json.size() + 16);
    for (std::size_t i = 0; i < json.size(); ++i) {
        if (json[i] == '<')
            safe += "\\u003c";
        else
            safe += json[i];
    }
    std::string page;
    page.reserve(k_head.size() + safe.size() + k_tail.size());
    page += k_head;
    page += safe;
    page += k_tail;
    return page;
}

} // namespace pytun::detail
