"""The bandit page in a real browser (Playwright driving Debian's chromium) against a running
stack — coordinator, worker agent (Dramatiq) and dashboard processes on a real Redis, the worker
calling a fake OpenAI-compatible LLM whose creative model fails — whose bandit state is made the
production way: chat turns and ratings through the coordinator's API, answered and learned by the
worker. The page shows the arms and checkpoints live, and an admin
rolls the model back through the confirmation dialog. Screenshot: docs/img/bandit.png."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest

from shared.devtools.embedded_redis import free_port
from tests.dashboard.conftest import KEYS
from tests.dashboard.test_browser import ensure_chromium, log_in
from tests.dashboard.test_browser_tasks import IMG
from tests.fake_llm import running_fake_llm
from tests.helpers import wait_for
from tests.worker.test_end_to_end import start_agent, wait_ready, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
#: Warm-up and checkpoint period of the stack, so a few dozen turns make every part of the page.
STACK = {
    "BANDIT_WARMUP": "8", "BANDIT_CHECKPOINT_EVERY": "10", "BANDIT_ROLLBACK_MIN_SAMPLES": "10",
    "BANDIT_ROLLBACK_SIGNIFICANCE": "1e-9", "BANDIT_ALPHA_SCHEDULE": "linear:1.0:0.25:40",
}  # fmt: skip
EVERY = 10
TURNS = 4 * EVERY


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def chat_and_rate(base: str, token: str, turns: int) -> list[str]:
    """``turns`` chat turns answered by the worker (``?wait=``) and each rated (1-5, a pattern that
    favours one arm), through the coordinator's API; the arms chosen."""

    async def go() -> list[str]:
        headers = {"Authorization": f"Bearer {token}"}
        arms = []
        async with aiohttp.ClientSession(headers=headers) as http:
            for n in range(turns):
                body = {
                    "session_id": "browser",
                    "message": f"Is the price {n} negotiable?",
                    "user_id": "seller",
                }
                async with http.post(f"{base}/api/v1/chat?wait=10", json=body) as resp:
                    answer = await resp.json()
                    assert resp.status == 200, answer
                arms.append(answer["arm"])
                rating = 5 if answer["arm"] == "tools" else 1 + n % 3
                rate = {"session_id": "browser", "turn_number": answer["turn_number"], "rating": rating}
                async with http.post(f"{base}/api/v1/feedback/submit", json=rate) as resp:
                    assert resp.status == 202, await resp.text()
        return arms

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        return pool.submit(asyncio.run, go()).result()


def test_the_bandit_page_live_and_a_rollback(procs, env_factory, tmp_path, rclient, token):
    pytest.importorskip("playwright")
    ensure_chromium()
    with running_fake_llm() as llm:
        llm.failing.add("fake-creative")
        models = {f"LLM_MODEL_{t.upper()}": f"fake-{t}" for t in ("fast", "balanced", "creative")}
        check_page(procs, env_factory, tmp_path, rclient, token, {"LLM_BASE_URL": llm.url, **models})


def check_page(procs, env_factory, tmp_path, rclient, token, llm_env):
    from playwright.sync_api import sync_playwright

    api_port, dash_port = free_port(), free_port()
    procs.start("coordinator", env_factory(COORDINATOR_PORT=api_port, **STACK), tmp_path / "coordinator.log")
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1, **STACK, **llm_env)
    wait_running(rclient, "agent")
    asyncio.run(wait_ready(f"http://127.0.0.1:{api_port}"))
    procs.start(
        "dashboard",
        env_factory(DASHBOARD_PORT=dash_port, DASHBOARD_STREAM_INTERVAL="0.5", **STACK),
        tmp_path / "dash.log",
    )
    api = f"http://127.0.0.1:{api_port}"
    chat_and_rate(api, token("tasks:write", "tasks:read"), TURNS - EVERY)
    wait_for(
        lambda: int(rclient.hget(KEYS.bandit_guard(), "applied") or 0) == TURNS - EVERY,
        what="ratings applied",
    )
    base = f"http://127.0.0.1:{dash_port}"
    wait_for(lambda: answers(f"{base}/health"), timeout=60, what="the dashboard answers")
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, base, token("admin", sub="olivia"), {"width": 1400, "height": 1000}
        )
        page.wait_for_selector("#conn")
        page.goto(f"{base}/bandit")
        page.wait_for_selector('#bandit-arms tr[data-arm="tools"]')
        page.wait_for_function("() => document.querySelector('#conn').textContent === 'live'")
        assert page.locator("header nav a.active").text_content() == "Bandit"
        assert page.locator("#bandit-phase").text_content() == "learned"
        page.wait_for_selector('#bandit-checkpoints tr[data-checkpoint="3"]')
        assert page.locator("#bandit-checkpoints tr[data-checkpoint]").count() == 3
        pulls = sum(int(page.locator(f'#bandit-arms tr[data-arm="{a}"] .pulls').text_content() or 0)
                    for a in ("npc", "tools", "knowledge"))  # fmt: skip
        assert pulls == TURNS - EVERY
        page.wait_for_selector("#bandit-eval tr[data-policy=running][data-segment=all]")
        page.wait_for_selector('#bandit-tiers tr[data-tier="fast"] td:has-text("closed")')
        page.wait_for_selector('#bandit-tiers tr[data-tier="creative"]')  # its failures recorded
        fast = "#bandit-mix tr[data-tier=fast] .answered"
        page.wait_for_function(f"() => Number(document.querySelector('{fast}')?.textContent) > 0")

        # live: more turns reach the open page without a reload (arms, a fourth checkpoint)
        chat_and_rate(api, token("tasks:write", "tasks:read"), EVERY)
        page.wait_for_selector('#bandit-checkpoints tr[data-checkpoint="4"]', timeout=20_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#bandit-arms .pulls')]"
            f".reduce((s, c) => s + Number(c.textContent), 0) === {TURNS}"
        )
        drawn = "s => [...document.querySelectorAll(s)].some((r) => Number(r.getAttribute('height')) > 0)"
        page.wait_for_function(drawn, arg="#chart-explore rect.bar-explore")  # warm-up explored
        page.wait_for_function(drawn, arg='#chart-ucb figure[data-arm="tools"] rect')
        bars = "n => document.querySelectorAll('#chart-explore rect.bar-explore').length === n"
        page.click("[data-bandit-range='1h']")
        page.wait_for_function(bars, arg=60)  # one point per minute of the hour
        assert f"of {TURNS} decisions" in (page.locator("#bandit-explore-ratio").text_content() or "")
        page.click("[data-bandit-range='15m']")
        page.wait_for_function(bars, arg=15)
        page.screenshot(path=str(IMG / "bandit.png"), full_page=True)

        roll_back(page, rclient)
        browser.close()
    record = json.loads(rclient.lindex(KEYS.bandit_rollbacks(), 0))
    assert (
        record["trigger"] == "manual"
        and record["checkpoint"] == 2
        and record["reason"]["subject"] == "olivia"
    )
    state, kept = rclient.hgetall(KEYS.bandit_state()), rclient.hgetall(KEYS.bandit_checkpoints())
    for arm in ("npc", "tools", "knowledge"):  # the model is checkpoint 2's
        assert state[f"{arm}:updates".encode()] == kept[f"2:{arm}:updates".encode()]
    entry = rclient.xrevrange(KEYS.audit, count=1)[0][1]
    assert json.loads(entry[b"command"])["action"] == "bandit.rollback"
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors


def roll_back(page, rclient) -> None:
    """Roll back to checkpoint 2 through the dialog (cancelled once first), as an admin."""
    # roll back to checkpoint 2: the dialog, then the model, the page and the audit log follow
    page.click('#bandit-checkpoints tr[data-checkpoint="2"] button')
    page.wait_for_selector("#confirm[open]")
    assert "checkpoint 2" in (page.locator("#confirm-text").text_content() or "")
    page.click("#confirm-cancel")  # cancelling changes nothing
    time.sleep(0.5)
    assert rclient.hget(KEYS.bandit_guard(), "rollbacks:manual") is None
    page.click('#bandit-checkpoints tr[data-checkpoint="2"] button')
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    page.wait_for_selector("#notices .notice:has-text('rollback to 2: done')")
    page.wait_for_selector("#bandit-rollbacks td:has-text('manual')", timeout=10_000)
    assert "1 manual" in (page.locator("#bandit-rollbacks-total").text_content() or "")
