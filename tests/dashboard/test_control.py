"""Worker control through the dashboard with a real agent: restart really replaces the Dramatiq
processes (new pids, uptime reset), the reply and the audit entry are visible, the stream shows it."""

from __future__ import annotations

import asyncio

import pytest

from tests.dashboard.test_stream import next_update, origin
from tests.helpers import wait_for
from tests.worker.test_end_to_end import heartbeat, start_agent, wait_running

pytestmark = pytest.mark.slow


async def wait_reply(client, command_id, polls=400):
    for _ in range(polls):
        reply = await (await client.get(f"/api/commands/{command_id}")).json()
        if reply["status"] in ("done", "failed"):
            return reply
        await asyncio.sleep(0.1)
    raise AssertionError(f"command {command_id} got no final reply")


async def test_restart_through_the_dashboard_replaces_processes(
    procs, env_factory, tmp_path, rclient, as_role
):
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=2)
    before = wait_running(rclient, "agent", processes=2)
    client, csrf = await as_role("operator", sub="erin")
    async with client.ws_connect("/ws", headers=origin(client)) as ws:
        state = dict((await ws.receive_json())["data"])
        assert state["workers"][0]["id"] == "agent"
        resp = await client.post("/api/worker/agent/restart", headers={"X-CSRF-Token": csrf})
        assert resp.status == 202
        command_id = (await resp.json())["command_id"]
        reply = await wait_reply(client, command_id)
        assert reply["status"] == "done" and reply["issuer"] == "erin"
        after = wait_running(rclient, "agent", processes=2)
        old_pids, new_pids = {p.pid for p in before.procs}, {p.pid for p in after.procs}
        assert not old_pids & new_pids
        assert min(p.started_at for p in after.procs) > max(p.started_at for p in before.procs)
        # the live stream shows the new processes without anyone asking
        await next_update(ws, state, lambda s: {p["pid"] for p in s["workers"][0]["procs"]} == new_pids)
    status = (await (await client.get("/api/worker/status")).json())["workers"][0]
    assert {p["pid"] for p in status["procs"]} == new_pids
    audit = (await (await client.get("/api/audit?worker=agent")).json())["entries"]
    assert [(e["action"], e["status"], e["issuer"]) for e in audit] == [("restart", "done", "erin")]
    page = await (await client.get("/workers/agent")).text()
    assert "erin" in page and "done" in page

    resp = await client.post("/api/worker/agent/scale", json={"processes": 1}, headers={"X-CSRF-Token": csrf})
    reply = await wait_reply(client, (await resp.json())["command_id"])
    assert reply["status"] == "done"
    wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.processes == 1 and b.processes_desired == 1)
