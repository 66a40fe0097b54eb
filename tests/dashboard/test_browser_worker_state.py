"""Real-browser test (Playwright driving Debian's chromium, as tests/dashboard/test_browser.py) of
a worker's controls following its state (issue 19, part 8) and the audit page (part 9): on a
running worker Start is disabled; the scale dialog names the count asked for; a running sleep task
is listed under "Running now", linked to its page; after Stop the Start button enables live (no
reload) and Stop disables; the audit page shows one row per command with its outcome and the
issuer's name, filters by issuer and action. Screenshot docs/img/dashboard-audit.png."""

from __future__ import annotations

from typing import Any

import pytest

from shared.tasks import SLEEP
from tests.dashboard.test_browser import log_in, submit
from tests.dashboard.test_browser_live import IMG, LIVE, NO_RELOAD, SHOTS, dashboard
from tests.worker.test_end_to_end import start_agent, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CARD = '.card[data-worker="agent"]'


def button(action: str) -> str:
    return f"{CARD} button[data-action={action}]"


def set_processes(page: Any, value: str) -> None:
    """Type ``value`` into the card's processes box (a heartbeat may re-render the card mid-typing:
    it keeps what was typed, but a keystroke can land in the box it replaced)."""
    box = f"{CARD} input[aria-label=processes]"
    for _ in range(20):
        page.fill(box, value)
        if page.input_value(box) == value:
            return
    raise AssertionError(f"the processes box does not keep {value!r}")


def test_controls_follow_the_state_and_the_audit_page(
    procs, env_factory, tmp_path, rclient, redis_url, token
):
    from playwright.sync_api import sync_playwright

    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1, SHUTDOWN_TIMEOUT=10)
    wait_running(rclient, "agent")
    base = dashboard(procs, env_factory, tmp_path)
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, base, token("operator", sub="olivia"), {"width": 1400, "height": 1000}
        )
        page.goto(f"{base}/workers/agent")
        page.wait_for_function(LIVE)
        page.wait_for_selector(f"{CARD} .controls")
        page.evaluate(NO_RELOAD)
        assert page.is_disabled(button("start")) and page.is_disabled(button("resume"))
        assert page.is_enabled(button("stop")) and page.is_enabled(button("restart"))
        assert page.get_attribute(button("start"), "title") == "agent is running"

        # the scale dialog names the count asked for (cancelled: nothing is sent)
        set_processes(page, "3")
        page.click(button("scale"))
        page.wait_for_selector("#confirm[open]")
        assert page.text_content("#confirm-text") == "Scale worker agent from 1 to 3 processes?"
        page.click("#confirm-cancel")

        # a task it runs now is listed, linked to its page
        submit(redis_url, SLEEP, {"seconds": 3}, 1)
        page.wait_for_selector("#worker-tasks li a[href^='/tasks/']", timeout=20_000)

        # stop: the buttons follow the new state without a reload
        page.click(button("stop"))
        page.wait_for_selector("#confirm[open]")
        assert page.text_content("#confirm-text") == "Stop worker agent?"
        page.click("#confirm-ok")
        page.wait_for_function(
            "s => !document.querySelector(s)?.disabled", arg=button("start"), timeout=30_000
        )
        assert page.is_disabled(button("stop")) and page.is_disabled(button("restart"))
        assert page.evaluate("window.__still_here") == 1
        page.wait_for_selector("#worker-tasks-none:not([hidden])")
        page.screenshot(path=str(SHOTS / "worker-stopped.png"), full_page=True)

        page.click(button("start"))
        page.click("#confirm-ok")
        page.wait_for_function(
            "s => document.querySelector(s)?.disabled", arg=button("start"), timeout=30_000
        )
        wait_running(rclient, "agent")
        page.wait_for_function(  # running again, with its one process
            "s => document.querySelector(s)?.textContent.startsWith('1/1')",
            arg=f"{CARD} .procs",
            timeout=30_000,
        )
        set_processes(page, "2")
        page.click(button("scale"))
        assert page.text_content("#confirm-text") == "Scale worker agent from 1 to 2 processes?"
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('scale: accepted')")  # sent before we leave

        # the audit page: one row per command, its outcome, the issuer's name; filters
        page.goto(f"{base}/audit")
        page.wait_for_function(LIVE)
        statuses = "[...document.querySelectorAll('#audit-table tbody tr')].map(r => r.cells[4]?.textContent)"
        # a scale is done once the new process reports: under the whole suite's load that can take
        # much longer than on an idle machine (a bound, not a timing)
        page.wait_for_function(f"() => {statuses}.join() === 'done,done,done'", timeout=120_000)
        rows = page.locator("#audit-table tbody tr")
        assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(3)] == [
            "scale → 2",
            "start",
            "stop",
        ]
        assert {rows.nth(i).locator("td").nth(3).inner_text() for i in range(3)} == {"olivia"}
        page.screenshot(path=str(IMG / "dashboard-audit.png"), full_page=True)
        page.fill("#audit-filters input[name=action]", "stop")
        page.fill("#audit-filters input[name=issuer]", "olivia")
        page.click("#audit-filters button[type=submit]")
        page.wait_for_url("**/audit?*action=stop*")
        assert page.locator("#audit-table tbody tr").count() == 1
        page.wait_for_function(LIVE)  # the filtered page is live too (its key names the filters)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
