// Opsdeck dashboard: colour theme and the phone menu. Loaded in <head> without defer, so the theme
// is on <html data-theme> before the first paint (no light flash on a dark system).
// Theme: the choice stored in this browser (localStorage "opsdeck-theme": "dark" | "light"), else
// the system's prefers-color-scheme (followed live). The #theme-toggle button (aria-pressed = dark)
// flips and stores it. Menu: .menu-toggle's aria-expanded shows/hides #site-menu (app.css, phones).
"use strict";

(() => {
  const KEY = "opsdeck-theme";
  const root = document.documentElement;
  const system = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  let unsaved = null;  // the choice when localStorage refuses to keep it
  function stored() {
    try { return localStorage.getItem(KEY) || unsaved; } catch (e) { return unsaved; }  // storage may be off
  }
  function apply() {
    const choice = stored();
    const dark = choice === "dark" || choice === "light" ? choice === "dark" : Boolean(system && system.matches);
    root.dataset.theme = dark ? "dark" : "light";
    root.dataset.themeFrom = choice ? "choice" : "system";
    const button = document.getElementById("theme-toggle");
    if (button) button.setAttribute("aria-pressed", String(dark));
  }
  apply();
  if (system && system.addEventListener) system.addEventListener("change", apply);
  window.addEventListener("storage", (e) => { if (e.key === KEY) apply(); });  // other tabs

  function toggleTheme() {
    const next = root.dataset.theme === "dark" ? "light" : "dark";
    unsaved = next;
    try { localStorage.setItem(KEY, next); } catch (e) { /* not remembered, still switched */ }
    apply();
  }

  function wireMenu() {
    const button = document.querySelector(".menu-toggle");
    const menu = button && document.getElementById(button.getAttribute("aria-controls"));
    if (!menu) return;
    const set = (open) => button.setAttribute("aria-expanded", String(open));
    button.addEventListener("click", () => set(button.getAttribute("aria-expanded") !== "true"));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && button.getAttribute("aria-expanded") === "true") { set(false); button.focus(); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    apply();
    const button = document.getElementById("theme-toggle");
    if (button) button.addEventListener("click", toggleTheme);
    wireMenu();
  });
})();
