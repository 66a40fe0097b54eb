// Opsdeck dashboard, the bandit page (/bandit): renders the live "bandit" section (app.js's stream
// hands every frame over as an "opsdeck:live" event), the chart ranges from /api/bandit/history and
// the offline evaluation from /api/bandit/evaluation. Text only (no innerHTML); no inline script (CSP).
// The rollback buttons are app.js's data-post buttons: its confirmation dialog, CSRF header, notice.
"use strict";

(() => {
  const root = document.getElementById("bandit");
  if (!root) return;
  const canRollback = root.dataset.canRollback === "1";
  const COLORS = ["#2563eb", "#9333ea", "#15803d", "#b45309", "#db2777"];
  let bandit = null;
  let range = "15m";
  let history = null;

  const $ = (sel) => document.querySelector(sel);
  const { el, svg } = window.Opsdeck; // app.js's DOM and SVG builders (loaded first)
  const num = (v, d = 3) => (v === null || v === undefined || Number.isNaN(v) ? "-" : Number(v).toFixed(d));
  const share = (v) => (v === null || v === undefined ? "-" : `${(v * 100).toFixed(1)} %`);
  const interval = (ci, d = 3) => (ci ? `[${num(ci[0], d)}, ${num(ci[1], d)}]` : "");
  const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-");
  const colorOf = (arms, arm) => COLORS[Math.max(0, arms.indexOf(arm)) % COLORS.length];
  const label = (txt, x, y, cls = "axis-label") => { const t = svg("text", { x, y, class: cls }); t.textContent = txt; return t; };

  // -- the live section ----------------------------------------------------------------------------
  function render(b) {
    if (!b) return;
    bandit = b;
    const phase = $("#bandit-phase");
    phase.textContent = b.phase; phase.className = `state st-${b.phase === "learned" ? "running" : "pending"}`;
    $("#bandit-warmup").value = b.warmup_progress;
    $("#bandit-warmup-text").textContent = b.phase === "warmup"
      ? `${b.decisions} of ${b.warmup} uniform decisions (${share(b.warmup_progress)})`
      : `done: ${b.warmup} uniform decisions, then LinUCB`;
    $("#bandit-decisions").textContent = b.decisions;
    $("#bandit-applied").textContent = b.applied;
    $("#bandit-rollbacks-total").textContent = `${b.rollbacks_total.auto} automatic, ${b.rollbacks_total.manual} manual`;
    $("#bandit-alpha").textContent = num(b.alpha, 4);
    const s = b.alpha_schedule;
    $("#bandit-schedule").textContent = s
      ? `${s.kind} ${s.start} → ${s.end} over ${s.decisions} decisions after warm-up`
      : "constant (BANDIT_ALPHA; no BANDIT_ALPHA_SCHEDULE)";
    renderAlpha(b);
    renderArms(b);
    renderTiers(b.llm_tiers || {});
    renderCheckpoints(b);
    if (range === "15m") renderRange(b.recent, Object.keys(b.arms));
  }

  function renderAlpha(b) {
    const box = $("#chart-alpha"), s = b.alpha_schedule;
    const W = 400, H = 70, pad = 26;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `alpha over the decision count, now ${b.alpha} after ${b.decisions} decisions` });
    const span = s ? b.warmup + s.decisions : Math.max(b.warmup, b.decisions, 1);
    const xMax = Math.max(span * 1.1, b.decisions + 1);
    const at = (n) => (!s ? b.alpha : n <= b.warmup ? s.start : n - b.warmup >= s.decisions ? s.end
      : s.start + (s.end - s.start) * ((n - b.warmup) / s.decisions));
    const top = Math.max(s ? Math.max(s.start, s.end) : b.alpha, 0.01) * 1.15;
    const X = (n) => pad + (n / xMax) * (W - pad - 4), Y = (a) => H - 12 - (a / top) * (H - 20);
    const pts = [];
    for (let i = 0; i <= 60; i++) { const n = (i / 60) * xMax; pts.push(`${X(n).toFixed(1)},${Y(at(n)).toFixed(1)}`); }
    chart.append(svg("line", { x1: pad, y1: H - 12, x2: W, y2: H - 12, class: "axis" }),
      svg("polyline", { points: pts.join(" "), class: "line-alpha" }),
      svg("circle", { cx: X(b.decisions), cy: Y(b.alpha), r: 3.5, class: "dot-now" }),
      label(num(top, 2), 0, 10), label("decisions →", pad, H - 1), label(String(Math.round(xMax)), W - 40, H - 1));
    box.replaceChildren(chart);
  }

  function renderArms(b) {
    const rows = Object.entries(b.arms).map(([arm, a]) => {
      const w = a.window || {};
      return el("tr", { "data-arm": arm },
        el("td", {}, el("span", { class: "sw", style: null, "data-color": colorOf(Object.keys(b.arms), arm) }), ` ${arm}`),
        el("td", { class: "num pulls", text: a.pulls }), el("td", { class: "num", text: share(a.share) }),
        el("td", { class: "num", text: a.updates }), el("td", { class: "num", text: num(a.mean_reward) }),
        el("td", { class: "num", text: w.count ?? 0 }),
        el("td", { class: "num", text: w.mean === undefined ? "-" : `${num(w.mean)} ${interval(w.ci)}` }),
        el("td", { class: "num", text: w.normalised_mean === undefined ? "-" : `${num(w.normalised_mean, 2)} ${interval(w.normalised_ci, 2)}` }));
    });
    $("#bandit-arms").tBodies[0].replaceChildren(...rows);
    paintSwatches($("#bandit-arms"));
    const win = b.window || {};
    $("#bandit-window-note").textContent = win.count
      ? `Window: the last ${win.count} ratings, mean reward ${num(win.mean)} (std ${num(win.std)}); rewards are (rating − 1) / 4. Normalised = (arm mean − window mean) / window std.`
      : "No rating applied yet.";
  }
  // SVG-free colour swatches: CSP allows no inline style attribute from markup, so paint from JS.
  function paintSwatches(scope) {
    for (const s of scope.querySelectorAll(".sw[data-color]")) s.style.background = s.dataset.color;
  }

  function renderTiers(tiers) {
    const table = $("#bandit-tiers"), names = Object.keys(tiers);
    if (!names.length) {
      table.tHead.replaceChildren();
      table.tBodies[0].replaceChildren(el("tr", {}, el("td", { class: "muted", text: "no LLM call recorded (LLM_BASE_URL unset, or no turn since)" })));
      return;
    }
    const first = ["breaker", "outcome", "at", "worker", "detail"];
    const cols = [...first.filter((c) => names.some((t) => c in tiers[t])),
      ...[...new Set(names.flatMap((t) => Object.keys(tiers[t])))].filter((c) => !first.includes(c)).sort()];
    table.tHead.replaceChildren(el("tr", {}, el("th", { text: "tier" }), ...cols.map((c) => el("th", { text: c }))));
    const cell = (c, v) => {
      if (v === null || v === undefined) return "-";
      if (typeof v === "number" && v > 1e12 && v < 1e14) return when(v); // epoch milliseconds
      if (typeof v === "object") return JSON.stringify(v);
      if (typeof v === "number" && !Number.isInteger(v)) return num(v, 3);
      return String(v);
    };
    table.tBodies[0].replaceChildren(...names.map((t) => el("tr", { "data-tier": t }, el("td", { text: t }),
      ...cols.map((c) => el("td", { class: c === "breaker" ? `st st-${tiers[t][c] === "closed" ? "running" : "failed"}` : null, text: cell(c, tiers[t][c]) })))));
  }

  function renderCheckpoints(b) {
    const check = b.last_check;
    $("#bandit-last-check").textContent = check
      ? `Last automatic check (checkpoint ${check.checkpoint}): ${check.why || (check.target ? `rolled back to ${check.target}` : "kept")}`
      : "No automatic rollback check yet (one runs at every new checkpoint).";
    const rows = (b.checkpoints || []).map((c) => {
      const r = c.reward || {};
      const perArm = Object.entries(r.arms || {}).map(([a, v]) => `${a} ${num(v.mean)} (${v.count})`).join(" · ");
      const td = el("td");
      if (canRollback) {
        const discarded = b.applied - c.applied;
        td.append(el("button", { class: "danger", "data-post": `/api/bandit/checkpoints/${c.id}/rollback`, "data-action": `rollback to ${c.id}`,
          "data-confirm": `Roll the shared bandit back to checkpoint ${c.id}? Its model is restored; the ${discarded} ratings applied after it are discarded from the model (they stay in the log).`,
          text: "roll back…" }));
      }
      return el("tr", { "data-checkpoint": c.id }, el("td", { class: "num", text: c.id }), el("td", { text: when(c.created_ms) }),
        el("td", { class: "num", text: c.applied }), el("td", { class: "num", text: r.count ?? 0 }),
        el("td", { class: "num", text: num(r.mean) }), el("td", { class: "num", text: num(r.std) }), el("td", { text: perArm }), td);
    });
    $("#bandit-checkpoints").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 8, class: "muted", text: "no checkpoint yet (one every BANDIT_CHECKPOINT_EVERY ratings)" }))]));
    const rb = (b.rollbacks || []).map((r) => el("tr", {}, el("td", { text: when(r.at_ms) }), el("td", { text: r.trigger }),
      el("td", { class: "num", text: r.checkpoint }), el("td", { class: "num", text: (r.applied ?? 0) - (r.checkpoint_applied ?? 0) }),
      el("td", { text: (r.reason && (r.reason.why || "")) + (r.reason && r.reason.subject ? ` (by ${r.reason.subject})` : "") })));
    $("#bandit-rollbacks").tBodies[0].replaceChildren(...(rb.length ? rb : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "no rollback" }))]));
  }

  // -- ranges: exploration, reward per arm, UCB distribution --------------------------------------
  function renderRange(data, arms) {
    if (!data) return;
    const points = data.points || [];
    for (const s of document.querySelectorAll(".bandit-step")) s.textContent = data.step_seconds === 60 ? "minute" : `${data.step_seconds / 60} minutes`;
    const W = 600, H = 140, pad = 24, n = Math.max(points.length, 1), bw = (W - pad) / n;
    // exploration vs exploitation: stacked bars
    const maxD = Math.max(1, ...points.map((p) => p.decisions));
    const bars = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `decisions per step, explored and exploited, ${points.length} steps, at most ${maxD} a step` });
    bars.append(svg("line", { x1: pad, y1: H - 14, x2: W, y2: H - 14, class: "axis" }));
    points.forEach((p, i) => {
      const scale = (H - 24) / maxD, x = pad + i * bw, hx = p.explore * scale, he = (p.decisions - p.explore) * scale;
      bars.append(svg("rect", { x: x + 1, y: H - 14 - hx - he, width: Math.max(1, bw - 2), height: he, class: "bar-exploit" }));
      bars.append(svg("rect", { x: x + 1, y: H - 14 - hx, width: Math.max(1, bw - 2), height: hx, class: "bar-explore" }));
    });
    bars.append(label(String(maxD), 0, 12), label(points.length ? new Date(points[0].t * 1000).toLocaleTimeString() : "", pad, H - 2));
    $("#chart-explore").replaceChildren(bars);
    const t = data.totals || { decisions: 0, explore: 0, arms: {} };
    $("#bandit-explore-ratio").textContent = t.decisions
      ? `${t.explore} of ${t.decisions} decisions explored (${share(t.explore / t.decisions)}), ${t.decisions - t.explore} exploited`
      : "no decision in this range";
    // mean reward per arm: one line per arm (gaps where an arm had no rating)
    const line = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `mean reward per arm (0 to 1) over ${points.length} steps: ${arms.join(", ")}` });
    line.append(svg("line", { x1: pad, y1: H - 14, x2: W, y2: H - 14, class: "axis" }), label("1.0", 0, 12), label("0", 8, H - 14));
    for (const arm of arms) {
      let seg = [];
      const flush = () => { if (seg.length) line.append(svg(seg.length > 1 ? "polyline" : "circle", seg.length > 1
        ? { points: seg.join(" "), fill: "none", stroke: colorOf(arms, arm), "stroke-width": 1.8, "data-arm": arm }
        : { cx: seg[0].split(",")[0], cy: seg[0].split(",")[1], r: 2.5, fill: colorOf(arms, arm), "data-arm": arm })); seg = []; };
      points.forEach((p, i) => {
        const v = p.arms[arm] && p.arms[arm].mean_reward;
        if (v === null || v === undefined) { flush(); return; }
        seg.push(`${(pad + i * bw + bw / 2).toFixed(1)},${(H - 14 - v * (H - 24)).toFixed(1)}`);
      });
      flush();
    }
    $("#chart-reward").replaceChildren(line);
    $("#bandit-reward-legend").replaceChildren(...arms.flatMap((a) => [el("span", { class: "sw", "data-color": colorOf(arms, a) }), ` ${a} `]));
    paintSwatches($("#bandit-reward-legend"));
    const pulls = arms.reduce((s, a) => s + ((t.arms[a] || {}).pulls || 0), 0);
    $("#bandit-range-arms").tBodies[0].replaceChildren(...arms.map((a) => {
      const r = t.arms[a] || {};
      return el("tr", { "data-arm": a }, el("td", { text: a }), el("td", { class: "num", text: r.pulls ?? 0 }),
        el("td", { class: "num", text: pulls ? share((r.pulls || 0) / pulls) : "-" }), el("td", { class: "num", text: r.rated ?? 0 }),
        el("td", { class: "num", text: num(r.mean_reward) }));
    }));
    renderUcb(data.ucb, arms);
    renderMix(t.llm_tiers || {});
  }

  function renderMix(answered) {
    const mix = (bandit && bandit.llm_mix) || { shares: {}, over: "weights" };
    $("#bandit-mix-over").textContent = mix.over === "configured"
      ? "renormalised over the tiers with a model" : "as weighted: this dashboard names no LLM_MODEL_*";
    const total = Object.values(answered).reduce((s, n) => s + n, 0);
    const tiers = [...new Set([...Object.keys(mix.shares), ...Object.keys(answered).filter((t) => answered[t])])];
    const rows = tiers.map((t) => {
      const target = mix.shares[t] ?? 0, got = total ? (answered[t] || 0) / total : null;
      return el("tr", { "data-tier": t }, el("td", { text: t }), el("td", { class: "num", text: share(target) }),
        el("td", { class: "num answered", text: answered[t] || 0 }), el("td", { class: "num", text: share(got) }),
        el("td", { class: "num", text: got === null ? "-" : `${((got - target) * 100).toFixed(1)} pts` }));
    });
    $("#bandit-mix").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "no LLM tier weighted" }))]));
  }

  function renderUcb(ucb, arms) {
    const box = $("#chart-ucb");
    if (!ucb) return;
    $("#bandit-ucb-width").textContent = ucb.width;
    const figs = arms.map((arm) => {
      const counts = ucb.counts[arm] || [], total = counts.reduce((s, c) => s + c, 0), top = Math.max(1, ...counts);
      const W = 320, H = 90, bw = (W - 4) / Math.max(counts.length, 1);
      const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
        "aria-label": `UCB score distribution of ${arm}: ${total} scores in ${counts.length} buckets` });
      counts.forEach((c, i) => {
        const h = (c / top) * (H - 24);
        chart.append(svg("rect", { x: 2 + i * bw + 1, y: H - 14 - h, width: Math.max(1, bw - 2), height: h, fill: colorOf(arms, arm) }));
      });
      chart.append(svg("line", { x1: 0, y1: H - 14, x2: W, y2: H - 14, class: "axis" }), label("0", 2, H - 2),
        label(`${ucb.edges[ucb.edges.length - 1]}+`, W - 30, H - 2), label(String(top), 2, 10));
      return el("figure", { "data-arm": arm }, el("figcaption", { text: `${arm} · ${total} scores` }), chart);
    });
    box.replaceChildren(...figs);
  }

  async function loadRange() {
    if (range === "15m") { if (bandit) renderRange(bandit.recent, Object.keys(bandit.arms)); return; }
    const asked = range;
    const resp = await fetch(`/api/bandit/history?range=${asked}`, { credentials: "same-origin" });
    if (!resp.ok || asked !== range) return; // another range was chosen meanwhile
    history = await resp.json();
    if (asked !== range) return;
    renderRange(history, bandit ? Object.keys(bandit.arms) : Object.keys(history.totals.arms));
  }

  // -- offline evaluation --------------------------------------------------------------------------
  async function loadEvaluation() {
    const note = $("#bandit-eval-note");
    const resp = await fetch("/api/bandit/evaluation", { credentials: "same-origin" });
    if (!resp.ok) { note.textContent = `evaluation: HTTP ${resp.status}`; return; }
    const ev = await resp.json();
    const seg = ev.segments || {};
    note.textContent = ev.note || `${ev.turns_evaluated} of the newest ${ev.turns_read} rated turns evaluated (limit ${ev.limit}${ev.truncated ? ", more not read" : ""}; `
      + `${seg.warmup || 0} warm-up, ${seg.learned || 0} learned), ${Math.round((ev.confidence || 0.95) * 100)} % intervals; `
      + `replay agreement ${ev.replay_agreement === null ? "-" : share(ev.replay_agreement)}; computed ${new Date(ev.computed_at * 1000).toLocaleTimeString()} (cached a minute).`;
    const est = (e) => (e ? `${num(e.value)} ${interval(e.ci)}` : "-");
    const rows = [];
    for (const p of ev.policies || []) for (const [name, s] of Object.entries(p.segments)) {
      rows.push(el("tr", { "data-policy": p.policy, "data-segment": name }, el("td", { text: p.policy }), el("td", { text: name }),
        el("td", { class: "num", text: s.turns }), el("td", { class: "num", text: share(s.support) }), el("td", { class: "num", text: share(s.match_rate) }),
        el("td", { class: "num", text: num(s.ess, 1) }), el("td", { class: "num", text: est(s.ips) }), el("td", { class: "num", text: est(s.snips) }),
        el("td", { class: "num", text: est(s.dr) }),
        el("td", { text: s.estimable ? "" : `${s.reason || ""}${s.bounds ? ` ${interval(s.bounds)}` : ""}` })));
    }
    $("#bandit-eval").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 10, class: "muted", text: ev.note || "nothing to evaluate" }))]));
  }

  // -- wiring ---------------------------------------------------------------------------------------
  document.addEventListener("opsdeck:live", (ev) => {
    const { state, sections } = ev.detail;
    if (sections.includes("bandit") && state.bandit) render(state.bandit);
  });
  document.addEventListener("click", (ev) => {
    const r = ev.target.closest("[data-bandit-range]");
    if (!r) return;
    range = r.dataset.banditRange;
    for (const b of document.querySelectorAll("[data-bandit-range]")) b.classList.toggle("active", b === r);
    loadRange();
  });
  fetch("/api/bandit", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : null)).then((b) => { if (b && !bandit) render(b); });
  loadEvaluation();
  setInterval(() => { if (!document.hidden) loadEvaluation(); }, 60000);
  setInterval(() => { if (range !== "15m" && !document.hidden) loadRange(); }, 60000);
})();
