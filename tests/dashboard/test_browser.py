"""A real browser (Playwright driving Debian's chromium) against a real dashboard, agent and Redis:
log in, watch a worker's CPU/memory change live, restart it, watch a queue fill and drain (on both
transports: with RabbitMQ the submissions go through the outbox and the queue's depth is
RabbitMQ's)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.devtools.embedded_redis import free_port
from shared.settings import Settings
from shared.tasks import ECHO, SLEEP, Priority
from shared.taskstore import TaskStore
from tests.conftest import BROKERS_SOAK, ROOT, SECRET
from tests.dashboard.conftest import KEYS
from tests.helpers import wait_for
from tests.worker.test_end_to_end import start_agent, wait_running

# slow, and on a fresh machine the first browser test installs Debian's chromium (minutes)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "var" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def ensure_chromium() -> None:
    """Install Debian's chromium on a fresh machine (as root); skip when impossible."""
    if Path(CHROMIUM).exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True).returncode:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True, check=True)


def log_in(
    pw: Any, base: str, token: str, viewport: dict[str, int] | None = None
) -> tuple[Any, Any, list[str]]:
    """Chromium on the login page (once the dashboard answers), logged in with ``token``; also the
    list that collects the page's console errors."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport=viewport) if viewport else browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    for _ in range(100):
        try:
            page.goto(f"{base}/login")
            break
        except Exception:
            time.sleep(0.1)
    page.fill('input[name="token"]', token)
    page.click('button[type="submit"]')
    return browser, page, errors


def submit(redis_url: str, task_type, payload, n: int, broker_url: str | None = None) -> None:
    """Submit ``n`` tasks as the coordinator does (with RabbitMQ: into the outbox, which the
    agent's relay publishes)."""

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        settings = Settings(redis_url=redis_url, broker_url=broker_url, jwt_secret=SECRET)  # type: ignore[arg-type]
        store = TaskStore(client, settings)
        for _ in range(n):
            await store.submit(task_type, payload, Priority.P2, subject="browser-test", correlation_id="c")
        await store.aclose()
        await client.aclose()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        pool.submit(asyncio.run, go()).result()


def states_until(page, selector: str, final: str, after: str, timeout: float = 40.0) -> list[str]:
    """Distinct texts of ``selector`` until ``final`` is shown after ``after`` was seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = page.locator(selector).first.text_content(timeout=5000) or ""
        if not seen or seen[-1] != text:
            seen.append(text)
        if after in seen and seen[-1] == final:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"states seen: {seen}")


# RabbitMQ under `make soak` only (the slowest variant; its queue counts and pauses are checked by
# tests/transport/test_rabbit_admin.py and tests/worker/test_control.py in `make test`)
@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
def test_operator_in_a_real_browser(procs, env_factory, tmp_path, rclient, redis_url, token, broker_url):
    pytest.importorskip("playwright")
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    _, agent_log = start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1, SHUTDOWN_TIMEOUT=10)
    wait_running(rclient, "agent")
    port = free_port()
    procs.start(
        "dashboard", env_factory(DASHBOARD_PORT=port, DASHBOARD_STREAM_INTERVAL="0.5"), tmp_path / "dash.log"
    )
    base = f"http://127.0.0.1:{port}"
    card = '.card[data-worker="agent"]'
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, base, token("admin", sub="olivia"), {"width": 1400, "height": 1000}
        )
        page.wait_for_selector(f"{card} .cpu")
        assert page.locator("#conn").text_content() == "live"

        # CPU / memory change without a reload (some work makes the numbers move)
        first = (page.locator(f"{card} .cpu").text_content(), page.locator(f"{card} .mem").text_content())
        submit(redis_url, ECHO, {"x": "y" * 1000}, 200, broker_url)
        page.wait_for_function(
            """([sel, cpu, mem]) => {
                const c = document.querySelector(sel + ' .cpu'), m = document.querySelector(sel + ' .mem');
                return c && m && (c.textContent !== cpu || m.textContent !== mem);
            }""",
            arg=[card, *first],
            timeout=20_000,
        )
        page.wait_for_selector(f"{card} .spark polyline")
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

        # restart: confirm in the dialog, then stopping → running, with new process pids
        page.goto(f"{base}/workers")
        page.wait_for_selector(f"{card} button[data-action=restart]")
        old_pids = page.locator(f"{card} .pids").text_content()
        submit(redis_url, SLEEP, {"seconds": 2}, 1, broker_url)  # in-flight work makes the drain visible
        time.sleep(0.5)
        page.click(f"{card} button[data-action=restart]")
        page.wait_for_selector("#confirm[open]")
        page.screenshot(path=str(SHOTS / "restart-confirm.png"))
        page.click("#confirm-ok")
        seen = states_until(page, f"{card} .state", "running", after="stopping")
        assert "stopping" in seen and seen[-1] == "running", seen
        page.wait_for_function(
            "([sel, old]) => { const p = document.querySelector(sel + ' .pids');"
            " return p && p.textContent !== old && p.textContent !== '-'; }",
            arg=[card, old_pids],
        )
        page.wait_for_selector("#notices .notice:has-text('restart: done')")
        page.screenshot(path=str(SHOTS / "workers-after-restart.png"), full_page=True)

        # a queue's depth rises and falls as tasks are submitted (paused first so it is visible)
        page.goto(f"{base}/queues")
        row = 'tr[data-queue="default.p2"]'
        page.click(f"{row} button:has-text('pause')")
        page.click("#confirm-ok")
        page.wait_for_selector(f"{row} td:has-text('paused')")
        # the worker process applies it within a second or so (later on a loaded machine): wait for its word
        wait_for(lambda: "queue default.p2 paused" in agent_log.read_text(), timeout=30, what="queue paused")
        submit(redis_url, ECHO, {}, 25, broker_url)
        page.wait_for_function("s => document.querySelector(s)?.textContent === '25'", arg=f"{row} .ready")
        page.screenshot(path=str(SHOTS / "queue-filled.png"), full_page=True)
        page.click(f"{row} button:has-text('resume')")
        page.click("#confirm-ok")
        page.wait_for_function(
            "s => document.querySelector(s)?.textContent === '0'", arg=f"{row} .ready", timeout=20_000
        )
        page.screenshot(path=str(SHOTS / "queue-drained.png"), full_page=True)

        page.goto(f"{base}/")
        page.wait_for_selector(f"{card} .cpu")
        time.sleep(1.0)
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    wait_for(lambda: rclient.xlen(KEYS.audit) >= 3)  # restart, pause, resume: one entry each
