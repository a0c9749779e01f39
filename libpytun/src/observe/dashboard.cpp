// SPDX-License-Identifier: MIT
// The /ui dashboard: one page with inline CSS and JS, no external assets, so
// it works on a machine without Internet access and under a strict CSP.
#include "observe/render.h"

#include <string_view>

namespace pytun::detail {

namespace {

// The first rows come inlined (so the page shows data at once, also if a
// poll fails); the script then polls /api/v1/tunnels every two seconds and
// derives throughput from the byte counters of two polls. Sorting and
// filtering live in the URL's fragment (#sort=-uptime&q=ldap&state=up), so a
// view can be bookmarked and survives a reload. Every value from the server
// is put in with textContent, never as HTML: tunnel names and error messages
// come from files and peers.
constexpr std::string_view k_head = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pytun</title>
<style>
  :root { --bg:#f6f7f9; --fg:#1d2430; --muted:#687385; --line:#dde1e7; --card:#fff;
          --up:#1f9d55; --degraded:#d69e2e; --connecting:#3182ce; --backing_off:#e53e3e; --stopped:#718096; --standby:#805ad5; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
  header { display:flex; align-items:baseline; gap:16px; padding:16px 24px; background:var(--card); border-bottom:1px solid var(--line); }
  header h1 { margin:0; font-size:20px; }
  header .meta { color:var(--muted); }
  #summary { display:flex; gap:12px; padding:16px 24px 0; flex-wrap:wrap; }
  .pill { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px 14px; font:inherit; color:inherit; cursor:pointer; }
  .pill b { font-size:18px; margin-right:6px; }
  .pill.selected { border-color:var(--fg); box-shadow: inset 0 0 0 1px var(--fg); }
  .pill[data-state="backing_off"] b { color:var(--backing_off); }
  .pill[data-state="degraded"] b { color:var(--degraded); }
  #tools { display:flex; gap:16px; align-items:center; padding:12px 24px 0; }
  #filter { width:320px; padding:7px 10px; border:1px solid var(--line); border-radius:6px; font:inherit; }
  #shown { color:var(--muted); }
  main { padding:12px 24px 16px; }
  table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  th, td { text-align:left; padding:9px 12px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; background:#fafbfc; white-space:nowrap; }
  th[data-sort] { cursor:pointer; user-select:none; }
  th[aria-sort="ascending"]::after { content:" ▲"; }
  th[aria-sort="descending"]::after { content:" ▼"; }
  tr:last-child td { border-bottom:none; }
  td.num { font-variant-numeric: tabular-nums; white-space:nowrap; }
  .state { display:inline-flex; align-items:center; gap:6px; font-weight:600; white-space:nowrap; }
  .dot { width:10px; height:10px; border-radius:50%; background:var(--stopped); }
  tr[data-state="up"] .dot { background:var(--up); }
  tr[data-state="degraded"] .dot { background:var(--degraded); }
  tr[data-state="connecting"] .dot { background:var(--connecting); }
  tr[data-state="backing_off"] .dot { background:var(--backing_off); }
  tr[data-state="standby"] .dot { background:var(--standby); }
  tr[data-state="up"] td:first-child { box-shadow: inset 4px 0 var(--up); }
  tr[data-state="degraded"] td:first-child { box-shadow: inset 4px 0 var(--degraded); }
  tr[data-state="connecting"] td:first-child { box-shadow: inset 4px 0 var(--connecting); }
  tr[data-state="backing_off"] td:first-child { box-shadow: inset 4px 0 var(--backing_off); }
  tr[data-state="stopped"] td:first-child { box-shadow: inset 4px 0 var(--stopped); }
  tr[data-state="standby"] td:first-child { box-shadow: inset 4px 0 var(--standby); }
  .sub { color:var(--muted); font-size:12px; }
  .error { max-width:420px; word-break:break-word; }
  .error.current { color:#9b2c2c; }
  .error.old { color:var(--muted); }
  .forwards { margin:4px 0 0; padding:0; list-style:none; font-size:12px; }
  .forward { color:var(--muted); white-space:nowrap; }
  .forward.failed { color:#9b2c2c; white-space:normal; }
  #status { color:var(--muted); padding:0 24px 16px; }
  #status.stale { color:#c53030; font-weight:600; }
</style>
</head>
<body data-updates="0">
<header><h1>pytun</h1><span class="meta" id="manager"></span><span class="meta" id="version"></span></header>
<section id="summary"></section>
<div id="tools"><input id="filter" type="search" placeholder="filter: name, host, port, error" aria-label="filter tunnels"><span id="shown"></span></div>
<main>
<table id="tunnels">
<thead><tr><th data-sort="name">Tunnel</th><th data-sort="state">State</th><th data-sort="uptime">Uptime</th><th data-sort="connections">Connections</th><th data-sort="throughput">Throughput</th><th data-sort="traffic">Traffic</th><th data-sort="service">Service</th><th data-sort="error">Last error</th></tr></thead>
<tbody></tbody>
</table>
</main>
<div id="status">loading…</div>
<script id="initial" type="application/json">)HTML";

constexpr std::string_view k_tail = R"HTML(</script>
<script>
"use strict";
(function () {
  const STATE_TEXT = { up: "up", degraded: "degraded", connecting: "connecting", backing_off: "backing off", stopped: "stopped",
                       standby: "standby" };
  // Problems first: the default order, and the order of the state column.
  // A standby is well (another connector serves the port): just before up.
  const SEVERITY = { backing_off: 0, degraded: 1, connecting: 2, stopped: 3, standby: 4, up: 5 };
  const tbody = document.querySelector("#tunnels tbody");
  const statusLine = document.getElementById("status");
  const filterBox = document.getElementById("filter");
  let previous = null;  // the last reply, for throughput
  let latest = null;    // the reply shown
  let view = { sort: "state", descending: false, q: "", state: "" };

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = value;
    return el;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.max(0, Math.floor(seconds));
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
  function rates(now, before, seconds) {
    if (!before || seconds <= 0) return null;
    return { down: Math.max(0, now.bytes.to_service - before.bytes.to_service) / seconds,
             up: Math.max(0, now.bytes.from_service - before.bytes.from_service) / seconds };
  }
  function clock(unixSeconds) {
    const d = new Date(unixSeconds * 1000);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  // An error is current while it explains the state (backing off, degraded,
  // retrying); once the tunnel is up again it is history, shown but not red.
  function errorIsCurrent(t) {
    return t.last_error !== null && (t.state === "backing_off" || t.state === "degraded" || t.state === "connecting");
  }

  // --- the view: #sort=KEY or -KEY, q=TEXT, state=STATE ---------------------
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const sort = p.get("sort") || "state";
    view = { sort: sort.replace(/^-/, ""), descending: sort.startsWith("-"), q: p.get("q") || "", state: p.get("state") || "" };
    if (filterBox.value !== view.q) filterBox.value = view.q;
  }
  function writeHash() {
    const p = new URLSearchParams();
    if (view.sort !== "state" || view.descending) p.set("sort", (view.descending ? "-" : "") + view.sort);
    if (view.q) p.set("q", view.q);
    if (view.state) p.set("state", view.state);
    const hash = p.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
    show();
  }

  const SORT_KEYS = {
    name: (t) => t.name.toLowerCase(),
    state: (t) => SEVERITY[t.state] === undefined ? 9 : SEVERITY[t.state],
    uptime: (t) => t.uptime_seconds === null ? -1 : t.uptime_seconds,
    connections: (t) => t.connections.active * 1e12 + t.connections.total,
    throughput: (t) => t.rate ? t.rate.down + t.rate.up : -1,
    traffic: (t) => t.bytes.to_service + t.bytes.from_service,
    service: (t) => !t.service.checked ? 1 : t.service.reachable ? 2 : 0,
    error: (t) => t.last_error && t.last_error.time !== null ? t.last_error.time : 0,
  };
  function compare(a, b) {
    const key = SORT_KEYS[view.sort] || SORT_KEYS.state;
    const x = key(a), y = key(b);
    let c = x < y ? -1 : x > y ? 1 : 0;
    if (view.descending) c = -c;
    return c || a.name.localeCompare(b.name);
  }
  function matches(t) {
    if (view.state && t.state !== view.state) return false;
    if (!view.q) return true;
    const hay = [t.name, t.server_host + ":" + t.listen_port, t.bastion || "", t.remote_host + ":" + t.remote_port,
                 t.last_error ? t.last_error.message : ""]
                .concat(t.forwards.map((f) => f.description + "\n" + (f.error || ""))).join("\n").toLowerCase();
    return hay.includes(view.q.toLowerCase());
  }

  function row(t, now) {
    const tr = document.createElement("tr");
    tr.dataset.tunnel = t.name;
    tr.dataset.state = t.state;
    const name = document.createElement("td");
    name.appendChild(text("div", t.name));
    // The bastion that serves (or served last: a failover list names
    // several), else the configured one.
    if (t.remote_host) {
      const host = t.bastion ? t.bastion.slice(0, t.bastion.lastIndexOf(":")) : t.server_host;
      const bastion = host + ":" + (t.listen_port ? t.listen_port : "…");
      name.appendChild(text("div", bastion + " → " + t.remote_host + ":" + t.remote_port, "sub"));
    } else {
      name.appendChild(text("div", "via " + (t.bastion || t.server_host + ":" + t.server_port), "sub"));
    }
    // The forwards, unless the reverse tunnel of the line above is the only one.
    if (t.forwards.length > (t.remote_host ? 1 : 0)) {
      const list = document.createElement("ul");
      list.className = "forwards";
      for (const f of t.forwards) {
        const state = f.serving ? "port " + f.bound_port + ", " + f.connections.active + " open"
                                : "NOT serving: " + (f.error || "starting");
        const item = text("li", f.description + " · " + state, "forward " + (f.serving ? "serving" : "failed"));
        list.appendChild(item);
      }
      name.appendChild(list);
    }
    tr.appendChild(name);
    const state = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "state";
    badge.appendChild(text("span", "", "dot"));
    badge.appendChild(text("span", STATE_TEXT[t.state] || t.state, "state-text"));
    state.appendChild(badge);
    if (t.state === "backing_off" && t.backoff_seconds !== null)
      state.appendChild(text("div", "retry in " + duration(t.backoff_seconds), "sub"));
    if (t.state === "standby")
      state.appendChild(text("div", "another connector serves the port", "sub"));
    if (t.takeovers > 0)
      state.appendChild(text("div", t.takeovers + " takeover" + (t.takeovers > 1 ? "s" : ""), "sub takeovers"));
    tr.appendChild(state);
    tr.appendChild(text("td", duration(t.uptime_seconds), "num uptime"));
    const conns = document.createElement("td");
    conns.className = "num connections";
    conns.appendChild(text("div", t.connections.active + " open"));
    conns.appendChild(text("div", t.connections.total + " total, " + t.connections.failed + " failed", "sub"));
    if (t.sessions > 1) conns.appendChild(text("div", t.sessions + " SSH sessions", "sub sessions"));
    tr.appendChild(conns);
    tr.appendChild(text("td", t.rate ? "↓ " + bytes(t.rate.down) + "/s  ↑ " + bytes(t.rate.up) + "/s" : "–",
                        "num throughput"));
    const traffic = document.createElement("td");
    traffic.className = "num";
    traffic.appendChild(text("div", "in " + bytes(t.bytes.to_service)));
    traffic.appendChild(text("div", "out " + bytes(t.bytes.from_service), "sub"));
    tr.appendChild(traffic);
    let service = "not checked";
    if (t.service.checked) service = t.service.reachable ? "reachable" : "unreachable";
    else if (!t.remote_host) service = "none (forwards only)";
    const svc = text("td", service, "service");
    if (t.probe_rtt_seconds !== null) svc.appendChild(text("div", "probe " + (t.probe_rtt_seconds * 1000).toFixed(1) + " ms", "sub"));
    tr.appendChild(svc);
    const error = document.createElement("td");
    if (t.last_error) {
      error.className = "error " + (errorIsCurrent(t) ? "current" : "old");
      error.appendChild(text("div", t.last_error.message));
      if (t.last_error.time !== null) {
        const when = text("div", duration(now - t.last_error.time) + " ago" + (errorIsCurrent(t) ? "" : ", before it came back"),
                          "sub when");
        when.title = clock(t.last_error.time);
        error.dataset.time = String(t.last_error.time);
        error.appendChild(when);
      }
    } else {
      error.className = "error";
    }
    tr.appendChild(error);
    return tr;
  }

  function show() {
    if (!latest) return;
    const data = latest;
    // standby gets a pill only when a tunnel is in it (few connectors have standbys).
    const counts = { up: 0, degraded: 0, connecting: 0, backing_off: 0, stopped: 0 };
    for (const t of data.tunnels) counts[t.state] = (counts[t.state] || 0) + 1;
    const shown = data.tunnels.filter(matches).sort(compare);
    const rows = document.createDocumentFragment();
    for (const t of shown) rows.appendChild(row(t, data.generated_at));
    tbody.replaceChildren(rows);
    document.getElementById("shown").textContent = "showing " + shown.length + " of " + data.tunnels.length + " tunnels";
    for (const th of document.querySelectorAll("th[data-sort]")) {
      if (th.dataset.sort === view.sort) th.setAttribute("aria-sort", view.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
    const pills = document.createDocumentFragment();
    for (const key of Object.keys(counts)) {
      const pill = document.createElement("button");
      pill.className = "pill" + (view.state === key ? " selected" : "");
      pill.dataset.state = key;
      pill.title = view.state === key ? "show every state" : "show only " + STATE_TEXT[key];
      pill.appendChild(text("b", String(counts[key])));
      pill.appendChild(text("span", STATE_TEXT[key]));
      pills.appendChild(pill);
    }
    document.getElementById("summary").replaceChildren(pills);
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
    for (const t of data.tunnels) t.rate = rates(t, before[t.name], elapsed);
    previous = data;
    latest = data;
    show();
  }

  document.querySelector("#tunnels thead").addEventListener("click", (e) => {
    const th = e.target.closest("th[data-sort]");
    if (!th) return;
    // The same column again reverses the order.
    view.descending = view.sort === th.dataset.sort ? !view.descending : false;
    view.sort = th.dataset.sort;
    writeHash();
  });
  document.getElementById("summary").addEventListener("click", (e) => {
    const pill = e.target.closest(".pill");
    if (!pill) return;
    view.state = view.state === pill.dataset.state ? "" : pill.dataset.state;
    writeHash();
  });
  filterBox.addEventListener("input", () => { view.q = filterBox.value.trim(); writeHash(); });
  window.addEventListener("hashchange", () => { readHash(); show(); });

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

  readHash();
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
