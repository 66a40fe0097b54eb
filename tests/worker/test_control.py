"""Worker control through Redis, executed by a real agent: start, stop, restart, pause, resume,
scale, per-queue pause; desired state survives an agent restart; replies and audit entries. The
tests where a task must (not) run while paused or stopped run on both transports."""

from __future__ import annotations

import asyncio
import signal

import orjson
import pytest

from shared.control import CommandRecord, decode_record, issue, new_command
from shared.redis import async_client
from shared.tasks import SLEEP, Priority
from shared.taskstore import TaskStore
from tests.conftest import BROKERS
from tests.helpers import read_log, task_fields, wait_for
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


async def succeeded(rclient, task_id):
    """Wait for the task to succeed, in a thread: the in-process coordinator (``api``, and with
    RabbitMQ its outbox relay) runs on the test's event loop and must keep running meanwhile."""
    await asyncio.to_thread(wait_for, lambda: status(rclient, task_id) == "succeeded")


async def test_restart_replaces_the_processes(procs, env_factory, tmp_path, rclient):
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=2)
    before = wait_running(rclient, "agent", processes=2)
    _, cid = command(rclient, "restart")
    record = wait_done(rclient, cid)
    assert record.issuer == "alice"
    after = wait_running(rclient, "agent", processes=2)
    assert not {p.pid for p in before.procs} & {p.pid for p in after.procs}
    assert min(p.started_at for p in after.procs) > max(p.started_at for p in before.procs)
    [(_, entry)] = rclient.xrange(KEYS.audit)  # one entry per command, its outcome updated in place
    assert entry[b"status"] == b"pending" and entry[b"id"] == cid.encode()
    assert orjson.loads(rclient.hget(KEYS.audit_outcomes, cid))["status"] == "done"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
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
    await succeeded(rclient, task)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
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
    await succeeded(rclient, task)

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


# WORKER_IDLE_MAX_WAIT_MS is the Redis broker's (idle consumers wait for a wake-up); RabbitMQ pushes
# to its consumers and ignores it, so it runs once.
@pytest.mark.parametrize(
    ("broker_url", "max_wait_ms"),
    [("redis", 1000), ("redis", 60_000), ("rabbitmq", 1000)],
    indirect=["broker_url"],
)
async def test_paused_queue_is_not_consumed(procs, env_factory, tmp_path, rclient, api, auth, max_wait_ms):
    """Also when idle consumers wait a minute for a wake-up: a pause must reach a waiting consumer
    at once, not after its wait (else the first message published wakes it and it runs)."""
    _, log = start_agent(procs, env_factory, tmp_path, WORKER_IDLE_MAX_WAIT_MS=max_wait_ms)
    wait_running(rclient, "agent")
    await asyncio.sleep(2.0)  # every consumer found its queue empty and now waits
    rclient.sadd(KEYS.paused_queues, "default.p2")
    # processes look at the set once a second (later on a loaded machine): wait for the word
    await asyncio.to_thread(paused_word, log, "default.p2")
    held = await submit(api, auth, priority="P2")
    flows = await submit(api, auth, priority="P1")
    await succeeded(rclient, flows)
    await asyncio.sleep(0.5)
    assert status(rclient, held) == "queued"
    rclient.srem(KEYS.paused_queues, "default.p2")
    await succeeded(rclient, held)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_queue_paused_before_a_process_starts_is_not_consumed(
    procs, env_factory, tmp_path, rclient, api, auth
):
    """A process that starts (an agent start, a restart, a scale-up) while a queue is paused must
    not take that queue's waiting messages in the moment before it first reads the paused set."""
    rclient.sadd(KEYS.paused_queues, "default.p2")
    held = await submit(api, auth, priority="P2")
    await asyncio.sleep(0.5)  # with RabbitMQ, published by the in-process relay meanwhile
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    flows = await submit(api, auth, priority="P1")
    await succeeded(rclient, flows)
    await asyncio.sleep(0.5)
    assert status(rclient, held) == "queued"
    rclient.srem(KEYS.paused_queues, "default.p2")
    await succeeded(rclient, held)


def paused_word(log, queue):
    return wait_for(lambda: f"queue {queue} paused" in read_log(log), timeout=30, what=f"{queue} paused")


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_queue_with_a_backlog_is_paused_too(procs, env_factory, tmp_path, rclient, settings, auth):
    """A pause reaches a consumer that is busy with a backlog, not only an idle one: once the
    process said "paused", no further task of that queue starts. (Dramatiq's consumer thread looks
    at its pause flag only when its consumer answers "nothing"; with a backlog the broker hands it
    the next message as soon as one is acked, so that answer never comes until the backlog is gone.)"""
    _, log = start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    client = async_client(settings)
    store = TaskStore(client, settings)
    try:
        backlog = [
            (
                await store.submit(SLEEP, {"seconds": 0.05}, Priority.P2, subject="t", correlation_id="c")
            ).task_id
            for _ in range(300)
        ]  # 4 threads: about 80 a second, so some 4 s of work
    finally:
        await store.aclose()
        await client.aclose()
    await asyncio.to_thread(wait_for, lambda: started(rclient, backlog) >= 40, what="the backlog running")
    rclient.sadd(KEYS.paused_queues, "default.p2")
    await asyncio.to_thread(paused_word, log, "default.p2")
    await asyncio.sleep(0.5)  # what a worker thread had taken already may still start
    before = started(rclient, backlog)
    await asyncio.sleep(1.5)
    after = started(rclient, backlog)
    assert after == before < len(backlog), (
        f"{after - before} tasks of the paused queue started after the pause"
    )
    rclient.srem(KEYS.paused_queues, "default.p2")
    await asyncio.to_thread(
        wait_for, lambda: all(status(rclient, t) == "succeeded" for t in backlog), timeout=30, what="drained"
    )


def started(rclient, task_ids):
    """How many of ``task_ids`` have started (running or ended)."""
    with rclient.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hget(KEYS.task(task_id), "started_at")
        return sum(1 for at in pipe.execute() if at)


def test_a_command_sent_again_after_a_lost_reply_is_issued_once(rclient):
    """redis-py resends a call once on a dead connection; the same command must not reach the
    agent twice (a restart would run twice)."""
    worker = "resend-agent"
    cmd = new_command(worker, "restart", issuer="tester")
    assert issue(rclient, KEYS, cmd) == (True, cmd.id)
    assert issue(rclient, KEYS, cmd) == (True, cmd.id)  # the same call again
    assert rclient.xlen(KEYS.worker_commands(worker)) == 1
