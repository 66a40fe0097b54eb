// Opsdeck dashboard: bulk actions (operators and admins). The tasks page: select rows (or every
// task matching the page's filters, counted first) → retry, cancel or delete the records; clean
// finished records by age with a preview. A queue page: select dead letters → retry or delete,
// delayed messages → run now. Each is one command (POST), answered with its summary. No inline
// script (CSP); the confirmation dialog and notices are app.js's (window.Opsdeck).
"use strict";

(() => {
  if (!["operator", "admin"].includes(document.body.dataset.role)) return;
  const $ = (sel, root = document) => root.querySelector(sel);
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const ui = window.Opsdeck || {};
  const notice = ui.notice || ((text) => console.log(text));
  const confirmAction = ui.confirmAction || ((text) => Promise.resolve(window.confirm(text)));

  async function send(url, body) {
    const resp = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = data.error || {};
      const fields = (err.fields || []).map((f) => `${(f.loc || []).join(".")}: ${f.msg}`).join("; ");
      notice(`${resp.status}: ${err.message || resp.statusText}${fields ? ` (${fields})` : ""}`, true);
      return null;
    }
    return data;
  }
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  // -- the tasks page ----------------------------------------------------------------------------
  const FILTER_KEYS = ["type", "status", "priority", "since", "until", "error"];
  function pageFilter() {
    const params = new URLSearchParams(location.search), out = {};
    for (const k of FILTER_KEYS) if (params.get(k)) out[k] = params.get(k);
    return out;
  }
  function taskBulk() {
    const bar = $("#task-bulk"), table = $("#task-table");
    if (!bar || !table) return;
    const all = $("#bulk-all"), allCount = $("#bulk-all-count"), pageBox = $("#bulk-page");
    let matching = null;  // the count of "every task matching", once asked
    const boxes = () => [...table.tBodies[0].querySelectorAll('input[type=checkbox][data-field="id"]')];
    const selected = () => boxes().filter((b) => b.checked && b.value).map((b) => b.value);
    function refresh() {
      const n = selected().length;
      $("#bulk-selected").textContent = all.checked ? `all ${matching ?? "…"} matching` : `${n} selected`;
      const usable = all.checked ? matching > 0 : n > 0;
      for (const b of bar.querySelectorAll("[data-bulk]")) b.disabled = !usable;
      for (const b of boxes()) b.disabled = all.checked;
      if (pageBox) pageBox.checked = boxes().length > 0 && boxes().every((b) => b.checked);
    }
    table.addEventListener("change", (ev) => {
      if (ev.target === pageBox) for (const b of boxes()) b.checked = pageBox.checked;
      refresh();
    });
    new MutationObserver(refresh).observe(table.tBodies[0], { childList: true });  // live rows
    all.addEventListener("change", async () => {
      matching = null; allCount.textContent = "";
      refresh();
      if (!all.checked) return;
      const resp = await fetch(`/api/tasks/count?${new URLSearchParams(pageFilter())}`, { credentials: "same-origin" });
      const data = await resp.json().catch(() => ({}));
      if (!resp.ok) { notice(`count: ${(data.error || {}).message || resp.status}`, true); all.checked = false; refresh(); return; }
      if (data.too_many) { allCount.textContent = `(${data.message})`; matching = 0; }
      else { matching = data.count; allCount.textContent = `(${plural(data.count, "task", "tasks")})`; }
      refresh();
    });
    bar.addEventListener("click", async (ev) => {
      const button = ev.target.closest("[data-bulk]");
      if (!button) return;
      const action = button.dataset.bulk, ids = selected();
      const what = all.checked ? `every task matching these filters (${plural(matching, "task", "tasks")})`
        : `the ${plural(ids.length, "selected task", "selected tasks")}`;
      const verb = { retry: "Retry (submit again, once per failure)", cancel: "Cancel", delete: "Delete the records of" }[action];
      if (!(await confirmAction(`${verb} ${what}? Tasks it does not apply to are skipped and counted.`))) return;
      button.disabled = true;
      const data = await send("/api/tasks:bulk", all.checked ? { action, filter: pageFilter() } : { action, ids });
      if (data) {
        notice(`${action}: ${data.summary}`);
        for (const b of boxes()) b.checked = false;
        all.checked = false; matching = null; allCount.textContent = "";
      }
      refresh();
    });
    refresh();
  }

  function cleanForm() {
    const form = $("#clean-form");
    if (!form) return;
    const run = $("#clean-run"), result = $("#clean-result");
    const body = () => {
      const b = { older_than_hours: Number($("#clean-hours").value) };
      if ($("#clean-type").value) b.type = $("#clean-type").value;
      if ($("#clean-status").value) b.status = $("#clean-status").value;
      return b;
    };
    let previewed = null;
    form.addEventListener("input", () => { run.hidden = true; previewed = null; result.textContent = ""; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      run.hidden = true;
      const data = await send("/api/tasks:clean", { ...body(), preview: true });
      if (!data) return;
      previewed = body();
      result.textContent = `${plural(data.matched, "record", "records")} would be deleted (${data.what}).`;
      run.textContent = `Delete ${plural(data.matched, "record", "records")}`;
      run.hidden = data.matched === 0;
    });
    run.addEventListener("click", async () => {
      if (!previewed) return;
      if (!(await confirmAction(`${run.textContent}? This cannot be undone.`))) return;
      run.disabled = true;
      const data = await send("/api/tasks:clean", previewed);
      run.disabled = false;
      if (!data) return;
      notice(`clean: ${data.summary}`);
      result.textContent = `${data.summary} (${data.what}).`;
      run.hidden = true; previewed = null;
    });
  }

  // -- a queue page: dead letters and delayed messages ------------------------------------------
  function messageTable(table, attr, actions) {
    if (!table) return;
    const queue = decodeURIComponent(location.pathname.split("/")[2] || "");
    const head = table.tHead.rows[0];
    if (!head.querySelector("th.sel")) {
      const all = document.createElement("input");
      Object.assign(all, { type: "checkbox", className: "sel-all" });
      all.setAttribute("aria-label", "Select every row");
      const th = document.createElement("th"); th.className = "sel"; th.append(all);
      head.prepend(th);
    }
    const rows = () => [...table.tBodies[0].querySelectorAll(`tr[${attr}]`)];
    function addBoxes() {  // the live stream adds rows of its own: give each a box
      for (const tr of rows()) if (!tr.querySelector("td.sel")) {
        const box = document.createElement("input");
        Object.assign(box, { type: "checkbox", value: tr.getAttribute(attr) });
        box.setAttribute("aria-label", `Select ${tr.getAttribute(attr).slice(0, 8)}`);
        const td = document.createElement("td"); td.className = "sel"; td.append(box);
        tr.prepend(td);
      }
    }
    const bar = document.createElement("div");
    bar.className = "bulk-bar"; bar.setAttribute("role", "group");
    const count = document.createElement("span"); count.setAttribute("role", "status");
    bar.append(count);
    const buttons = actions.map(([label, url, body, confirmText, cls]) => {
      const b = document.createElement("button");
      Object.assign(b, { type: "button", textContent: label, className: cls || "" });
      b.addEventListener("click", async () => {
        const ids = selected();
        if (!ids.length || !(await confirmAction(confirmText(ids.length)))) return;
        b.disabled = true;
        const data = await send(`/api/queue/${encodeURIComponent(queue)}/${url}`, body(ids));
        b.disabled = false;
        if (data) { notice(`${label}: ${data.summary}`); for (const x of boxes()) x.checked = false; }
        refresh();
      });
      bar.append(" ", b);
      return b;
    });
    table.before(bar);
    const boxes = () => [...table.tBodies[0].querySelectorAll("td.sel input")];
    const selected = () => boxes().filter((b) => b.checked).map((b) => b.value);
    function refresh() {
      addBoxes();
      const n = selected().length;
      count.textContent = `${n} selected`;
      for (const b of buttons) b.disabled = n === 0;
      const all = head.querySelector(".sel-all");
      all.checked = boxes().length > 0 && boxes().every((b) => b.checked);
    }
    table.addEventListener("change", (ev) => {
      if (ev.target.classList.contains("sel-all")) for (const b of boxes()) b.checked = ev.target.checked;
      refresh();
    });
    new MutationObserver(refresh).observe(table.tBodies[0], { childList: true });
    refresh();
  }

  taskBulk();
  cleanForm();
  messageTable($("#dead-table"), "data-letter", [
    ["Retry selected", "dead/bulk", (ids) => ({ action: "retry", ids }), (n) => `Run the ${plural(n, "selected dead letter", "selected dead letters")} again?`],
    ["Delete selected", "dead/bulk", (ids) => ({ action: "delete", ids }), (n) => `Delete the ${plural(n, "selected dead letter", "selected dead letters")}? Their tasks stay dead.`, "danger"],
  ]);
  messageTable($("#delayed-table"), "data-delayed", [
    ["Run selected now", "delayed/run", (ids) => ({ ids }), (n) => `Run the ${plural(n, "selected delayed message", "selected delayed messages")} now instead of at their ETA?`],
  ]);
})();
