// Opsdeck overview charts: tasks and attempts ended, error rate over tasks (attempts as a second
// series), attempt latency p50/p95, over 15m (live, from the /ws "throughput" section) or the
// history API (1h, 24h, 7d, or any range filtered by task type). Inline SVG, text only (CSP).
// Times are UTC (labelled UTC+00:00, as the tables); a step without data is a gap, not 0.
"use strict";

(() => {
  const root = document.getElementById("charts");
  if (!root) return;
  const NS = "http://www.w3.org/2000/svg";
  const H = 170, PAD_L = 48, PAD_R = 78, PAD_T = 10, PAD_B = 30;
  const WARN = 0.05, CRIT = 0.10;
  const TICK_SECONDS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const RANGE_TEXT = { "15m": "15 min", "1h": "1 h", "24h": "24 h", "7d": "7 days" };
  const view = { range: "15m", type: "", points: [], step: 60, totals: null, live: [] };
  let timer = null;

  // -- formatting ------------------------------------------------------------------------------
  const num = (n) => Number(n || 0).toLocaleString("en-US");
  const pctText = (r) => (r === null || r === undefined ? "no data" : `${(r * 100).toFixed(r < 0.1 ? 1 : 0)} %`);
  const msText = (v) => (v === null || v === undefined ? "no data"
    : v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s` : `${v.toFixed(v < 10 ? 1 : 0)} ms`);
  const iso = (t) => new Date(t * 1000).toISOString();  // always UTC
  const dateTime = (t) => `${iso(t).slice(0, 10)} ${iso(t).slice(11, 16)}`;
  function tickText(t) {  // the date on ranges longer than a day
    if (view.range === "24h" || view.range === "7d") return `${iso(t).slice(5, 10)} ${iso(t).slice(11, 16)}`;
    return iso(t).slice(11, 16);
  }
  function stepText(p) {
    const end = p.t + view.step;
    return view.step === 60 ? `${dateTime(p.t)} UTC` : `${dateTime(p.t)}–${iso(end).slice(11, 16)} UTC`;
  }

  // -- SVG helpers -----------------------------------------------------------------------------
  function svg(tag, attrs = {}, text = null) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== null) node.textContent = text;
    return node;
  }
  // Lines through the points with a value; a missing value breaks the line (a gap), a lone
  // point between gaps is a dot.
  function series(values, x, y, cls) {
    const g = svg("g", { class: cls });
    let run = [];
    const flush = () => {
      if (run.length === 1) g.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.5 }));
      else if (run.length > 1) g.append(svg("polyline", { points: run.map((p) => p.join(",")).join(" ") }));
      run = [];
    };
    values.forEach((v, i) => {
      if (v === null || v === undefined) flush(); else run.push([x(i).toFixed(1), y(v).toFixed(1)]);
    });
    flush();
    return g;
  }

  // A chart frame: axes, time ticks, y labels, one hover column per point with a <title>, and
  // keyboard steps (left/right) that show the same text as the pointer's tooltip.
  function frame(box, name, yMax, yText, describe) {
    const W = Math.max(300, Math.round(box.clientWidth || 600));
    const n = Math.max(view.points.length, 1), bw = (W - PAD_L - PAD_R) / n;
    const x = (i) => PAD_L + i * bw + bw / 2;
    const y = (v) => PAD_T + (H - PAD_T - PAD_B) * (1 - Math.min(v, yMax) / yMax);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", tabindex: 0,
      "aria-label": name, class: "chart-svg" });
    const base = H - PAD_B;
    chart.append(svg("line", { x1: PAD_L, y1: base, x2: W - PAD_R, y2: base, class: "axis" }),
      svg("line", { x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: base, class: "axis" }));
    for (const f of [1, 0.5]) {
      chart.append(svg("line", { x1: PAD_L, y1: y(yMax * f), x2: W - PAD_R, y2: y(yMax * f), class: "grid" }),
        svg("text", { x: PAD_L - 4, y: y(yMax * f) + 3, class: "axis-label y-label", "text-anchor": "end" }, yText(yMax * f)));
    }
    chart.append(svg("text", { x: PAD_L - 4, y: base + 3, class: "axis-label y-label", "text-anchor": "end" }, "0"));
    // ticks on round UTC times (every 2, 5, 10 … minutes, hours, days), as many as fit (at most 6)
    const span = n * view.step, dated = view.range === "24h" || view.range === "7d";
    const fit = Math.max(2, Math.min(6, Math.floor((W - PAD_L - PAD_R) / (dated ? 80 : 48))));
    const every = TICK_SECONDS.find((s) => s >= view.step && span / s <= fit)
      || Math.ceil(span / fit / 86400) * 86400;
    const t0 = view.points.length ? view.points[0].t : 0;
    for (let T = Math.ceil(t0 / every) * every; view.points.length && T < t0 + span; T += every) {
      const tx = PAD_L + ((T - t0) / view.step) * bw;  // a point's left edge is its start
      chart.append(svg("line", { x1: tx, y1: base, x2: tx, y2: base + 4, class: "axis" }),
        svg("text", { x: tx, y: base + 15, class: "axis-label x-label", "text-anchor": "middle" }, tickText(T)));
    }
    chart.append(svg("text", { x: W - PAD_R, y: H - 2, class: "axis-label tz", "text-anchor": "end" }, "UTC+00:00"));
    const hover = svg("g", { class: "hover" });
    const guide = svg("line", { x1: 0, y1: PAD_T, x2: 0, y2: base, class: "guide", visibility: "hidden" });
    view.points.forEach((p, i) => {
      const col = svg("rect", { x: PAD_L + i * bw, y: PAD_T, width: Math.max(bw, 1), height: base - PAD_T,
        class: "hit", "data-i": i });
      col.append(svg("title", {}, describe(p)));
      hover.append(col);
    });
    const show = (i, ev) => {
      const p = view.points[i];
      if (!p) return;
      guide.setAttribute("x1", x(i)); guide.setAttribute("x2", x(i)); guide.setAttribute("visibility", "visible");
      chart.dataset.selected = i;
      tip.textContent = describe(p);
      tip.hidden = false;
      const rect = box.getBoundingClientRect(), scale = rect.width / W;
      const left = ev ? ev.clientX - rect.left : x(i) * scale;
      // beside the pointer, on the side with room (the right-hand threshold labels stay visible)
      const side = left > rect.width / 2 ? left - 232 : left + 12;
      tip.style.left = `${Math.max(0, Math.min(side, rect.width - 220))}px`;
      tip.style.top = `${ev ? ev.clientY - rect.top + 12 : PAD_T}px`;
    };
    const hide = () => { guide.setAttribute("visibility", "hidden"); tip.hidden = true; delete chart.dataset.selected; };
    const tip = box.parentElement.querySelector(".chart-tip");
    hover.addEventListener("pointermove", (ev) => { const i = ev.target.dataset && ev.target.dataset.i; if (i !== undefined) show(Number(i), ev); });
    chart.addEventListener("pointerleave", hide);
    chart.addEventListener("blur", hide);
    chart.addEventListener("keydown", (ev) => {
      if (!["ArrowLeft", "ArrowRight", "Home", "End", "Escape"].includes(ev.key)) return;
      ev.preventDefault();
      if (ev.key === "Escape") { hide(); return; }
      const cur = chart.dataset.selected === undefined ? view.points.length : Number(chart.dataset.selected);
      const next = ev.key === "Home" ? 0 : ev.key === "End" ? view.points.length - 1
        : Math.max(0, Math.min(view.points.length - 1, cur + (ev.key === "ArrowLeft" ? -1 : 1)));
      show(next, null);
    });
    return { chart, x, y, bw, W, base, finish: () => chart.append(guide, hover) };
  }

  // -- the three charts ------------------------------------------------------------------------
  function drawThroughput() {
    const box = document.getElementById("chart-throughput");
    const pts = view.points;
    const top = Math.max(1, ...pts.map((p) => Math.max(p.tasks, p.processed)));
    const f = frame(box, `Tasks and attempts ended per ${stepName()}, ${RANGE_TEXT[view.range]}`, top, (v) => num(Math.round(v)),
      (p) => `${stepText(p)}: ${num(p.tasks)} tasks ended, ${num(p.tasks_failed)} failed · ${num(p.processed)} attempts, ${num(p.failed)} failed`);
    pts.forEach((p, i) => {
      const w = Math.max(1, f.bw - 2), left = f.x(i) - w / 2;
      const ok = p.tasks - p.tasks_failed;
      if (ok > 0) f.chart.append(svg("rect", { x: left, y: f.y(p.tasks), width: w, height: f.y(p.tasks_failed) - f.y(p.tasks), class: "bar-ok" }));
      if (p.tasks_failed > 0) f.chart.append(svg("rect", { x: left, y: f.y(p.tasks_failed), width: w, height: f.base - f.y(p.tasks_failed), class: "bar-fail" }));
    });
    f.chart.append(series(pts.map((p) => (p.processed || p.tasks ? p.processed : null)), f.x, f.y, "line-attempts"));
    f.finish();
    box.replaceChildren(f.chart);
  }
  function drawErrors() {
    const box = document.getElementById("chart-errors");
    const pts = view.points;
    const seen = pts.flatMap((p) => [p.error_rate, p.attempt_error_rate]).filter((v) => v !== null && v !== undefined);
    const top = Math.min(1, Math.max(0.12, ...seen.map((v) => v * 1.1)));
    const f = frame(box, `Error rate over tasks and over attempts, ${RANGE_TEXT[view.range]}`, top, (v) => `${Math.round(v * 100)} %`,
      (p) => (p.tasks || p.processed
        ? `${stepText(p)}: ${pctText(p.error_rate)} of tasks (${num(p.tasks_failed)} of ${num(p.tasks)}) · ${pctText(p.attempt_error_rate)} of attempts (${num(p.failed)} of ${num(p.processed)})`
        : `${stepText(p)}: no tasks ended (no data)`));
    for (const [thr, cls, text] of [[WARN, "thr-warn", "warn 5 %"], [CRIT, "thr-crit", "critical 10 %"]]) {
      f.chart.append(svg("line", { x1: PAD_L, y1: f.y(thr), x2: f.W - PAD_R, y2: f.y(thr), class: `threshold ${cls}` }),
        svg("text", { x: f.W - PAD_R + 4, y: f.y(thr) + 3, class: `axis-label thr-label ${cls}` }, text));
    }
    f.chart.append(series(pts.map((p) => p.attempt_error_rate), f.x, f.y, "line-attempt-err"),
      series(pts.map((p) => p.error_rate), f.x, f.y, "line-err"));
    f.finish();
    box.replaceChildren(f.chart);
  }
  function drawLatency() {
    const box = document.getElementById("chart-latency");
    const pts = view.points;
    const top = Math.max(1, ...pts.map((p) => (p.p95_ms || 0) * 1.1));
    const f = frame(box, `Attempt latency p50 and p95${view.type ? ` of ${view.type}` : ""}, ${RANGE_TEXT[view.range]}`, top, msText,
      (p) => (p.p50_ms === null ? `${stepText(p)}: no attempts (no data)` : `${stepText(p)}: p50 ${msText(p.p50_ms)}, p95 ${msText(p.p95_ms)}`));
    f.chart.append(series(pts.map((p) => p.p95_ms), f.x, f.y, "line-p95"), series(pts.map((p) => p.p50_ms), f.x, f.y, "line-p50"));
    f.finish();
    box.replaceChildren(f.chart);
  }
  const stepName = () => (view.step === 60 ? "minute" : view.step === 3600 ? "hour" : `${view.step / 60} minutes`);

  function sumTotals(pts) {
    const t = { processed: 0, failed: 0, tasks: 0, tasks_failed: 0 };
    for (const p of pts) for (const k of Object.keys(t)) t[k] += p[k] || 0;
    t.error_rate = t.tasks ? t.tasks_failed / t.tasks : null;
    t.attempt_error_rate = t.processed ? t.failed / t.processed : null;
    return t;
  }
  function drawTotals() {
    const t = view.totals || sumTotals(view.points);
    const of = view.type ? ` of ${view.type}` : "";
    document.getElementById("chart-totals").textContent =
      `${num(t.tasks)} tasks${of}, ${num(t.tasks_failed)} failed (${pctText(t.error_rate)}) · ${num(t.processed)} attempts, ` +
      `${num(t.failed)} failed (${pctText(t.attempt_error_rate)}) in ${RANGE_TEXT[view.range]}` +
      (t.p95_ms !== undefined ? ` · latency p50 ${msText(t.p50_ms)}, p95 ${msText(t.p95_ms)}` : "");
    const from = view.points[0], to = view.points[view.points.length - 1];
    document.getElementById("chart-span").textContent = from
      ? `${dateTime(from.t)} – ${dateTime(to.t + view.step)} UTC+00:00, one point per ${stepName()}` : "";
    for (const s of document.querySelectorAll(".step")) s.textContent = stepName();
  }
  function draw() {
    if (!view.points.length) return;
    drawThroughput(); drawErrors(); drawLatency(); drawTotals();
    root.dataset.range = view.range; root.dataset.type = view.type;
  }

  // -- data ------------------------------------------------------------------------------------
  const isLive = () => view.range === "15m" && !view.type;
  async function load() {
    clearTimeout(timer);
    if (isLive()) { view.points = view.live; view.step = 60; view.totals = null; draw(); return; }
    const q = new URLSearchParams({ range: view.range });
    if (view.type) q.set("type", view.type);
    const want = q.toString();
    try {
      const resp = await fetch(`/api/metrics/history?${want}`, { credentials: "same-origin" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const data = await resp.json();
      const now = new URLSearchParams({ range: view.range });
      if (view.type) now.set("type", view.type);
      if (now.toString() !== want) return;  // the operator chose another view meanwhile
      view.points = data.points; view.step = data.step_seconds; view.totals = data.totals;
      draw();
    } catch (err) {
      document.getElementById("chart-totals").textContent = `history unavailable (${err.message}); retrying`;
    }
    timer = setTimeout(load, view.range === "15m" ? 20000 : 60000);  // a new point each minute at most
  }
  document.addEventListener("opsdeck:live", (ev) => {
    const { state, sections } = ev.detail;
    if (!sections.includes("throughput") || !state.throughput) return;
    view.live = state.throughput;
    if (isLive()) { view.points = view.live; view.step = 60; view.totals = null; draw(); }
  });
  root.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-chart-range]");
    if (!b) return;
    view.range = b.dataset.chartRange;
    for (const o of root.querySelectorAll("[data-chart-range]")) {
      o.classList.toggle("active", o === b); o.setAttribute("aria-pressed", String(o === b));
    }
    load();
  });
  const filter = document.getElementById("chart-type");
  if (filter) filter.addEventListener("change", () => { view.type = filter.value; load(); });
  let resized = null;
  window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(draw, 150); });
})();
