"""Idle consumers wait for a wake-up instead of polling: an idle worker makes almost no Redis
calls, and the first message after a long idle spell is still fetched at once."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import wait_for
from tests.worker.test_end_to_end import start_agent, wait_running, wait_status

pytestmark = pytest.mark.slow


def evalsha_calls(rclient) -> int:
    """Scripts run so far on the server (Dramatiq's fetches are its dispatch script)."""
    stats = rclient.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_an_idle_worker_waits_for_wakeups_and_still_takes_the_first_message_at_once(
    procs, env_factory, tmp_path, rclient, api, auth
):
    # Idle consumers may wait a minute between polls; the agent's own maintenance (also the
    # dispatch script) runs only every 30 s, so script calls in the window are the consumers'.
    start_agent(procs, env_factory, tmp_path, WORKER_IDLE_MAX_WAIT_MS=60_000, WORKER_POLL_INTERVAL=30)
    wait_running(rclient, "agent")
    await asyncio.sleep(1.5)  # every consumer has polled once and now waits
    before = evalsha_calls(rclient)
    await asyncio.sleep(3.0)
    idle_calls = evalsha_calls(rclient) - before
    # polling (Dramatiq's default here): 24 consumers every 100 ms, the coach ones every 20 ms,
    # well over 700 calls in 3 s; waiting: none but a consumer's first poll after a wake-up
    assert idle_calls < 30, idle_calls
    for _ in range(3):  # each after an idle spell: woken, not found by a poll a minute later
        reply = await api.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
        task_id = (await reply.json())["id"]
        wait_status(rclient, task_id, "succeeded", timeout=15)
        await asyncio.sleep(1.0)


async def test_without_wakeups_idle_consumers_poll(procs, env_factory, tmp_path, rclient, api, auth):
    start_agent(procs, env_factory, tmp_path, WORKER_IDLE_WAKEUP=0, WORKER_POLL_INTERVAL=30)
    wait_running(rclient, "agent")
    before = evalsha_calls(rclient)
    wait_for(lambda: evalsha_calls(rclient) - before > 100, what="idle polls")
    reply = await api.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
    wait_status(rclient, (await reply.json())["id"], "succeeded")
