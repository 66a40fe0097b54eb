"""What the dashboard says about a worker's state with a real agent: the tasks it runs now (its
heartbeat carries each process's running task ids) on its page and in its API, and a stopped
worker raises an alert; the stop is one audit row whose outcome goes to done."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dashboard.snapshot import alerts
from shared.redis import async_client
from shared.tasks import SLEEP, Priority
from shared.taskstore import TaskStore
from tests.dashboard.test_control import wait_reply
from tests.dashboard.test_stream import origin
from tests.helpers import wait_for
from tests.worker.test_end_to_end import heartbeat, start_agent, wait_running


def beat(**fields: Any) -> dict[str, Any]:
    """A shaped worker as the snapshot holds it."""
    base = {"id": "w1", "state": "running", "processes": 2, "processes_desired": 2, "procs": [],
            "memory_percent": 1.0}  # fmt: skip
    return {**base, **fields}


def test_a_stopped_or_scaled_to_zero_worker_raises_an_alert() -> None:
    kinds = lambda w: [(a["kind"], a["level"]) for a in alerts([w], [], [])]  # noqa: E731
    assert kinds(beat()) == []
    assert kinds(beat(state="stopped", processes=0, processes_desired=0)) == [("worker_stopped", "warning")]
    assert kinds(beat(processes=0, processes_desired=0)) == [("worker_stopped", "warning")]
    assert kinds(beat(state="starting", processes=0, processes_desired=2)) == []  # on its way up
    assert kinds(beat(state="down")) == [("worker_down", "critical")]  # not both
    [alert] = alerts([beat(state="stopped", processes=0, processes_desired=0)], [], [])
    assert alert["message"] == "worker w1 is stopped (0/0 processes): it runs no task"


@pytest.mark.slow
async def test_the_worker_page_lists_its_running_tasks_and_a_stop_alerts(
    procs, env_factory, tmp_path, rclient, as_role, settings
):
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1, SHUTDOWN_TIMEOUT=10)
    wait_running(rclient, "agent")
    client = async_client(settings)
    store = TaskStore(client, settings)
    task_id = (
        await store.submit(SLEEP, {"seconds": 4}, Priority.P2, subject="t", correlation_id="c")
    ).task_id
    await store.aclose()
    await client.aclose()
    running = lambda: (b := heartbeat(rclient, "agent")) and b.procs and b.procs[0].tasks == [task_id]  # noqa: E731
    await asyncio.to_thread(wait_for, running, timeout=30, what="the sleep task in the heartbeat")
    dash, csrf = await as_role("operator", sub="erin")
    detail = await (await dash.get("/api/worker/agent")).json()
    assert detail["heartbeat"]["procs"][0]["tasks"] == [task_id]
    page = await (await dash.get("/workers/agent")).text()
    assert f'href="/tasks/{task_id}"' in page and f"<code>{task_id[:8]}</code>" in page

    resp = await dash.post("/api/worker/agent/stop", headers={"X-CSRF-Token": csrf})
    reply = await wait_reply(dash, (await resp.json())["command_id"])
    assert reply["status"] == "done"
    stopped = lambda: (b := heartbeat(rclient, "agent")) and b.state == "stopped" and b  # noqa: E731
    assert (await asyncio.to_thread(wait_for, stopped, timeout=30)).procs == []
    async with dash.ws_connect("/ws", headers=origin(dash)) as ws:
        snap = await ws.receive_json()
    assert [a["kind"] for a in snap["data"]["alerts"]] == ["worker_stopped"]
    audit = (await (await dash.get("/api/audit?worker=agent")).json())["entries"]
    assert [(e["action"], e["status"], e["issuer"]) for e in audit] == [("stop", "done", "erin")]
