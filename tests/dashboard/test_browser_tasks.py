"""Real-browser tests (Playwright driving Debian's chromium, as tests/dashboard/test_browser.py)
of finding and fixing a task: an invalid edited payload shows the API's field list next to the
editor in readable colours; a short id in the header's search box opens the task; error pages
are pages of the site. Only a dashboard and Redis run (no worker: nothing needs executing)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.devtools.embedded_redis import free_port
from shared.settings import Settings
from shared.tasks import ECHO, SLEEP, Priority, TaskType
from shared.taskstore import TaskStore
from tests.conftest import ROOT, SECRET
from tests.dashboard.conftest import KEYS
from tests.dashboard.contrast import contrast
from tests.dashboard.test_browser import log_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SHOTS = ROOT / "var" / "screenshots"
IMG = ROOT / "docs" / "img"
AA = 4.5


def submit(redis_url: str, task_type: TaskType, payloads: list[dict[str, Any]]) -> list[str]:
    """Record tasks as the coordinator does; their ids."""

    async def go() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        store = TaskStore(client, Settings(redis_url=redis_url, jwt_secret=SECRET))  # type: ignore[arg-type]
        ids = [
            (await store.submit(task_type, p, Priority.P2, subject="browser", correlation_id="c")).task_id
            for p in payloads
        ]
        await store.aclose()
        await client.aclose()
        return ids

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        return pool.submit(asyncio.run, go()).result()


def fail(rclient: Any, task_id: str, error: str) -> None:
    """Make a recorded task failed, as the worker's lifecycle middleware would."""
    rclient.hset(KEYS.task(task_id), mapping={"status": "failed", "error": error})
    rclient.zrem(KEYS.tasks_by_status("queued"), task_id)
    rclient.zadd(KEYS.tasks_by_status("failed"), {task_id: rclient.zscore(KEYS.tasks_all, task_id)})


@pytest.fixture
def browser_env(procs, env_factory, tmp_path):
    """A dashboard process; yields its base URL."""
    pytest.importorskip("playwright")
    from tests.dashboard.test_browser import ensure_chromium

    ensure_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs.start("dashboard", env_factory(DASHBOARD_PORT=port), tmp_path / "dash.log")
    return f"http://127.0.0.1:{port}"


def colours(page: Any, selector: str) -> tuple[str, str]:
    """Computed text colour and the first non-transparent background up the tree."""
    fg, bg = page.eval_on_selector(
        selector,
        """e => { const fg = getComputedStyle(e).color; let n = e, bg = 'rgba(0, 0, 0, 0)';
        while (n && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
          bg = getComputedStyle(n).backgroundColor; n = n.parentElement; }
        return [fg, bg]; }""",
    )
    return str(fg), str(bg)


def open_menu(page: Any) -> None:
    """On a phone, open the header's menu (the nav, who and Log out sit behind its button)."""
    button = page.locator("header .menu-toggle")
    if button.is_visible() and button.get_attribute("aria-expanded") != "true":
        button.click()


@pytest.mark.parametrize("width", [1400, 390])
def test_invalid_edited_payload_shows_its_field_errors(browser_env, rclient, redis_url, token, width):
    from playwright.sync_api import sync_playwright

    (task_id,) = submit(redis_url, SLEEP, [{"seconds": 0}])
    fail(rclient, task_id, "RequestedFailure: boom")
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("operator", sub="olga"), {"width": width, "height": 900}
        )
        page.goto(f"{browser_env}/tasks/{task_id}")
        fg, bg = colours(page, "pre.error")
        assert contrast(fg, bg) >= AA, (fg, bg)
        page.click("summary:has-text('Retry with an edited payload')")
        page.fill("#edited-payload", '{"seconds": "soon", "extra": 1}')
        page.click("button[data-body-from=edited-payload]")
        page.click("#confirm-ok")
        box = page.wait_for_selector("#edited-payload-errors li")
        assert box is not None
        text = page.locator("#edited-payload-errors").inner_text()
        assert "payload is invalid for its type" in text
        assert "payload.seconds: " in text and "payload.extra: " in text, text
        fg, bg = colours(page, "#edited-payload-errors li")
        assert contrast(fg, bg) >= AA, (fg, bg)
        # the list sits by the editor, above the Error section
        editor = page.locator("#edited-payload").bounding_box()
        listed = page.locator("#edited-payload-errors").bounding_box()
        assert editor and listed and 0 <= listed["y"] - (editor["y"] + editor["height"]) < 40
        page.screenshot(path=str(SHOTS / f"task-field-errors-{width}.png"), full_page=True)
        if width == 1400:
            page.screenshot(path=str(IMG / "dashboard-task-field-errors.png"), full_page=False)
        # a valid payload goes through and opens the new task
        page.fill("#edited-payload", '{"seconds": 0.1}')
        page.click("button[data-body-from=edited-payload]")
        page.click("#confirm-ok")
        page.wait_for_url(lambda url: task_id not in url and "/tasks/" in url, timeout=10_000)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.parametrize("width", [1400, 390])
def test_error_pages_are_pages_of_the_site(browser_env, procs, env_factory, tmp_path, token, width):
    """A 404 page with the nav and a way back; a 503 page while Redis is down, rendered without
    Redis (a dashboard whose Redis does not answer, and a valid session cookie for it)."""
    from playwright.sync_api import sync_playwright

    from dashboard.auth import COOKIE, Sessions

    down_port = free_port()
    procs.start(
        "dashboard",
        env_factory(
            DASHBOARD_PORT=down_port, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_TIMEOUT="0.3"
        ),
        tmp_path / "dash-down.log",
    )
    down = f"http://127.0.0.1:{down_port}"
    settings = Settings(jwt_secret=SECRET)  # type: ignore[arg-type]
    cookie = Sessions(settings.jwt_key, settings.dashboard_session_ttl, False).issue("olga", "operator")
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("viewer", sub="vic"), {"width": width, "height": 800}
        )
        page.wait_for_url(f"{browser_env}/")
        page.goto(f"{browser_env}/tasks/00000000-0000-4000-8000-00000000dead")
        assert page.locator("h1").inner_text() == "404 Not found"
        assert "not found" in page.locator(".error-page .what").inner_text()
        open_menu(page)
        assert page.locator("header nav a[href='/workers']").is_visible()
        assert "vic" in page.locator("header").inner_text()
        page.screenshot(path=str(SHOTS / f"error-404-{width}.png"), full_page=True)
        page.click(".error-page a[href='/tasks']")
        page.wait_for_url(f"{browser_env}/tasks")
        assert page.locator("h1").inner_text() == "Tasks"

        context = page.context
        context.add_cookies([{"name": COOKIE, "value": cookie, "url": down}])
        for _ in range(100):  # the second dashboard may still be starting
            try:
                response = page.goto(f"{down}/queues")
                break
            except Exception:
                time.sleep(0.1)
        assert response is not None and response.status == 503
        assert page.locator("h1").inner_text() == "503 Unavailable"
        assert "Redis is unavailable" in page.locator(".error-page").inner_text()
        open_menu(page)
        assert page.locator("header nav a[href='/tasks']").is_visible()  # the minimal nav
        assert "olga" not in page.locator("header").inner_text()
        assert page.locator(".error-page a:has-text('Try again')").get_attribute("href") == "/queues"
        page.screenshot(path=str(SHOTS / f"error-503-{width}.png"), full_page=True)
        if width == 1400:
            page.screenshot(path=str(IMG / "dashboard-503.png"))
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.parametrize("width", [1400, 390])
def test_find_a_failed_task_by_its_short_id_and_save_a_view(browser_env, rclient, redis_url, token, width):
    """The failed task's 8-character id, typed into the header's search box, opens the task; a
    prefix of several ids lists them; an unknown one says "no task". The tasks page searches by
    error text and keeps the filters as a saved view."""
    from playwright.sync_api import sync_playwright

    ids = submit(redis_url, ECHO, [{"i": i} for i in range(30)])
    failed = ids[11]
    fail(rclient, failed, "TimeoutError: upstream timed out after 30 s")
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("viewer", sub="vic"), {"width": width, "height": 900}
        )
        page.wait_for_url(f"{browser_env}/")
        page.goto(f"{browser_env}/tasks?status=failed")
        short = page.locator("table.grid tbody tr td a code").first.inner_text()
        assert short == failed[:8]
        page.fill("header .search input[name=q]", short)
        page.press("header .search input[name=q]", "Enter")
        page.wait_for_url(f"{browser_env}/tasks/{failed}")
        assert failed in page.locator("h1").inner_text()
        page.screenshot(path=str(SHOTS / f"find-task-{width}.png"), full_page=True)

        first = max({i[0] for i in ids}, key=lambda c: sum(i[0] == c for i in ids))
        page.fill("header .search input[name=q]", first)
        page.press("header .search input[name=q]", "Enter")
        page.wait_for_selector("#matches")
        listed = page.locator("#matches tbody tr").count()
        assert listed == sum(i[0] == first for i in ids) >= 2

        other = "f" if not any(i.startswith("ffff") for i in ids) else "e"
        page.fill("header .search input[name=q]", other * 4)
        page.press("header .search input[name=q]", "Enter")
        page.wait_for_selector(".no-task")
        assert "No task has an id starting with" in page.locator(".no-task").inner_text()

        # search by error text, then keep it as a saved view
        page.goto(f"{browser_env}/tasks")
        page.fill("input[name=error]", "timed out")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/tasks?*error=timed+out*")
        rows = page.locator("table.grid").first.locator("tbody tr")
        assert rows.count() == 1 and failed[:8] in rows.first.inner_text()
        page.fill("#save-view input[name=name]", "timeouts")
        page.click("#save-view button")
        page.wait_for_selector(".ok-note")
        page.goto(f"{browser_env}/tasks")
        page.click("#saved-views a:has-text('timeouts')")
        page.wait_for_url("**/tasks?*error=timed+out*")
        assert page.locator("input[name=error]").input_value() == "timed out"
        assert page.locator("#saved-views a[aria-current=page]").inner_text() == "timeouts"
        page.screenshot(path=str(SHOTS / f"tasks-saved-view-{width}.png"), full_page=True)
        if width == 1400:
            page.screenshot(path=str(IMG / "dashboard-tasks-search.png"))
        page.click("#saved-views button[aria-label='Delete view timeouts']")
        page.wait_for_url(f"{browser_env}/tasks")
        assert page.locator("#saved-views a").count() == 0
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert rclient.hlen(KEYS.saved_views("vic")) == 0
