"""Worker control through Redis, executed by a real agent: start, stop, restart, pause, resume,
scale, per-queue pause; desired state survives an agent restart; replies and audit entries."""

from __future__ import annotations

import asyncio
import signal

import pytest

from shared.control import CommandRecord, decode_record, issue, new_command
from tests.helpers import task_fields, wait_for
from tests.worker.test_end_to_end import KEYS, heartbeat, start_agent, wait_running

pytestmark = pytest.mark.slow


def command(rclient, action, processes=None, idem=None, worker="agent"):
    cmd = new_command(worker, action, issuer="alice", processes=processes)
    issued, command_id = issue(rclient, KEYS, cmd, idem)
    return issued, command_id


def reply(rclient, command_id):
    return decode_record(rclient.hgetall(KEYS.command(command_id)))


def wait_done(rclient, command_id, timeout=40.0) -> CommandRecord:
    def ended() -> CommandRecord | None:
        r = reply(rclient, command_id)
        return r if r is not None and r.status in ("done", "failed") else None

    record = wait_for(ended, timeout=timeout, what=f"command {command_id}")
    assert record is not None
    assert record.status == "done", record
    return record


async def submit(api, auth, kind="echo", priority="P2"):
    body = {"type": kind, "payload": {"seconds": 0} if kind == "sleep" else {}, "priority": priority}
    return (await (await api.post("/api/v1/tasks", json=body, headers=auth())).json())["id"]


def status(rclient, task_id):
    return task_fields(rclient, KEYS, task_id).get("status")


async def test_restart_replaces_the_processes(procs, env_factory, tmp_path, rclient):
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=2)
    before = wait_running(rclient, "agent", processes=2)
    _, cid = command(rclient, "restart")
    record = wait_done(rclient, cid)
    assert record.issuer == "alice"
    after = wait_running(rclient, "agent", processes=2)
    assert not {p.pid for p in before.procs} & {p.pid for p in after.procs}
    assert min(p.started_at for p in after.procs) > max(p.started_at for p in before.procs)
    audit = [e[1] for e in rclient.xrange(KEYS.audit)]
    assert [e[b"status"].decode() for e in audit] == ["pending", "accepted", "done"]


async def test_stop_then_start_and_desired_state_survives_agent_restart(
    procs, env_factory, tmp_path, rclient, api, auth
):
    agent, _ = start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    _, cid = command(rclient, "stop")
    wait_done(rclient, cid)
    beat = wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.state == "stopped" and b)
    assert beat.processes == 0
    task = await submit(api, auth)
    await asyncio.sleep(1.0)
    assert status(rclient, task) == "queued"

    # The agent restarts: it obeys the persisted desired state and stays stopped.
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    start_agent(procs, env_factory, tmp_path, name="agent")
    beat = wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.state == "stopped" and b, timeout=20)
    assert beat.processes == 0
    assert status(rclient, task) == "queued"

    _, cid = command(rclient, "start")
    wait_done(rclient, cid)
    wait_for(lambda: status(rclient, task) == "succeeded")


async def test_pause_resume_and_scale(procs, env_factory, tmp_path, rclient, api, auth):
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    _, cid = command(rclient, "pause")
    wait_done(rclient, cid)
    assert wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.state == "paused" and b).processes == 1
    task = await submit(api, auth)
    await asyncio.sleep(1.0)
    assert status(rclient, task) == "queued"
    _, cid = command(rclient, "resume")
    wait_done(rclient, cid)
    wait_for(lambda: status(rclient, task) == "succeeded")

    _, cid = command(rclient, "scale", processes=2)
    wait_done(rclient, cid)
    beat = wait_running(rclient, "agent", processes=2)
    assert beat.processes_desired == 2
    assert rclient.hget(KEYS.worker_desired("agent"), "processes") == b"2"
    _, cid = command(rclient, "scale", processes=1)
    wait_done(rclient, cid)
    wait_running(rclient, "agent", processes=1)


async def test_same_idempotency_key_issues_one_command(rclient):
    issued, first = command(rclient, "restart", idem="deploy-42")
    again, second = command(rclient, "restart", idem="deploy-42")
    assert issued and not again
    assert first == second
    assert rclient.xlen(KEYS.worker_commands("agent")) == 1


@pytest.mark.parametrize("max_wait_ms", [1000, 60_000])
async def test_paused_queue_is_not_consumed(procs, env_factory, tmp_path, rclient, api, auth, max_wait_ms):
    """Also when idle consumers wait a minute for a wake-up: a pause must reach a waiting consumer
    at once, not after its wait (else the first message published wakes it and it runs)."""
    start_agent(procs, env_factory, tmp_path, WORKER_IDLE_MAX_WAIT_MS=max_wait_ms)
    wait_running(rclient, "agent")
    await asyncio.sleep(2.0)  # every consumer found its queue empty and now waits
    rclient.sadd(KEYS.paused_queues, "default.p2")
    await asyncio.sleep(1.5)  # processes look at the set once a second
    held = await submit(api, auth, priority="P2")
    flows = await submit(api, auth, priority="P1")
    wait_for(lambda: status(rclient, flows) == "succeeded")
    await asyncio.sleep(0.5)
    assert status(rclient, held) == "queued"
    rclient.srem(KEYS.paused_queues, "default.p2")
    wait_for(lambda: status(rclient, held) == "succeeded")


def test_a_command_sent_again_after_a_lost_reply_is_issued_once(rclient):
    """redis-py resends a call once on a dead connection; the same command must not reach the
    agent twice (a restart would run twice)."""
    worker = "resend-agent"
    cmd = new_command(worker, "restart", issuer="tester")
    assert issue(rclient, KEYS, cmd) == (True, cmd.id)
    assert issue(rclient, KEYS, cmd) == (True, cmd.id)  # the same call again
    assert rclient.xlen(KEYS.worker_commands(worker)) == 1
