"""Real-browser tests (Playwright driving Debian's chromium, as tests/dashboard/test_browser.py) of
the live pages (issue 19, part 2): the task list gains a submitted task and shows its status
change without a reload, the task page's timeline grows, a queue action updates the page in place
and keeps its toast, the worker page's process table follows a restart, and a Redis pause
(the test's own redis-server SIGSTOPped) shows "stale", what is stale, "Redis unreachable" and
each worker's heartbeat past its TTL, at 1400 and 390 px."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from shared.devtools.embedded_redis import free_port
from shared.tasks import SLEEP
from tests.conftest import ROOT
from tests.dashboard.conftest import KEYS, fake_heartbeat
from tests.dashboard.test_api import kill
from tests.dashboard.test_browser import ensure_chromium, log_in, submit
from tests.dashboard.test_browser_tasks import fail
from tests.dashboard.test_browser_tasks import submit as record
from tests.worker.test_end_to_end import start_agent, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SHOTS = ROOT / "var" / "screenshots"
IMG = ROOT / "docs" / "img"
NO_RELOAD = "window.__still_here = 1"  # a reload would forget it
LIVE = "() => document.querySelector('#conn').textContent === 'live'"
STALE = "() => document.querySelector('#conn').textContent === 'stale'"


def dashboard(procs, env_factory, tmp_path: Path, **env: str) -> str:
    pytest.importorskip("playwright")
    ensure_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs.start(
        "dashboard",
        env_factory(DASHBOARD_PORT=port, DASHBOARD_STREAM_INTERVAL="0.5", **env),
        tmp_path / "dash.log",
    )
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("width", [1400, 390])
def test_task_list_and_task_page_are_live(procs, env_factory, tmp_path, rclient, redis_url, token, width):
    from playwright.sync_api import sync_playwright

    base = dashboard(procs, env_factory, tmp_path)
    (first,) = record(redis_url, SLEEP, [{"seconds": 0}])
    with sync_playwright() as pw:
        browser, page, errors = log_in(pw, base, token("viewer", sub="vera"), {"width": width, "height": 900})
        page.goto(f"{base}/tasks")
        page.wait_for_selector(f'#task-table tr[data-task="{first}"]')
        page.wait_for_function(LIVE)
        page.evaluate(NO_RELOAD)
        (second,) = record(redis_url, SLEEP, [{"seconds": 0}])  # appears on top, without a reload
        page.wait_for_selector(f'#task-table tbody tr:first-child[data-task="{second}"]', timeout=10_000)
        fail(rclient, first, "RequestedFailure: boom")  # its status changes in place
        row = f'#task-table tr[data-task="{first}"]'
        page.wait_for_selector(f"{row} td.st-failed:has-text('failed')", timeout=10_000)
        assert "RequestedFailure: boom" in page.locator(f"{row} [data-field=error]").inner_text()
        assert page.locator(f"{row} a[data-field=id]").get_attribute("href") == f"/tasks/{first}"
        assert page.evaluate("window.__still_here") == 1
        page.screenshot(path=str(SHOTS / f"tasks-live-{width}.png"), full_page=True)

        page.goto(f"{base}/tasks/{second}")  # the task page: status, attempts, worker, timeline
        page.wait_for_function(LIVE)
        page.evaluate(NO_RELOAD)
        rclient.hset(KEYS.task(second), mapping={"status": "running", "attempts": 1, "worker": "w7"})
        rclient.xadd(KEYS.task_events, {"id": second, "status": "running", "ts": 1, "worker": "w7"})
        page.wait_for_selector("#task-status.st-running", timeout=10_000)
        page.wait_for_selector("#task-timeline li:nth-child(2):has-text('running')")
        assert page.locator("#task-worker").inner_text() == "w7"
        assert page.locator("#task-attempts").inner_text() == "1"
        assert page.evaluate("window.__still_here") == 1
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_queue_page_is_live_and_its_actions_keep_their_toast(
    procs, env_factory, tmp_path, rclient, redis_url, token
):
    from playwright.sync_api import sync_playwright

    base = dashboard(procs, env_factory, tmp_path)
    ids = record(redis_url, SLEEP, [{"seconds": 0}] * 3)  # three ready messages (no worker runs them)
    with sync_playwright() as pw:
        viewport = {"width": 1400, "height": 900}
        browser, page, errors = log_in(pw, base, token("operator", sub="otto"), viewport)
        second = browser.new_context(viewport=viewport)  # the audit log, open beside it
        second.add_cookies(page.context.cookies())
        audit_page = second.new_page()
        audit_page.goto(f"{base}/audit")
        audit_page.wait_for_function(LIVE)
        page.goto(f"{base}/queues/default.p2")
        page.wait_for_function(LIVE)
        page.evaluate(NO_RELOAD)
        page.click("#queue-pause")
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('pause: done')")
        audit_page.wait_for_selector(
            "#audit-table tbody tr:first-child td:has-text('queue.pause')", timeout=10_000
        )
        assert "otto" in audit_page.locator("#audit-table tbody tr:first-child").inner_text()
        page.wait_for_selector("#queue-paused:not([hidden])", timeout=10_000)
        page.wait_for_selector("#queue-resume:not([hidden])")
        assert page.locator("#queue-pause").is_hidden()
        assert page.locator("#queue-counts").inner_text().startswith("3 ready")
        submit(redis_url, SLEEP, {"seconds": 0}, 1)  # the counters follow without a reload
        page.wait_for_function("() => document.querySelector('#queue-counts').textContent.startsWith('4 ')")
        kill(rclient, ids[0])  # a dead letter appears, with its error, and the retry-all button
        letter = f'#dead-table tr[data-letter="{ids[0]}"]'
        page.wait_for_selector(f"{letter} td.error:has-text('RequestedFailure: boom')", timeout=10_000)
        page.wait_for_selector("#queue-dead-retry:not([hidden])")
        assert page.locator(f"{letter} a").get_attribute("href") == f"/tasks/{ids[0]}"
        page.click("#queue-resume")
        page.click("#confirm-ok")
        page.wait_for_selector("#queue-paused[hidden]", state="attached", timeout=10_000)
        page.wait_for_selector("#notices .notice:has-text('resume: done')")
        assert page.evaluate("window.__still_here") == 1
        page.screenshot(path=str(SHOTS / "queue-live.png"), full_page=True)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_worker_page_process_table_follows_a_restart(procs, env_factory, tmp_path, rclient, token):
    from playwright.sync_api import sync_playwright

    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1, SHUTDOWN_TIMEOUT=10)
    wait_running(rclient, "agent")
    base = dashboard(procs, env_factory, tmp_path)
    card = '.card[data-worker="agent"]'
    with sync_playwright() as pw:
        browser, page, errors = log_in(pw, base, token("admin", sub="ada"), {"width": 1400, "height": 1000})
        page.goto(f"{base}/workers/agent")
        page.wait_for_selector(f"{card} .pids")
        page.wait_for_function(LIVE)
        page.evaluate(NO_RELOAD)
        old = page.locator("#proc-table tbody td:first-child").all_inner_texts()
        assert old and old == page.locator(f"{card} .pids").inner_text().split(", ")
        page.click(f"{card} button[data-action=restart]")
        page.click("#confirm-ok")
        page.wait_for_function(
            """old => { const pids = [...document.querySelectorAll('#proc-table tbody td:first-child')]
                .map(td => td.textContent); return pids.length && pids.every(p => !old.includes(p)); }""",
            arg=old,
            timeout=30_000,
        )
        page.wait_for_selector("#notices .notice:has-text('restart: done')", timeout=30_000)
        page.wait_for_selector("#command-table td:has-text('restart')")  # the command history too
        new = page.locator("#proc-table tbody td:first-child").all_inner_texts()
        assert new == page.locator(f"{card} .pids").inner_text().split(", ")  # one heartbeat for both
        in_flight = page.locator("#proc-table tbody td.inflight").all_inner_texts()
        assert sum(int(n) for n in in_flight) == int(page.locator(f"{card} .inflight").inner_text())
        assert page.evaluate("window.__still_here") == 1
        page.screenshot(path=str(SHOTS / "worker-live.png"), full_page=True)
        page.screenshot(path=str(IMG / "dashboard-worker-live.png"), full_page=True)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.parametrize("width", [1400, 390])
def test_stale_during_a_redis_pause(procs, env_factory, tmp_path, token, own_redis, width):
    import redis as sync_redis
    from playwright.sync_api import sync_playwright

    rclient = sync_redis.Redis.from_url(own_redis.url)
    fake_heartbeat(rclient, "w1")
    base = dashboard(procs, env_factory, tmp_path, REDIS_URL=own_redis.url)
    card = '.card[data-worker="w1"]'
    assert own_redis.proc is not None
    with sync_playwright() as pw:
        browser, page, errors = log_in(pw, base, token("viewer", sub="val"), {"width": width, "height": 900})
        page.wait_for_selector(f"{card} .cpu")
        page.wait_for_function(LIVE)
        second = browser.new_context(viewport={"width": width, "height": 900})  # the same session
        second.add_cookies(page.context.cookies())
        worker_page = second.new_page()  # the worker's own page, open beside the overview
        worker_page.goto(f"{base}/workers/w1")
        worker_page.wait_for_function(LIVE)
        fake_heartbeat(rclient, "w1")  # a fresh beat just before the pause
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            page.wait_for_function(STALE, timeout=10_000)
            banner = page.locator("#stale")
            banner.wait_for(state="visible")
            text = banner.inner_text()
            assert text.startswith("Redis unreachable") and "worker cards" in text and "not updating" in text
            page.wait_for_selector("#alerts li.critical[data-kind=redis]:has-text('Redis unreachable')")
            # the beat outlives its TTL (3 x WORKER_POLL_INTERVAL 0.5 s): the card says so
            page.wait_for_selector(f"{card} .beat-note:has-text('past its 1.5 s TTL')", timeout=10_000)
            assert page.locator(f"{card} .state").inner_text() == "stale"
            worker_page.wait_for_function(STALE, timeout=10_000)
            worker_page.wait_for_selector("#worker-last-seen:has-text('past its 1.5 s TTL')", timeout=10_000)
            assert "this worker's commands" in worker_page.locator("#stale").inner_text()
            page.screenshot(path=str(SHOTS / f"stale-{width}.png"), full_page=True)
            page.screenshot(path=str(IMG / f"dashboard-stale-{width}.png"), full_page=False)
            box = banner.bounding_box()  # the banner is on screen (the phone layout is part 7's)
            assert box and box["x"] >= 0 and box["y"] < 900
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        page.wait_for_function(LIVE, timeout=20_000)
        page.locator("#stale").wait_for(state="hidden")
        page.wait_for_selector("#alerts li[data-kind=redis]", state="detached")
        browser.close()
    rclient.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
