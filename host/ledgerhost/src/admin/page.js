// The status page: fetches /status and /status/history from this admin port every few
// seconds and draws them (tables as DOM tables, history as inline SVG). No library, no
// network beyond this port. Text goes in through textContent only.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const W = 420, H = 140, PAD_L = 44, PAD_R = 44, PAD_T = 10, PAD_B = 20;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function secs(micros, now) {
  return micros > 0 ? Math.max(0, (now - micros) / 1e6) : null;
}

function age(s) {
  if (s === null) return "–";
  if (s < 90) return s.toFixed(1) + " s";
  if (s < 5400) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function num(n) {
  return el("td", { class: "num" }, String(n));
}

function lastRate(series, name) {
  const s = series.find((x) => x.name === name);
  if (!s || s.samples.length === 0) return "–";
  return s.samples[s.samples.length - 1].rate.toFixed(1);
}

function fill(id, rows) {
  document.querySelector("#" + id + " tbody").replaceChildren(...rows);
}

// One plot: rate (solid, left axis) and lag (dashed, right axis) over the window.
function plot(kind, name, series, history, now) {
  const samples = (series.find((x) => x.name === name) || { samples: [] }).samples;
  const span = history.interval_secs * history.capacity * 1e6;
  const x0 = now - span;
  const g = svg("svg", {
    class: "plot", width: W, height: H, viewBox: `0 0 ${W} ${H}`,
    "data-kind": kind, "data-name": name, [`data-${kind}`]: name,
    role: "img", "aria-label": `${kind} ${name}: rate and lag, last 15 minutes`,
  });
  g.append(svg("rect", { x: PAD_L, y: PAD_T, width: W - PAD_L - PAD_R, height: H - PAD_T - PAD_B, fill: "#fcfcfc", stroke: "#ccc" }));
  const maxRate = Math.max(1, ...samples.map((s) => s.rate));
  const maxLag = Math.max(1, ...samples.map((s) => s.lag_secs));
  const x = (t) => PAD_L + ((t - x0) / span) * (W - PAD_L - PAD_R);
  const y = (v, max) => H - PAD_B - (v / max) * (H - PAD_T - PAD_B);
  const line = (pick, max, cls) => {
    const pts = samples.filter((s) => s.at_micros >= x0)
      .map((s) => `${x(s.at_micros).toFixed(1)},${y(pick(s), max).toFixed(1)}`);
    if (pts.length === 1) pts.push(pts[0].replace(/^[^,]+/, (v) => String(Number(v) + 1)));
    g.append(svg("polyline", { class: cls, points: pts.join(" ") }));
  };
  line((s) => s.rate, maxRate, "rate");
  line((s) => s.lag_secs, maxLag, "lag");
  const unit = kind === "table" ? "rows/s" : "acked/s";
  g.append(svg("text", { x: PAD_L - 4, y: PAD_T + 10, "text-anchor": "end", class: "legend-rate" }, maxRate.toFixed(0)));
  g.append(svg("text", { x: PAD_L - 4, y: H - PAD_B, "text-anchor": "end" }, "0"));
  g.append(svg("text", { x: W - PAD_R + 4, y: PAD_T + 10, class: "legend-lag" }, age(maxLag)));
  g.append(svg("text", { x: PAD_L, y: H - 5 }, "−15 min"));
  g.append(svg("text", { x: W - PAD_R, y: H - 5, "text-anchor": "end" }, "now"));
  g.append(svg("text", { x: (W) / 2, y: H - 5, "text-anchor": "middle" }, `${unit} ─  lag ╌`));
  if (samples.length === 0) {
    g.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no samples yet"));
  }
  return el("figure", { id: `plot-${kind}-${name}` }, el("figcaption", {}, `${kind} ${name}`), g);
}

// A change-stream table's capture: its partitions and, when shared, the replicas querying them.
function streamText(t) {
  const partitions = t.partitions || [];
  const holders = [...new Set(partitions.map((p) => p.holder).filter((h) => h))];
  return "change stream " + t.change_stream + " (" + partitions.length + " partitions" +
    (holders.length ? "; queried by " + holders.join(", ") : "") + ")";
}

function render(status, history) {
  const now = status.now_micros || Date.now() * 1000;
  const banner = document.getElementById("banner");
  banner.textContent = status.ready ? "ready" : "not ready (starting or draining)";
  banner.className = status.ready ? "ready" : "down";
  document.getElementById("updated").textContent = "updated " + new Date(now / 1000).toLocaleTimeString();

  fill("tables", status.tables.map((t) => el("tr", { "data-table": t.table },
    el("td", {}, t.table),
    el("td", {}, t.leader ? "this replica" : (t.holder || "another replica")),
    el("td", {}, t.change_stream ? streamText(t) : "commit timestamp"),
    el("td", {}, age(secs(t.watermark_micros, now))),
    num(lastRate(history.tables, t.table)),
    num(t.rows_polled),
    num(t.poll_errors),
    el("td", { class: "err" }, t.stopped || ""))));

  fill("plugins", status.plugins.map((p) => el("tr", { "data-plugin": p.name },
    el("td", {}, p.name),
    el("td", {}, p.state),
    el("td", { title: p.version || "" }, (p.version || "–").slice(0, 12)),
    num(p.instances),
    num(p.events_in),
    num(p.acked),
    num(p.retried),
    num(p.dead_lettered),
    el("td", {}, age(secs(p.last_commit_micros || 0, now))),
    el("td", { class: "err" }, p.last_error || ""))));

  document.getElementById("plots").replaceChildren(
    ...status.tables.map((t) => plot("table", t.table, history.tables, history, now)),
    ...status.plugins.map((p) => plot("plugin", p.name, history.plugins, history, now)));

  fill("dead-letters", (status.dead_letters || []).map((d) => el("tr", { "data-event": d.event_id },
    el("td", {}, age(secs(d.at_micros, now)) + " ago"),
    el("td", {}, d.plugin),
    el("td", {}, d.event_id),
    num(d.attempts),
    el("td", { class: "err" }, d.reason))));
}

async function refresh() {
  try {
    const get = async (path) => {
      const r = await fetch(path, { cache: "no-store" });
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
      return r.json();
    };
    const [status, history] = await Promise.all([get("/status"), get("/status/history")]);
    render(status, history);
  } catch (e) {
    const banner = document.getElementById("banner");
    banner.textContent = "cannot reach the host: " + e.message;
    banner.className = "down";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
