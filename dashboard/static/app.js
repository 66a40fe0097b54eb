// Opsdeck dashboard: live stream client, rendering (DOM + inline SVG, text only) and actions.
// No framework, no inline script (CSP). State arrives on /ws as a snapshot, then updates.
"use strict";

(() => {
  const page = document.body.dataset.page;
  const canControl = ["operator", "admin"].includes(document.body.dataset.role);
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const state = {};

  // -- helpers ---------------------------------------------------------------------------------
  const $ = (sel, root = document) => root.querySelector(sel);
  // A counter the broker cannot tell (RabbitMQ without its management API) is null: shown as "?".
  function known(n) { return n === null || n === undefined ? "?" : n; }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v; else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  function svg(tag, attrs = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }
  const mib = (b) => `${((b || 0) / 1048576).toFixed(0)} MiB`;
  const pct = (v) => `${(v || 0).toFixed(1)} %`;
  function duration(s) {
    s = Math.max(0, Math.floor(s || 0));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }
  function notice(text, bad = false) {
    const n = el("div", { class: bad ? "notice bad" : "notice", role: "status", text });
    $("#notices").append(n);
    setTimeout(() => n.remove(), 8000);
  }

  // -- live stream -----------------------------------------------------------------------------
  let retry = 0;
  // The sections this page shows (its meta live-section tags; none: the overview's).
  const live = [...document.querySelectorAll('meta[name="live-section"]')].map((m) => m.content);
  function connect() {
    const conn = $("#conn");
    if (!conn) return;
    const query = live.length ? `?${live.map((k) => `s=${encodeURIComponent(k)}`).join("&")}` : "";
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${query}`);
    ws.onopen = () => { retry = 0; conn.textContent = "live"; conn.className = "conn conn-on"; };
    ws.onmessage = (ev) => {
      const frame = JSON.parse(ev.data);
      if (frame.type === "snapshot") {
        for (const k of Object.keys(state)) delete state[k];
        liveLabels = frame.live || {};
        for (const [key, why] of Object.entries(frame.refused || {})) notice(`not live: ${key} (${why})`, true);
      }
      Object.assign(state, frame.data);
      render(Object.keys(frame.data));
    };
    ws.onclose = () => {
      conn.textContent = "reconnecting…"; conn.className = "conn conn-off";
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, Math.min(10000, 250 * 2 ** retry));
    };
  }

  function render(sections) {
    renderLive(sections);
    if (sections.includes("workers")) renderWorkers();
    if (sections.includes("queues")) renderQueues();
    if (sections.includes("alerts")) renderAlerts();
    // a page's own script (static/bandit.js) renders its sections from this
    document.dispatchEvent(new CustomEvent("opsdeck:live", { detail: { state, sections } }));
  }

  // -- workers ---------------------------------------------------------------------------------
  function sparkline(values, cls, max = 100) {
    const name = `${cls === "spark-mem" ? "memory" : "CPU"} % over the last ${values.length} heartbeats${values.length ? `, now ${(+values[values.length - 1] || 0).toFixed(1)}` : ""}`;
    const w = 120, h = 28, box = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": name });
    if (values.length > 1) {
      const top = Math.max(max, ...values);
      const pts = values.map((v, i) => `${(i * w / (values.length - 1)).toFixed(1)},${(h - 2 - v * (h - 4) / top).toFixed(1)}`);
      box.append(svg("polyline", { points: pts.join(" "), fill: "none", "stroke-width": 1.5, class: cls }));
    }
    return box;
  }
  // The states in which an action does nothing (its button is disabled; the cards re-render with
  // every heartbeat, so they follow the state live). A stale beat's state is unknown: all are enabled.
  const USELESS_IN = { start: ["running", "paused", "starting"], stop: ["stopped", "stopping"],
    restart: ["stopped", "stopping"], pause: ["paused", "stopped", "stopping"], resume: ["running", "starting", "stopped", "stopping"] };
  function controls(w, late) {
    const box = el("div", { class: "controls" });
    const url = (a) => `/api/worker/${encodeURIComponent(w.id)}/${a}`;
    for (const a of ["start", "stop", "restart", "pause", "resume"]) {
      const off = !late && USELESS_IN[a].includes(w.state);
      box.append(el("button", { "data-post": url(a), "data-action": a, "data-command": "1", disabled: off,
        title: off ? `${w.id} is ${w.state}` : null,
        "data-confirm": `${a[0].toUpperCase()}${a.slice(1)} worker ${w.id}?`, class: a === "stop" ? "danger" : null, text: a }));
    }
    const input = el("input", { type: "number", min: 0, max: 64, value: w.processes_desired ?? 1, "aria-label": "processes", id: `scale-${w.id}` });
    box.append(input, el("button", { "data-post": url("scale"), "data-action": "scale", "data-command": "1",
      "data-body-scale": input.id, "data-worker-id": w.id, "data-scale-from": w.processes_desired ?? w.processes ?? "?", text: "scale" }));
    return box;
  }
  // the dialog names the count asked for, read when clicked: "Scale worker w1 from 2 to 4 processes?"
  const confirmText = (b) => (b.dataset.bodyScale ? `Scale worker ${b.dataset.workerId} from ${b.dataset.scaleFrom} to `
    + `${$(`#${CSS.escape(b.dataset.bodyScale)}`).value} processes?` : b.dataset.confirm || "Are you sure?");
  function workerCard(w) {
    const card = el("article", { class: "card", "data-worker": w.id });
    const title = el("h3", {}, el("a", { href: `/workers/${encodeURIComponent(w.id)}`, text: w.id }),
      el("span", { class: `state st-${w.state}`, text: w.state }));
    card.append(title);
    if (w.state === "down") {
      card.append(el("p", { class: "muted", text: `no heartbeat since ${new Date(w.last_seen * 1000).toLocaleTimeString()}` }));
      return card;
    }
    const late = beatLate(w);
    if (late) {
      title.lastChild.textContent = "stale"; title.lastChild.className = "state st-stale";
      card.classList.add("beat-stale");
      card.append(el("p", { class: "beat-note", role: "status", text: late }));
    }
    const rows = [["host", w.host], ["pid", w.pid], ["CPU", pct(w.cpu_percent), "cpu"],
      ["memory", `${mib(w.rss_bytes)} (${pct(w.memory_percent)})`, "mem"], ["uptime", duration(w.uptime_seconds), "uptime"],
      ["processes", `${w.processes}/${w.processes_desired} × ${w.threads} threads`, "procs"],
      ["process pids", (w.procs || []).map((p) => p.pid).join(", ") || "-", "pids"],
      ["in flight", w.in_flight, "inflight"], ["processed", w.processed, "processed"], ["failed", w.failed, "failed"]];
    const dl = el("dl");
    for (const [k, v, cls] of rows) dl.append(el("dt", { text: k }), el("dd", { class: cls || null, text: String(v ?? "-") }));
    card.append(dl);
    const spark = w.spark || { cpu: [], mem: [] };
    card.append(el("div", { class: "spark" }, el("span", { class: "muted", text: "CPU" }), sparkline(spark.cpu, "spark-cpu"),
      el("span", { class: "muted", text: "mem" }), sparkline(spark.mem, "spark-mem")));
    if (canControl && $("#worker-cards.with-controls")) card.append(controls(w, late));
    return card;
  }
  function renderWorkers() {
    const box = $("#worker-cards");
    if (!box) return;
    const only = box.dataset.only;
    const workers = (state.workers || []).filter((w) => !only || w.id === only);
    const focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement.id : null;
    const cards = workers.map((w) => {
      const old = box.querySelector(`[data-worker="${CSS.escape(w.id)}"] input`);
      const card = workerCard(w);
      const input = card.querySelector("input");
      if (old && input) input.value = old.value; // keep what the operator typed
      return card;
    });
    box.replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "no worker registered" })]));
    if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
    for (const w of workers) for (const s of document.querySelectorAll(`[data-worker-state="${CSS.escape(w.id)}"]`)) {
      s.textContent = w.state; s.className = `state st-${w.state}`;
    }
  }

  // -- queues and alerts -----------------------------------------------------------------------
  function renderQueues() {
    const table = $("#queue-table");
    if (!table) return;
    const rows = (state.queues || []).map((q) => {
      const link = el("a", { href: `/queues/${encodeURIComponent(q.name)}`, text: q.name });
      const tr = el("tr", { "data-queue": q.name }, el("td", {}, link), el("td", { text: q.priority }),
        el("td", { class: "num ready", text: q.ready }), el("td", { class: "num", text: known(q.in_progress) }),
        el("td", { class: "num delayed", text: known(q.delayed) }), el("td", { class: "num dead", text: known(q.dead) }),
        el("td", { class: q.paused ? "st st-paused" : "st st-running", text: q.paused ? "paused" : "active" }));
      if (page === "queues") {
        const td = el("td");
        if (canControl) {
          const base = `/api/queue/${encodeURIComponent(q.name)}`;
          td.append(q.paused
            ? el("button", { "data-post": `${base}/resume`, "data-confirm": `Resume queue ${q.name}?`, text: "resume" })
            : el("button", { "data-post": `${base}/pause`, "data-confirm": `Pause queue ${q.name}?`, text: "pause" }),
          " ", el("button", { class: "danger", "data-post": `${base}/purge`, "data-confirm-input": q.name, "data-body-confirm": "1",
            "data-confirm": `Drop every ready message of ${q.name}? Their tasks become canceled.`, text: "purge…" }));
        }
        tr.append(td);
      }
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
  }
  function renderAlerts() {
    const list = $("#alerts");
    if (!list) return;
    const items = (state.alerts || []).map((a) => el("li", { class: a.level, "data-kind": a.kind, text: `${a.level.toUpperCase()} · ${a.message}` }));
    list.replaceChildren(...(items.length ? items : [el("li", { class: "ok", text: "no active alert" })]));
  }

  // -- the stream's health, stale heartbeats -------------------------------------------------------
  const beatTtl = Number(($('meta[name="heartbeat-ttl"]') || {}).content) || 15;
  const BASE_LABELS = { workers: "worker cards", queues: "queue counts", throughput: "charts", alerts: "alerts" };
  let liveLabels = {};  // the page sections of this socket and what each is called (from the snapshot)
  let clockSkew = 0;  // the server's clock minus this browser's (s), from the frames' meta.time
  const serverNow = () => Date.now() / 1000 + clockSkew;
  const utc = (seconds) => (seconds ? String(new Date(seconds * 1000).toISOString()).replace("T", " ").slice(0, 19) : "-");
  // "heartbeat 21 s old, past its 15 s TTL" when a worker's last beat is older than its key lives
  function beatLate(w) {
    const age = serverNow() - (w.last_seen || 0);
    return w.state !== "down" && w.last_seen && age > beatTtl
      ? `heartbeat ${Math.round(age)} s old, past its ${beatTtl} s TTL: its state is not known` : "";
  }
  let lateShown = "";
  setInterval(() => {  // a beat ages without any frame (the agent froze, or Redis did): re-check
    const now = (state.workers || []).filter(beatLate).map((w) => w.id).join(" ");
    if (now !== lateShown) { lateShown = now; renderWorkers(); renderProcs(); }
  }, 1000);
  function renderStatus() {
    const st = state.status || { redis: "ok" }, ok = st.redis === "ok";
    const conn = $("#conn"), banner = $("#stale");
    if (conn && !conn.classList.contains("conn-off")) {
      conn.textContent = ok ? "live" : "stale"; conn.className = ok ? "conn conn-on" : "conn conn-stale";
    }
    document.body.classList.toggle("is-stale", !ok);
    if (!banner) return;
    banner.hidden = ok;
    if (ok) { banner.textContent = ""; return; }
    const base = live.length ? live.filter((k) => BASE_LABELS[k]) : Object.keys(BASE_LABELS);
    const shown = [...base.map((k) => BASE_LABELS[k]), ...Object.values(liveLabels)];
    banner.textContent = `Redis unreachable (${st.reason || "no answer"}): ${shown.join(", ") || "this page"} `
      + `${shown.length > 1 ? "are" : "is"} as of ${utc(st.since)} UTC and not updating.`;
  }

  // -- live page sections: tasks, one task, one queue, one worker, the audit log ----------------------
  const kindOf = (key) => key.split(/[:?]/, 1)[0];
  const isoText = (v) => (v ? String(v).replace("T", " ").replace("Z", "").slice(0, 23) : "-");
  function renderLive(sections) {
    if (sections.includes("meta") && state.meta) clockSkew = state.meta.time - Date.now() / 1000;
    if (sections.includes("status")) renderStatus();
    if (sections.includes("workers")) renderProcs();
    for (const key of sections) {
      if (!(key in liveLabels)) continue;
      const value = state[key];
      if (value && value.error && !Array.isArray(value)) { notice(`${liveLabels[key]}: ${value.error}`, true); continue; }
      const render = { tasks: renderTaskList, task: renderTask, queue: renderQueue, worker: renderWorkerDetail, audit: renderAudit }[kindOf(key)];
      if (render) render(value);
    }
  }
  // Rows keyed by data-task: kept (so a selection survives), filled from the stream, new ones
  // copied from #task-row, gone ones removed, in the stream's order.
  function renderTaskList(data) {
    const table = $("#task-table"), tmpl = $("#task-row");
    if (!table || !tmpl) return;
    const body = table.tBodies[0];
    const old = new Map([...body.querySelectorAll("tr[data-task]")].map((tr) => [tr.dataset.task, tr]));
    const rows = data.items.map((t) => {
      const tr = old.get(t.id) || tmpl.content.firstElementChild.cloneNode(true);
      tr.dataset.task = t.id;
      for (const cell of tr.querySelectorAll("[data-field]")) {
        const f = cell.dataset.field;
        if (cell.tagName === "INPUT") { if (f === "id") cell.value = t.id; continue; }
        if (f === "id") {
          cell.href = `/tasks/${encodeURIComponent(t.id)}`;
          (cell.querySelector("code") || cell).textContent = t.id.slice(0, 8);
        } else if (f === "created_at") cell.textContent = isoText(t.created_at);
        else if (f === "status") { cell.textContent = t.status; cell.className = `st st-${t.status}`; }
        else cell.textContent = t[f] ?? "";
      }
      return tr;
    });
    body.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: table.tHead.rows[0].cells.length, class: "muted", text: "no task matches" }))]));
  }
  function setText(sel, text) { const n = $(sel); if (n) n.textContent = text; }
  function showSection(id, text) {
    const box = $(`#${id}-section`);
    if (!box) return;
    box.hidden = text === null || text === undefined || text === "";
    setText(`#${id}`, box.hidden ? "" : text);
  }
  function renderTask(t) {
    const badge = $("#task-status");
    if (badge) { badge.textContent = t.status; badge.className = `state st-${t.status}`; }
    setText("#task-attempts", t.attempts ?? 0); setText("#task-worker", t.worker || "-");
    setText("#task-started", isoText(t.started_at)); setText("#task-finished", isoText(t.finished_at));
    for (const b of document.querySelectorAll("#task-cancel[data-when]")) b.hidden = !b.dataset.when.split(" ").includes(t.status);
    showSection("task-result", t.result === null || t.result === undefined ? null : JSON.stringify(t.result, null, 2));
    showSection("task-error", t.error); showSection("task-traceback", t.traceback);
    const list = $("#task-timeline");
    if (!list) return;
    const items = (t.timeline || []).map((e) => el("li", {}, el("span", { class: `st st-${e.status}`, text: e.status }),
      ` ${utc(Number(e.ts) / 1000)}${e.worker ? ` · ${e.worker}` : ""}`));
    list.replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "no event left in the capped stream" })]));
  }
  function keyedRows(body, attr, items, key, make, empty) {
    const old = new Map([...body.querySelectorAll(`tr[${attr}]`)].map((tr) => [tr.getAttribute(attr), tr]));
    const rows = items.map((m) => { const tr = old.get(key(m)) || make(m); tr.setAttribute(attr, key(m)); return tr; });
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: empty, class: "muted", text: "none" }))]));
  }
  function renderQueue(q) {
    setText("#queue-counts", `${q.ready} ready · ${known(q.in_progress)} in progress · ${known(q.delayed)} delayed · ${known(q.dead)} dead`);
    for (const [sel, hide] of [["#queue-paused", !q.paused], ["#queue-resume", !q.paused], ["#queue-pause", q.paused], ["#queue-dead-retry", !q.dead]]) {
      const n = $(sel); if (n) n.hidden = hide;
    }
    const delayed = $("#delayed-table"), dead = $("#dead-table");
    setText("#delayed-count", q.delayed_messages.length); setText("#dead-count", q.dead_letters.length);
    const taskLink = (m) => el("td", {}, el("a", { href: `/tasks/${encodeURIComponent(m.id)}`, text: m.id }));
    if (delayed) keyedRows(delayed.tBodies[0], "data-delayed", q.delayed_messages, (m) => m.message_id || m.id, (m) => el("tr", {},
      taskLink(m), el("td", { text: m.actor }), el("td", { text: m.eta ? utc(m.eta / 1000) : "-" }), el("td", { text: m.retries ?? "" })), 4);
    if (!dead) return;
    const base = `/api/queue/${encodeURIComponent(q.name)}/dead`;
    keyedRows(dead.tBodies[0], "data-letter", q.dead_letters, (m) => m.message_id || m.id, (m) => el("tr", {},
      taskLink(m), el("td", { text: m.actor }), el("td", { text: utc(m.dead_at / 1000) }), el("td", { text: m.retries ?? "" }),
      el("td", { class: "error", text: m.error || "-" }),
      el("td", {}, m.traceback ? el("details", {}, el("summary", { text: "show" }), el("pre", { text: m.traceback.slice(0, 4000) })) : null),
      canControl ? el("td", {}, el("button", { "data-post": `${base}/${encodeURIComponent(m.message_id || m.id)}/retry`, "data-action": "retry", "data-confirm": "Requeue this message?", text: "Retry" })) : null),
    canControl ? 7 : 6);
  }
  function renderProcs() {
    const table = $("#proc-table"), box = $("#worker-cards");
    if (!table || !box) return;
    const w = (state.workers || []).find((x) => x.id === box.dataset.only);
    const section = $("#worker-procs-section");
    if (section) section.hidden = !w || w.state === "down";
    if (!w) return;
    setText("#worker-last-seen", `${utc(w.last_seen)}${beatLate(w) ? ` (${beatLate(w)})` : ""}`);
    if (w.state === "down") return;
    table.tBodies[0].replaceChildren(...(w.procs || []).map((p) => el("tr", {}, el("td", { text: p.pid }),
      el("td", { text: p.alive ? "yes" : "no" }), el("td", { text: (p.cpu_percent || 0).toFixed(1) }),
      el("td", { text: `${((p.rss_bytes || 0) / 1048576).toFixed(1)} MiB` }), el("td", { text: utc(p.started_at) }),
      el("td", { text: p.restarts ?? "" }), el("td", { class: "inflight", text: p.in_flight ?? "" }),
      el("td", { text: p.processed ?? "" }), el("td", { text: p.failed ?? "" }))));
    const queues = $("#worker-queues");
    if (queues) queues.replaceChildren(...(w.queues || []).flatMap((q) => [el("code", { text: q }), " "]));
  }
  function renderWorkerDetail(d) {
    const want = d.desired || {};
    setText("#worker-desired", `${want.state || "running"}${want.processes ? `, ${want.processes} process(es)` : ""}`);
    const table = $("#command-table");
    if (!table) return;
    const rows = (d.commands || []).map((c) => el("tr", {}, el("td", { text: utc(c.issued_at) }),
      el("td", { text: `${c.action}${c.processes !== null && c.processes !== undefined ? ` → ${c.processes}` : ""}` }),
      el("td", { text: c.issuer }), el("td", { class: `st st-${c.status}`, text: c.status }), el("td", { text: c.reason || "" }),
      el("td", { text: utc(c.updated_at) })));
    table.tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no command yet" }))]));
  }
  function renderAudit(page) {
    const table = $("#audit-table"), entries = Array.isArray(page) ? page : page.entries;  // one row per command
    if (!table) return;
    const rows = entries.map((e) => el("tr", {}, el("td", { text: utc(e.at) }),
      el("td", { text: `${e.action}${e.processes !== null && e.processes !== undefined ? ` → ${e.processes}` : ""}` }),
      el("td", {}, e.worker ? el("a", { href: `/workers/${encodeURIComponent(e.worker)}`, text: e.target }) : e.target),
      el("td", { text: e.issuer }), el("td", { class: `st st-${e.status}`, text: e.status }), el("td", { text: e.reason || "" })));
    table.tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no control action yet" }))]));
  }

  // -- charts: static/charts.js draws them from the "opsdeck:live" event and the history API ------

  // -- actions ---------------------------------------------------------------------------------
  function confirmAction(text, expected) {
    const dlg = $("#confirm");
    $("#confirm-text").textContent = text;
    const row = $("#confirm-input-row"), input = $("#confirm-input");
    row.hidden = !expected; input.value = ""; $("#confirm-expected").textContent = expected || "";
    return new Promise((resolve) => {
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok" && (!expected || input.value === expected) ? input.value || true : false), { once: true });
      dlg.showModal();
    });
  }
  async function followCommand(id, label) {
    for (let i = 0; i < 120; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const resp = await fetch(`/api/commands/${encodeURIComponent(id)}`, { credentials: "same-origin" });
      if (!resp.ok) continue;
      const rec = await resp.json();
      if (rec.status === "done" || rec.status === "failed") {
        notice(`${label}: ${rec.status}${rec.reason ? ` (${rec.reason})` : ""}`, rec.status === "failed");
        return;
      }
    }
  }
  // The API's field list (loc: msg) of a refused body, shown where the button says (data-errors-into).
  function fieldErrors(button, error) {
    const box = button.dataset.errorsInto && document.getElementById(button.dataset.errorsInto);
    if (!box) return;
    const fields = (error && error.fields) || [];
    box.hidden = !error;
    if (!error) { box.replaceChildren(); return; }
    const items = fields.map((f) => el("li", {}, el("code", { text: (f.loc || []).join(".") }), `: ${f.msg}`));
    box.replaceChildren(el("strong", { text: error.message || "refused" }), ...(items.length ? [el("ul", {}, ...items)] : []));
  }
  // For the page scripts loaded after this one (bulk.js, addtask.js): one dialog, one notice area.
  window.Opsdeck = { el, svg, notice, confirmAction, fieldErrors };
  async function post(button) {
    const ok = await confirmAction(confirmText(button), button.dataset.confirmInput);
    if (!ok) return;
    let body = null;
    if (button.dataset.bodyConfirm) body = { confirm: ok };
    if (button.dataset.bodyScale) body = { processes: Number($(`#${CSS.escape(button.dataset.bodyScale)}`).value) };
    if (button.dataset.bodyFrom) {
      try { body = { payload: JSON.parse($(`#${button.dataset.bodyFrom}`).value) }; } catch (e) {
        fieldErrors(button, { message: "payload is not JSON", fields: [{ loc: ["payload"], msg: e.message }] });
        notice(`payload is not JSON: ${e.message}`, true); return;
      }
    }
    button.disabled = true;
    try {
      const resp = await fetch(button.dataset.post, { method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : "{}" });
      const data = await resp.json().catch(() => ({}));
      fieldErrors(button, resp.ok ? null : data.error);
      if (!resp.ok) { notice(`${resp.status}: ${data.error ? data.error.message : resp.statusText}`, true); return; }
      const label = button.dataset.action || button.textContent.trim();
      if (data.command_id) { notice(`${label}: accepted (${data.command_id.slice(0, 8)})`); followCommand(data.command_id, label); }
      else if (typeof data.requeued === "number") {
        const refused = data.refused || [];
        notice(`${label}: ${data.requeued} requeued` + (refused.length ? `, ${refused.length} refused (${refused[0].reason})` : ""), refused.length > 0);
      }
      else if (data.summary) notice(`${label}: ${data.summary}`);  // a bulk command's result
      else notice(`${label}: done`);
      if (button.dataset.follow && data.id) location.assign(`/tasks/${encodeURIComponent(data.id)}`);
      else if (page === "deploy") pollDeploy();  // the other pages are live: the stream shows the change
    } finally { button.disabled = false; }
  }
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("[data-post]");
    if (button) { ev.preventDefault(); post(button); }
  });

  // -- deploys (polled JSON every 2 s) -----------------------------------------------------------
  const TERMINAL = ["succeeded", "failed", "rolled_back", "canceled"];
  const isoTime = (v) => (v ? String(v).replace("T", " ").replace("Z", "").slice(0, 19) : "-");
  const msTime = (ms) => (ms ? isoTime(new Date(ms).toISOString()) : "-");
  async function getJSON(url) {
    const resp = await fetch(url, { credentials: "same-origin" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return resp.json();
  }
  function deployRow(d) {
    const steps = (d.steps || [100]).length;
    return el("tr", { "data-deploy": d.id },
      el("td", {}, el("a", { href: `/deploys/${encodeURIComponent(d.id)}` }, el("code", { text: d.id.slice(0, 8) }))),
      el("td", { text: d.service }), el("td", {}, el("code", { text: d.version || "(latest)" })),
      el("td", { class: `st st-${d.status}`, text: d.status }),
      el("td", { text: `${(d.step || 0) + 1}/${steps} · ${d.weight || 0} %` }), el("td", { text: d.trigger || "" }),
      el("td", { text: isoTime(d.started_at || d.created_at) }), el("td", { text: isoTime(d.finished_at) }));
  }
  async function pollDeploys() {
    const table = $("#deploy-table");
    if (!table || document.hidden) return;
    const q = new URLSearchParams({ limit: table.dataset.limit || "50" });
    if (table.dataset.service) q.set("service", table.dataset.service);
    try {
      const data = await getJSON(`/api/deploys?${q}`);
      const rows = data.items.map(deployRow);
      table.tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "muted", text: "no deploy yet" }))]));
    } catch (e) { /* keep the last rows; the next poll retries */ }
  }
  function gateRow(g) {
    const checks = el("td");
    for (const r of g.results || []) {
      const extra = r.detail ? ` · ${r.detail}` : r.value !== undefined ? ` · ${r.value} (max ${r.max})` : "";
      checks.append(el("div", { text: `${r.ok ? "ok" : "FAIL"} · ${r.gate} ${r.url || r.query || ""}${extra}` }));
    }
    return el("tr", {}, el("td", { text: (g.step || 0) + 1 }), el("td", { text: `${g.weight} %` }),
      el("td", { class: `st ${g.ok ? "st-succeeded" : g.verdict === "inconclusive" ? "st-paused" : "st-failed"}`,
        text: (g.verdict || (g.ok ? "passed" : "failed")) + (g.rounds ? ` · ${g.rounds} round${g.rounds !== 1 ? "s" : ""}` : "") }),
      el("td", { text: msTime(g.at) }), checks);
  }
  const VERDICT_CLASS = { success: "st-succeeded", failure: "st-failed", inconclusive: "st-paused", error: "st-paused" };
  function measurementRow(m) {
    return el("tr", { "data-measurement": "" }, el("td", { text: m.step + 1 }), el("td", { text: m.index + 1 }),
      el("td", { text: m.metric }), el("td", { text: m.value === null || m.value === undefined ? "-" : m.value }),
      el("td", { class: `st ${VERDICT_CLASS[m.verdict] || ""}`, text: m.verdict }), el("td", { text: msTime(m.at) }),
      el("td", { text: m.detail || "" }));
  }
  function renderAnalysis(d) {
    const rows = (d.measurements || []).slice().reverse().map(measurementRow);
    $("#deploy-measurements").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted", text: "no measurement yet" }))]));
    const a = d.analysis;
    if (a) {
      const every = a.rounds > 1 ? `, every ${a.interval} s` : "";
      $("#deploy-analysis").textContent = `step ${a.step + 1} (${a.weight} %): ${a.next} of ${a.rounds} round${a.rounds !== 1 ? "s" : ""}${every} · ${a.state}`;
    }
    const judged = d.status === "paused" && d.paused_reason;
    const reason = $("#deploy-paused-reason");
    reason.hidden = !judged;
    reason.textContent = judged ? `Paused: ${d.paused_reason}. Promote (or resume) to accept this step and go on, abort to return traffic to the stable version.` : "";
  }
  // Blue-green phases (dashboard/pages_deploys.py PHASE_TEXT holds the same sentences).
  const PHASE_TEXT = {
    preview: "Deploying the new version beside the stable one: the preview takes no traffic.",
    analysis: "Pre-promotion analysis against the preview at {preview_url}: no traffic on it yet.",
    switching: "Switching all traffic to the new version.",
    switched: "All traffic is on the new version; the old one is kept until {retire_at} UTC: rollback switches back at once.",
    retired: "The old version is retired; the new one is stable.",
    discarded: "The preview was discarded: traffic never moved from the stable version.",
    switched_back: "Switched back: all traffic is on the old version again.",
  };
  function renderPhase(d) {
    const phase = $("#deploy-phase"), text = $("#deploy-blue-green");
    if (!phase || !text) return;
    phase.textContent = d.phase || "queued";
    const retire = String(d.retire_at || "-").replace("T", " ").replace(/Z$/, "");
    text.textContent = (PHASE_TEXT[d.phase] || "Waiting to start: a preview, its analysis, then one switch.")
      .replace("{preview_url}", d.preview_url || "(unknown)").replace("{retire_at}", retire);
  }
  function renderDeploy(d) {
    renderPhase(d);
    const status = $("#deploy-status");
    status.textContent = d.status; status.className = `state st-${d.status}`;
    const weight = d.weight || 0;
    $("#deploy-weight").value = weight; $("#deploy-weight").textContent = `${weight} %`;
    $("#deploy-weight-text").textContent = `${weight} % of traffic`;
    const done = (d.gates || []).length, current = d.step || 0;
    $("#deploy-steps").replaceChildren(...(d.steps || [100]).map((w, i) =>
      el("li", { class: i < done ? "done" : i === current && !TERMINAL.includes(d.status) ? "current" : "pending", text: `${w} %` })));
    const gates = (d.gates || []).map(gateRow);
    $("#deploy-gates").tBodies[0].replaceChildren(...(gates.length ? gates : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "no gate has run yet" }))]));
    renderAnalysis(d);
    const err = $("#deploy-error");
    err.textContent = d.error || ""; err.hidden = !d.error;
    $("#deploy-started").textContent = isoTime(d.started_at);
    $("#deploy-finished").textContent = isoTime(d.finished_at);
    $("#deploy-last-action").textContent = d.last_action ? `${d.last_action} by ${d.last_action_by || "?"}` : "-";
    for (const b of document.querySelectorAll("#deploy-actions [data-when]")) {
      b.hidden = !b.dataset.when.split(" ").includes(d.status);
    }
  }
  async function pollDeploy() {
    const box = $("#deploy");
    if (!box || document.hidden) return;
    try { renderDeploy(await getJSON(`/api/deploys/${encodeURIComponent(box.dataset.deploy)}`)); }
    catch (e) { /* keep what is shown; the next poll retries */ }
  }
  if (page === "deploys") setInterval(pollDeploys, 2000);
  if (page === "deploy") setInterval(pollDeploy, 2000);

  if (live.length || ["overview", "workers", "worker", "queues", "bandit"].includes(page)) connect();
  else if ($("#conn")) $("#conn").hidden = true;
})();
