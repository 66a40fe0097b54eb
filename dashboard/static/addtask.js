// Opsdeck dashboard: the add-a-task form (/tasks/new). The type picker shows the type's payload
// schema and fills the editor with a starting payload from it; the form posts to POST /api/tasks
// (the coordinator's validation) and a refused payload shows the API's field list by the editor
// (app.js's field-error rendering, the one the edit-and-retry editor uses).
"use strict";

(() => {
  const form = document.getElementById("add-task");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const ui = window.Opsdeck || {};
  const notice = ui.notice || ((text) => console.log(text));
  const fieldErrors = ui.fieldErrors || (() => {});
  const type = $("add-type"), payload = $("add-payload"), submit = $("add-submit");
  let touched = false;  // the operator typed a payload: a type change keeps it

  // A starting payload: each required property's default, else a value of its type.
  function example(schema) {
    const out = {};
    const props = schema.properties || {};
    for (const name of schema.required || []) {
      const p = props[name] || {};
      const kind = Array.isArray(p.type) ? p.type[0] : p.type;
      out[name] = p.default !== undefined ? p.default
        : p.enum ? p.enum[0] : kind === "number" || kind === "integer" ? (p.minimum ?? 0)
        : kind === "boolean" ? false : kind === "array" ? [] : kind === "object" ? {} : "";
    }
    return out;
  }
  function chosen() {
    const opt = type.selectedOptions[0];
    let schema = {};
    try { schema = JSON.parse(opt.dataset.schema || "{}"); } catch (e) { /* shown empty */ }
    return { name: opt.value, schema, description: opt.dataset.description || "" };
  }
  function showType() {
    const t = chosen();
    $("add-type-description").textContent = t.description;
    $("add-schema-type").textContent = t.name;
    $("add-schema").textContent = JSON.stringify(t.schema, null, 2);
    if (!touched) payload.value = JSON.stringify(example(t.schema), null, 2);
    fieldErrors(submit, null);
    for (const n of form.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
  }
  // Mark the inputs the API named (loc ["body", <field>, ...] or ["body.payload", ...]).
  function markInvalid(error) {
    for (const f of (error && error.fields) || []) {
      const loc = (f.loc || []).join(".");
      const input = loc.startsWith("body.payload") ? payload : loc === "body.priority" ? $("add-priority")
        : loc === "body.idempotency_key" ? $("add-key") : loc === "body.type" ? type : null;
      if (input) input.setAttribute("aria-invalid", "true");
    }
  }
  type.addEventListener("change", showType);
  payload.addEventListener("input", () => { touched = true; });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const n of form.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
    let body;
    try {
      const value = JSON.parse(payload.value || "{}");
      body = { type: type.value, payload: value, priority: $("add-priority").value };
    } catch (e) {
      const error = { message: "payload is not JSON", fields: [{ loc: ["payload"], msg: e.message }] };
      fieldErrors(submit, error); markInvalid({ fields: [{ loc: ["body.payload"] }] });
      return;
    }
    if ($("add-key").value) body.idempotency_key = $("add-key").value;
    submit.disabled = true;
    try {
      const resp = await fetch("/api/tasks", { method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const data = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        fieldErrors(submit, data.error || { message: `HTTP ${resp.status}` });
        markInvalid(data.error);
        return;
      }
      fieldErrors(submit, null);
      notice(data.created ? `task ${data.id.slice(0, 8)} added` : `idempotency key seen before: task ${data.id.slice(0, 8)}`);
      location.assign(`/tasks/${encodeURIComponent(data.id)}`);
    } finally { submit.disabled = false; }
  });
  showType();
})();
