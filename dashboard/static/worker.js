// The worker page's "Running now" list: every process's running task ids (its heartbeat's
// procs[].tasks, at most 20 a process), linked to their task pages, from each frame app.js renders.
"use strict";

(() => {
  const list = document.getElementById("worker-tasks"), none = document.getElementById("worker-tasks-none");
  const box = document.getElementById("worker-cards");
  if (!list || !box || !window.Opsdeck) return;
  const { el } = window.Opsdeck;
  document.addEventListener("opsdeck:live", (ev) => {
    const { state, sections } = ev.detail;
    if (!sections.includes("workers")) return;
    const w = (state.workers || []).find((x) => x.id === box.dataset.only);
    const running = w && w.state !== "down" ? (w.procs || []).flatMap((p) => (p.tasks || []).map((t) => [t, p.pid])) : [];
    list.replaceChildren(...running.map(([t, pid]) => el("li", { "data-task": t },
      el("a", { href: `/tasks/${encodeURIComponent(t)}` }, el("code", { text: t.slice(0, 8) })), " ",
      el("span", { class: "muted", text: `pid ${pid}` }))));
    const more = w && w.in_flight > running.length ? ` (${w.in_flight - running.length} more not listed)` : "";
    none.hidden = running.length > 0 && !more;
    none.textContent = running.length ? more.trim() : "no task running";
  });
})();
