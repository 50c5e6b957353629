// The live status page served at `/` on the monitoring port (targets/http.ts): one HTML
// document with its CSS and script inline (no CDN: it must work on a gateway without
// internet), polling /varz, /leafz and /connz every 2 s and keeping the last 5 minutes of
// rates in the browser (nothing is kept in the broker for it). Also the small /varz section
// it needs beyond nats-server's fields (pageStatus). Plain data, no I/O.

import type { Server } from './server.ts'

/**
 * /varz `sprig.page`: connections by protocol (the WebSocket ones are also in
 * `sprig.websocket`) and each uplink remote's buffer limits, so the page can show how full
 * the spool is. Counting walks the sessions: ~1 µs per 100 connections, per request.
 */
export function pageStatus(srv: Server): Record<string, unknown> {
  const byKind: Record<string, number> = {}
  for (const s of srv.sessions.values()) byKind[s.kind] = (byKind[s.kind] ?? 0) + 1
  const remotes = srv.opts.leafnodes?.remotes ?? []
  return {
    by_kind: byKind,
    leaf_buffer_max: remotes.map((r) => ({ msgs: r.buffer_max_msgs, bytes: r.buffer_max_bytes })),
  }
}

/** Response headers for the page: nothing but itself may run, be framed or be fetched from. */
export const STATUS_PAGE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
})

// The page. Its script avoids template literals so this file can hold it as one.
export const STATUS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>sprig status</title>
<style>
:root{--bg:#f5f6f4;--fg:#1d2420;--mut:#66706a;--card:#fff;--line:#dde2dd;--ok:#2e8540;--warn:#b7791f;--bad:#c53030;--in:#2b6cb0;--out:#2e8540}
@media (prefers-color-scheme:dark){:root{--bg:#151917;--fg:#e4e9e5;--mut:#9aa59e;--card:#1e2421;--line:#313a35}}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:baseline;padding:.8em 1em;border-bottom:1px solid var(--line);background:var(--card)}
h1{font-size:1.2em;margin:0;overflow-wrap:anywhere}h2{font-size:1em;margin:1.2em 0 .5em}.mut{color:var(--mut)}
main{padding:0 1em 2em;max-width:1100px;margin:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.6em}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.6em .8em;min-width:0}
.card b{display:block;font-size:1.5em;font-variant-numeric:tabular-nums;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.card span{color:var(--mut);font-size:.85em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:.6em}
canvas{width:100%;height:90px;display:block}
.legend{font-size:.8em;color:var(--mut)}.legend i{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin:0 .3em 0 .6em;vertical-align:-1px}
.tbl{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid var(--line);white-space:nowrap}th{font-weight:600;color:var(--mut);font-size:.85em}
tr:last-child td{border-bottom:0}
.st{display:inline-block;padding:0 .5em;border-radius:1em;color:#fff;font-size:.85em}
.st.connected,.st.ok{background:var(--ok)}.st.connecting,.st.handshake,.st.warn{background:var(--warn)}.st.disconnected,.st.stopped,.st.bad{background:var(--bad)}
.bar{height:.5em;background:var(--line);border-radius:.25em;min-width:60px;overflow:hidden}.bar>div{height:100%;background:var(--in)}
.bar.hi>div{background:var(--bad)}
.nz{color:var(--bad);font-weight:600}
#err{display:none;background:var(--bad);color:#fff;padding:.5em 1em}
</style></head><body>
<div id="err"></div>
<header><h1 id="name">sprig</h1><span class="mut" id="ver"></span><span class="mut" id="up"></span><span class="mut" id="upd"></span></header>
<main>
<h2>Now</h2>
<div class="grid" id="cards"></div>
<h2>Last minutes</h2>
<div class="charts">
<div class="card"><span>Messages/s</span><span class="legend"><i style="background:var(--in)"></i>in<i style="background:var(--out)"></i>out</span><canvas id="c-msgs"></canvas></div>
<div class="card"><span>Bytes/s</span><span class="legend"><i style="background:var(--in)"></i>in<i style="background:var(--out)"></i>out</span><canvas id="c-bytes"></canvas></div>
<div class="card"><span>Connections</span><canvas id="c-conns"></canvas></div>
</div>
<section id="uplinks" hidden><h2>Uplinks</h2><div class="tbl"><table><thead><tr><th>Remote</th><th>State</th><th>Hub</th><th>Since</th><th>Spool</th><th>Fill</th><th>Dropped</th><th>Reconnects</th><th>Last error</th></tr></thead><tbody id="leafs"></tbody></table></div></section>
<section id="store" hidden><h2>Store</h2><div class="grid" id="storecards"></div></section>
<h2>Drops and refusals</h2>
<div class="tbl"><table><thead><tr><th>Counter</th><th>Count</th></tr></thead><tbody id="drops"></tbody></table></div>
<h2>Connections <span class="mut" id="connsum"></span></h2>
<div class="tbl"><table><thead><tr><th>cid</th><th>Type</th><th>Client</th><th>Address</th><th>User</th><th>Subs</th><th>In</th><th>Out</th><th>Pending</th><th>Idle</th></tr></thead><tbody id="conns"></tbody></table></div>
<p class="mut">JSON: <a href="varz">/varz</a> · <a href="connz">/connz</a> · <a href="leafz">/leafz</a> · <a href="healthz">/healthz</a></p>
</main>
<script>
"use strict";
var POLL = 2000, KEEP = 150; // 5 minutes of points
var hist = {t: [], mi: [], mo: [], bi: [], bo: [], c: []};
var prev = null;
function $(id) { return document.getElementById(id); }
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }); }
function num(n) {
  if (n == null || isNaN(n)) return "-";
  var a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return a < 10 && n % 1 ? n.toFixed(1) : String(Math.round(n));
}
function bytes(n) {
  if (n == null || isNaN(n)) return "-";
  var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + u[i];
}
function card(label, value, sub, cls) {
  return '<div class="card"><span>' + esc(label) + '</span><b' + (cls ? ' class="' + cls + '"' : '') + '>' + esc(value) + '</b><span>' + esc(sub || "") + '</span></div>';
}
function get(path) {
  return fetch(path, {cache: "no-store"}).then(function (r) { if (!r.ok) throw new Error(path + ": HTTP " + r.status); return r.json(); });
}
function push(k, v) { var a = hist[k]; a.push(v); if (a.length > KEEP) a.shift(); }
function ago(iso) {
  if (!iso) return "";
  var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor(s % 3600 / 60) + "m ago";
  return Math.floor(s / 86400) + "d ago";
}
// Counters that mean something was dropped, refused or cut short, from anywhere in sprig's sections.
var DROP = /drop|refus|slow|violation|expired|oversize|timeout|stall|unmappable|evict|error|mem_closes|mem_pauses/;
function drops(varz) {
  var out = [["slow_consumers", varz.slow_consumers]];
  (function walk(o, p) {
    for (var k in o) {
      var v = o[k], name = p ? p + "." + k : k;
      if (typeof v === "number" && DROP.test(k)) out.push([name, v]);
      else if (v && typeof v === "object" && !Array.isArray(v) && p.split(".").length < 3) walk(v, name);
    }
  })(varz.sprig || {}, "");
  return out.sort(function (a, b) { return (b[1] ? 1 : 0) - (a[1] ? 1 : 0); }); // the ones that happened first
}
function draw(id, series, colors) {
  var cv = $(id), dpr = window.devicePixelRatio || 1, w = cv.clientWidth, h = cv.clientHeight;
  if (cv.width !== w * dpr) { cv.width = w * dpr; cv.height = h * dpr; }
  var g = cv.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  var max = 1;
  series.forEach(function (s) { s.forEach(function (v) { if (v > max) max = v; }); });
  var css = getComputedStyle(document.documentElement);
  g.fillStyle = css.getPropertyValue("--mut"); g.font = "10px system-ui";
  g.fillText(num(max), 2, 10);
  series.forEach(function (s, i) {
    g.strokeStyle = css.getPropertyValue(colors[i]).trim() || "#888"; g.lineWidth = 1.5; g.beginPath();
    s.forEach(function (v, j) {
      var x = w - (s.length - 1 - j) * (w / (KEEP - 1)), y = h - 2 - (v / max) * (h - 14);
      if (j) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  });
}
function render(varz, leafz, connz) {
  var sp = varz.sprig || {}, ws = sp.websocket || {}, kinds = (sp.page && sp.page.by_kind) || {};
  $("name").textContent = varz.server_name || "sprig";
  $("ver").textContent = "v" + varz.version;
  $("up").textContent = "up " + varz.uptime;
  document.title = (varz.server_name || "sprig") + " status";
  var now = Date.parse(varz.now) || Date.now(), rate = {mi: 0, mo: 0, bi: 0, bo: 0};
  if (prev && now > prev.t) {
    var dt = (now - prev.t) / 1000;
    rate = {mi: (varz.in_msgs - prev.mi) / dt, mo: (varz.out_msgs - prev.mo) / dt, bi: (varz.in_bytes - prev.bi) / dt, bo: (varz.out_bytes - prev.bo) / dt};
    ["mi", "mo", "bi", "bo"].forEach(function (k) { push(k, Math.max(0, rate[k])); });
    push("c", varz.connections);
  }
  prev = {t: now, mi: varz.in_msgs, mo: varz.out_msgs, bi: varz.in_bytes, bo: varz.out_bytes};
  var natsWs = ws.nats || 0, mqttWs = ws.mqtt || 0;
  var c = card("Connections", num(varz.connections), "of " + num(varz.max_connections) + " max", "") +
    card("NATS", num((kinds.nats || 0) - natsWs), "TCP", "") +
    card("NATS WebSocket", ws.port ? num(natsWs) : "off", ws.port ? (ws.tls ? "wss" : "ws") + " :" + ws.port : "", "") +
    card("MQTT", num((kinds.mqtt || 0) - mqttWs), "TCP", "") +
    card("MQTT WebSocket", ws.port ? num(mqttWs) : "off", ws.port ? "/mqtt" : "", "") +
    card("Messages in/s", num(rate.mi), num(varz.in_msgs) + " total", "") +
    card("Messages out/s", num(rate.mo), num(varz.out_msgs) + " total", "") +
    card("Bytes in/s", bytes(rate.bi), bytes(varz.in_bytes) + " total", "") +
    card("Bytes out/s", bytes(rate.bo), bytes(varz.out_bytes) + " total", "") +
    card("Subscriptions", num(varz.subscriptions), "", "") +
    card("Slow consumers", num(varz.slow_consumers), "", varz.slow_consumers ? "nz" : "") +
    card("Memory", bytes(varz.mem), sp.max_memory ? bytes(sp.mem_held) + " held of " + bytes(sp.max_memory) : "", "");
  if (sp.mqtt) c += card("MQTT sessions", num(sp.mqtt.sessions_live + sp.mqtt.sessions_parked), num(sp.mqtt.sessions_parked) + " parked", "") + card("Retained", num(sp.mqtt.retained_msgs), bytes(sp.mqtt.retained_bytes), "");
  $("cards").innerHTML = c;
  draw("c-msgs", [hist.mi, hist.mo], ["--in", "--out"]);
  draw("c-bytes", [hist.bi, hist.bo], ["--in", "--out"]);
  draw("c-conns", [hist.c], ["--in"]);
  var leafs = (leafz && leafz.leafs) || [], max = (sp.page && sp.page.leaf_buffer_max) || [];
  $("uplinks").hidden = leafs.length === 0;
  $("leafs").innerHTML = leafs.map(function (l, i) {
    var m = max[l.remote != null ? l.remote : i] || {}, fill = m.bytes ? Math.max(l.buffered_bytes / m.bytes, m.msgs ? l.buffered_msgs / m.msgs : 0) : 0;
    var pct = Math.min(100, Math.round(fill * 100));
    return "<tr><td>" + esc(l.url || (l.urls || [])[0] || "remote " + i) + '</td><td><span class="st ' + esc(l.state) + '">' + esc(l.state) + "</span></td><td>" +
      esc(l.name) + "</td><td title=\\"" + esc(l.since) + "\\">" + esc(ago(l.since)) + "</td><td>" + num(l.buffered_msgs) + " / " + bytes(l.buffered_bytes) +
      '</td><td><div class="bar' + (pct > 80 ? " hi" : "") + '" title="' + pct + '%"><div style="width:' + pct + '%"></div></div></td><td' + (l.dropped_msgs ? ' class="nz"' : "") + ">" + num(l.dropped_msgs) +
      "</td><td>" + num(l.reconnects) + "</td><td>" + esc(l.last_error) + "</td></tr>";
  }).join("");
  var st = sp.store;
  $("store").hidden = !st || typeof st !== "object";
  if (st && typeof st === "object") {
    var sc = "";
    for (var k in st) if (typeof st[k] === "number" || typeof st[k] === "string") sc += card(k.replace(/_/g, " "), /bytes|size/.test(k) ? bytes(st[k]) : typeof st[k] === "number" ? num(st[k]) : st[k], "", DROP.test(k) && st[k] ? "nz" : "");
    $("storecards").innerHTML = sc;
  }
  $("drops").innerHTML = drops(varz).map(function (d) { return "<tr><td>" + esc(d[0]) + "</td><td" + (d[1] ? ' class="nz"' : "") + ">" + num(d[1]) + "</td></tr>"; }).join("");
  var cs = (connz && connz.connections) || [];
  $("connsum").textContent = connz ? "(" + cs.length + " of " + connz.total + ")" : "";
  $("conns").innerHTML = cs.map(function (x) {
    return "<tr><td>" + x.cid + "</td><td>" + esc(x.type) + "</td><td>" + esc(x.mqtt_client || x.name || "") + "</td><td>" + esc(x.ip + ":" + x.port) + "</td><td>" + esc(x.authorized_user || "") +
      "</td><td>" + num(x.subscriptions) + "</td><td>" + num(x.in_msgs) + "</td><td>" + num(x.out_msgs) + "</td><td>" + bytes(x.pending_bytes) + "</td><td>" + esc(x.idle) + "</td></tr>";
  }).join("");
}
var busy = false;
function poll() {
  if (busy || document.hidden) return;
  busy = true;
  Promise.all([get("varz"), get("leafz").catch(function () { return null; }), get("connz?limit=50").catch(function () { return null; })])
    .then(function (r) { $("err").style.display = "none"; render(r[0], r[1], r[2]); $("upd").textContent = "updated " + new Date().toLocaleTimeString(); })
    .catch(function (e) { var el = $("err"); el.textContent = "Cannot reach the broker: " + e.message; el.style.display = "block"; })
    .then(function () { busy = false; });
}
poll();
setInterval(poll, POLL);
document.addEventListener("visibilitychange", poll);
</script>
</body></html>
`
