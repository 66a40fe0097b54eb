"""Real-browser tests (Playwright driving Debian's chromium, as tests/dashboard/test_browser.py) of
the phone layout, the themes and the page structure (issue 19, part 7 and its accessibility list):
every main page at 390x844 has no sideways scroll, its menu opens and its links are reachable, the
connection badge shows; at 1400 px the nav is one row as before; text keeps WCAG AA contrast in the
light and the dark theme (prefers-color-scheme, emulated); the theme toggle switches, persists and
is applied before the first paint; one h1, a skip link and aria-current on every page; charts named.
A dashboard, an agent and Redis run (the worker page needs a worker)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.tasks import ECHO, SLEEP
from tests.dashboard import test_browser_tasks
from tests.dashboard.contrast import contrast
from tests.dashboard.test_api import kill
from tests.dashboard.test_browser import ARGS, CHROMIUM
from tests.dashboard.test_browser_tasks import IMG, SHOTS, submit
from tests.worker.test_end_to_end import start_agent, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
AA = 4.5
PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1400, "height": 1000}
#: A dashboard process; its base URL (the fixture of tests/dashboard/test_browser_tasks.py).
browser_env = test_browser_tasks.browser_env
#: A long error, so the dead-letter and task tables are wider than a phone.
LONG_ERROR = "UpstreamTimeout: " + "the provider did not answer within 30 s; " * 4

#: Visible elements with their own text: [description, colour, background (the first opaque box up
#: the tree that holds it), opacity down the tree]. Inside SVG (charts draw their own) and disabled
#: controls left out (WCAG exempts inactive controls).
TEXTS = """() => {
  const clear = (c) => c === 'rgba(0, 0, 0, 0)' || c === 'transparent';
  const inside = (r, n) => { const b = n.getBoundingClientRect();
    return r.left >= b.left - 1 && r.right <= b.right + 1
      && r.top >= b.top - 1 && r.bottom <= b.bottom + 1; };
  // the first opaque box up the tree that holds the text where it is drawn (text overflowing its
  // header is drawn on the page's background)
  const bgOf = (e) => { const r = e.getBoundingClientRect();
    for (let n = e; n; n = n.parentElement) { const c = getComputedStyle(n).backgroundColor;
      if (!clear(c) && (n === document.documentElement || n === document.body || inside(r, n))) return c; }
    return 'rgb(255, 255, 255)'; };
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('svg') || e.closest(':disabled')) continue;
    if (![...e.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim())) continue;
    const r = e.getBoundingClientRect(), cs = getComputedStyle(e);
    if (r.width < 2 || r.height < 2 || cs.visibility !== 'visible') continue;
    let op = 1; for (let n = e; n; n = n.parentElement) op *= +getComputedStyle(n).opacity;
    const cls = typeof e.className === 'string' && e.className.trim()
      ? '.' + e.className.trim().split(/\\s+/).join('.') : '';
    const name = e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + cls;
    out.push([name + ' "' + e.textContent.trim().slice(0, 30) + '"', cs.color, bgOf(e), op]);
  }
  return out;
}"""


@pytest.fixture
def stack(browser_env, procs, env_factory, tmp_path, rclient, redis_url) -> dict[str, str]:
    """A dashboard with a running agent, a finished task and a dead letter with a long error;
    the paths of the main pages (nav link → path)."""
    done, dead = submit(redis_url, ECHO, [{"hello": "phone"}]) + submit(redis_url, SLEEP, [{"seconds": 0}])
    kill(rclient, dead, error=LONG_ERROR)
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1)
    wait_running(rclient, "agent")
    return {"base": browser_env, "done": done, "dead": dead}


def main_pages(stack: dict[str, str]) -> list[tuple[str, str | None]]:
    """(path, the nav link that is the current page) of every main page."""
    return [
        ("/", "/"),
        ("/workers", "/workers"),
        ("/workers/agent", "/workers"),
        ("/queues", "/queues"),
        ("/queues/default.p2", "/queues"),
        ("/tasks", "/tasks"),
        (f"/tasks/{stack['done']}", "/tasks"),
        (f"/tasks/{stack['dead']}", "/tasks"),
        ("/deploys", "/deploys"),
        ("/audit", "/audit"),
        ("/bandit", "/bandit"),
        ("/tasks/new", "/tasks"),
        ("/tasks/00000000-0000-4000-8000-00000000dead", None),  # the 404 page
    ]


def open_browser(pw: Any, viewport: dict[str, int], scheme: str) -> tuple[Any, Any, list[str]]:
    """Chromium with one context (``viewport``, ``prefers-color-scheme: scheme``) and a page; the
    list that collects the page's console errors."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_context(viewport=viewport, color_scheme=scheme).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return browser, page, errors


def settle(page: Any) -> None:
    """Until the page's live stream (if it has one) said something: the badge left 'connecting…'."""
    page.wait_for_load_state("load")
    page.wait_for_function(
        "() => { const c = document.querySelector('#conn');"
        " return !c || c.hidden || c.textContent !== 'connecting…'; }",
        timeout=15_000,
    )
    time.sleep(0.3)  # the first frame's rendering


def scroll_width(page: Any) -> int:
    return int(page.evaluate("() => document.documentElement.scrollWidth"))


def low_contrast(page: Any) -> list[tuple[str, float]]:
    """The visible texts of the page under 4.5:1 against their background."""
    bad = []
    for name, fg, bg, opacity in page.evaluate(TEXTS):
        ratio = contrast(fg, bg)
        if opacity >= 0.99 and ratio < AA:
            bad.append((f"{name} {fg} on {bg}", round(ratio, 2)))
    return bad


def structure(page: Any, current: str | None) -> None:
    """One h1, the skip link to <main id=main>, aria-current on ``current``'s nav link only, every
    chart (SVG role=img) named."""
    assert page.locator("h1").count() == 1, page.url
    assert page.locator("a.skip-link[href='#main']").count() == 1 and page.locator("main#main").count() == 1
    if current is not None:
        marked = page.locator("header nav a[aria-current=page]")
        assert marked.count() == 1 and marked.get_attribute("href") == current, page.url
    unnamed = page.evaluate(
        "() => [...document.querySelectorAll('svg[role=img]')].filter((s) => !s.getAttribute('aria-label')"
        " && !s.querySelector(':scope > title')).length"
    )
    assert unnamed == 0, page.url


def phone_menu(page: Any) -> None:
    """The nav sits behind the Menu button: closed, its links are hidden; opened, every link and Log
    out are visible inside the screen's width, and the page still does not scroll sideways."""
    button = page.locator("header .menu-toggle")
    assert button.is_visible() and button.get_attribute("aria-expanded") == "false"
    assert not page.locator("header nav a").first.is_visible()
    button.click()
    assert button.get_attribute("aria-expanded") == "true"
    for link in [*page.locator("header nav a").all(), page.locator("header .logout button")]:
        box = link.bounding_box()
        assert link.is_visible() and box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    assert scroll_width(page) <= PHONE["width"]


def badge_shown(page: Any) -> None:
    """The connection badge is on the screen (in the header's first row) and announced."""
    conn = page.locator("#conn")
    if conn.is_hidden():  # a page without a live stream (deploys: its own poll)
        return
    box = conn.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] and box["y"] < 60, box
    assert conn.get_attribute("role") == "status" and conn.get_attribute("aria-live") == "polite"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_fits_a_phone_in_both_themes(stack, token, scheme):
    from playwright.sync_api import sync_playwright

    base = stack["base"]
    with sync_playwright() as pw:
        browser, page, errors = open_browser(pw, PHONE, scheme)
        page.goto(f"{base}/login")
        assert page.evaluate("() => document.documentElement.dataset.theme") == scheme
        assert scroll_width(page) <= PHONE["width"]
        structure(page, None)
        assert low_contrast(page) == [], "login"
        page.fill('input[name="token"]', token("admin", sub="olivia"))
        page.click('button[type="submit"]')
        page.wait_for_url(f"{base}/")
        widths, bad = {}, {}
        for path, current in main_pages(stack):
            page.goto(f"{base}{path}")
            settle(page)
            widths[path] = scroll_width(page)
            structure(page, current)
            badge_shown(page)
            bad[path] = low_contrast(page)
            phone_menu(page)
            bad[path] += low_contrast(page)  # the open menu: nav text and Log out on the header
            if path == "/" and scheme == "light":
                page.screenshot(path=str(IMG / "dashboard-phone-390.png"))
            page.screenshot(
                path=str(SHOTS / f"phone-{scheme}{path.replace('/', '-')[:40]}.png"), full_page=True
            )
        assert all(w <= PHONE["width"] for w in widths.values()), widths
        assert {p: b for p, b in bad.items() if b} == {}
        # a wide table scrolls inside itself, not the page
        page.goto(f"{base}/queues/default.p2")
        table = page.locator("#dead-table")
        assert table.evaluate(
            "t => t.scrollWidth > t.clientWidth && getComputedStyle(t).overflowX === 'auto'"
        )
        # the menu's links are reachable: one opens its page
        page.click("header .menu-toggle")
        page.click("header nav a[href='/workers']")
        page.wait_for_url(f"{base}/workers")
        assert page.locator("header nav a[aria-current=page]").get_attribute("href") == "/workers"
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


THEME_AT_BODY = """new MutationObserver((_, seen) => { if (document.body) {
  window.themeAtBody = document.documentElement.dataset.theme || null; seen.disconnect(); } })
  .observe(document, { childList: true, subtree: true });"""


def test_wide_nav_is_one_row_and_the_theme_toggle_persists(stack, token):
    from playwright.sync_api import sync_playwright

    base = stack["base"]
    with sync_playwright() as pw:
        browser, page, errors = open_browser(pw, WIDE, "light")
        page.goto(f"{base}/login")
        page.fill('input[name="token"]', token("admin", sub="olivia"))
        page.click('button[type="submit"]')
        page.wait_for_url(f"{base}/")
        settle(page)
        # 1400 px: no menu button, the nav's links, search, badge, who and Log out in one header row
        assert page.locator("header .menu-toggle").is_hidden()
        header = page.locator("header").bounding_box()
        assert header and header["height"] < 60, header
        row = ["header nav a", "header .search input", "#conn", "header .who", "header .logout button"]
        for sel in row:
            for item in page.locator(sel).all():
                box = item.bounding_box()
                assert item.is_visible() and box and box["y"] < header["height"], (sel, box)
        links = page.locator("header nav a")
        assert links.all_inner_texts() == [
            "Overview",
            "Workers",
            "Queues",
            "Tasks",
            "Deploys",
            "Bandit",
            "Audit",
        ]
        xs = [b["x"] for b in (link.bounding_box() for link in links.all()) if b]
        assert xs == sorted(xs) and len(set(xs)) == 7  # left to right, as before
        assert page.locator("header nav a[aria-current=page]").get_attribute("href") == "/"
        assert scroll_width(page) <= WIDE["width"]
        # between a phone and a wide screen (a tablet, a half-screen window) the header wraps instead
        for width in (761, 900, 1100):
            page.set_viewport_size({"width": width, "height": 900})
            assert page.locator("header .menu-toggle").is_hidden()
            assert scroll_width(page) <= width, width
        page.set_viewport_size(WIDE)
        # the system's theme (light here) until the toggle says otherwise; the toggle flips and persists
        toggle = page.locator("#theme-toggle")
        theme = "() => document.documentElement.dataset.theme"
        assert page.evaluate(theme) == "light" and toggle.get_attribute("aria-pressed") == "false"
        light_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        toggle.click()
        assert page.evaluate(theme) == "dark" and toggle.get_attribute("aria-pressed") == "true"
        assert page.evaluate("() => localStorage.getItem('opsdeck-theme')") == "dark"
        dark_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert contrast(light_bg, dark_bg) > 5  # a different theme, not a tint
        assert low_contrast(page) == []
        page.screenshot(path=str(IMG / "dashboard-dark-1400.png"))
        # a new page of the same browser: dark from its first paint (set before <body> exists)
        page.context.add_init_script(THEME_AT_BODY)
        for path in ("/workers", "/tasks"):
            page.goto(f"{base}{path}")
            assert page.evaluate("() => window.themeAtBody") == "dark", path
            assert page.locator("#theme-toggle").get_attribute("aria-pressed") == "true"
        other = page.context.new_page()
        other.goto(f"{base}/queues")
        assert other.evaluate("() => window.themeAtBody") == "dark"
        # back to light, remembered too, even though the system says dark now
        other.emulate_media(color_scheme="dark")
        other.locator("#theme-toggle").click()
        other.reload()
        assert other.evaluate("() => window.themeAtBody") == "light"
        assert other.evaluate("() => localStorage.getItem('opsdeck-theme')") == "light"
        # the skip link: the first Tab stop, shown when focused, moves focus to <main>
        other.keyboard.press("Tab")
        skip = other.locator("a.skip-link")
        assert other.evaluate("() => document.activeElement.className") == "skip-link"
        box = skip.bounding_box()
        assert box and box["width"] > 40 and box["height"] > 15, box
        other.keyboard.press("Enter")
        assert other.evaluate("() => document.activeElement.id") == "main"
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
