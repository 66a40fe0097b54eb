"""End to end across real processes: coordinator → Redis → worker agent → Dramatiq → task store."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp
import pytest
import redis

from shared.devtools.embedded_redis import free_port
from shared.keys import Keys
from shared.stats import Heartbeat
from tests.conftest import BROKERS
from tests.helpers import read_log, task_fields, wait_for

KEYS = Keys()
pytestmark = pytest.mark.slow


def start_agent(procs, env_factory, tmp_path, name="agent", **env):
    log = tmp_path / f"{name}.log"
    proc = procs.start("worker", env_factory(WORKER_ID=name, **env), log)
    return proc, log


async def wait_ready(base: str) -> None:
    """Until the coordinator at ``base`` answers ``/health/ready`` with 200 (10 s at most)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"{base}/health/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the coordinator at {base} did not come up")


def heartbeat(rclient, worker_id):
    raw = rclient.get(KEYS.worker(worker_id))
    return Heartbeat.model_validate_json(raw) if raw else None


def wait_running(rclient, worker_id, processes=1, timeout=30.0):
    return wait_for(
        lambda: (
            (b := heartbeat(rclient, worker_id)) and b.state == "running" and b.processes == processes and b
        ),
        timeout=timeout,
        what=f"agent {worker_id} running with {processes} process(es)",
    )


def wait_status(rclient, task_id, *statuses, timeout=30.0):
    return wait_for(
        lambda: (f := task_fields(rclient, KEYS, task_id)).get("status") in statuses and f,
        timeout=timeout,
        what=f"task {task_id} to reach {statuses}",
    )


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_full_path_through_real_coordinator_and_worker(procs, env_factory, tmp_path, rclient, auth):
    port = free_port()
    procs.start("coordinator", env_factory(COORDINATOR_PORT=port), tmp_path / "coordinator.log")
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    base = f"http://127.0.0.1:{port}"
    await wait_ready(base)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/tasks", json={"type": "echo", "payload": {"hello": "world"}}, headers=auth()
        ) as r:
            assert r.status == 202, await r.text()
            accepted = await r.json()
        for _ in range(200):
            async with http.get(base + accepted["status_url"], headers=auth()) as r:
                record = await r.json()
            if record["status"] == "succeeded":
                break
            await asyncio.sleep(0.05)
    assert record["status"] == "succeeded"
    assert record["result"] == {"hello": "world"}
    assert record["attempts"] == 1
    assert record["worker"].startswith("agent/")
    assert record["started_at"] <= record["finished_at"]
    events = [e[1] for e in rclient.xrange(KEYS.task_events)]
    statuses = [e[b"status"].decode() for e in events if e[b"id"].decode() == accepted["id"]]
    assert statuses == ["queued", "running", "succeeded"]


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_failing_task_retries_then_goes_dead(
    procs, env_factory, tmp_path, rclient, api, auth, broker_url
):
    start_agent(procs, env_factory, tmp_path)
    resp = await api.post(
        "/api/v1/tasks", json={"type": "fail", "payload": {"message": "boom"}}, headers=auth()
    )
    task_id = (await resp.json())["id"]
    # in a thread: with RabbitMQ the in-process coordinator's outbox relay runs on this loop (a wait
    # blocking it stalls an entry that relay read until another takes it over, OUTBOX_CLAIM_AFTER)
    record = await asyncio.to_thread(wait_status, rclient, task_id, "dead")
    assert record["attempts"] == "3"  # TASK_MAX_RETRIES=2 → three attempts
    assert record["error"] == "RequestedFailure: boom"
    assert "Traceback" in record["traceback"]
    assert "RequestedFailure" in record["traceback"]
    events = [e[1] for e in rclient.xrange(KEYS.task_events) if e[1][b"id"].decode() == task_id]
    statuses = [e[b"status"].decode() for e in events]
    assert statuses == ["queued", "running", "retrying", "running", "retrying", "running", "dead"]
    if broker_url is None:  # RabbitMQ keeps its dead letters in default.p2.XQ
        assert rclient.zcard(KEYS.dead_letters("default.p2")) == 1
    beat = wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.failed == 3 and b)
    assert beat.processed == 3  # attempts ended, as Sidekiq counts them


async def test_heartbeat_reports_host_process_and_counters(procs, env_factory, tmp_path, rclient, api, auth):
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=2, WORKER_THREADS=3)
    beat = wait_running(rclient, "agent", processes=2)
    assert beat.pid > 0 and beat.host
    assert beat.threads == 3 and beat.processes_desired == 2
    assert beat.version and beat.uptime_seconds >= 0
    assert beat.rss_bytes > 0 and 0 < beat.memory_percent < 100
    assert beat.queues[0] == "default.p0"
    assert len({p.pid for p in beat.procs}) == 2
    ttl = rclient.pttl(KEYS.worker("agent"))
    assert 0 < ttl <= 1500  # 3 x WORKER_POLL_INTERVAL
    for i in range(5):
        await api.post("/api/v1/tasks", json={"type": "echo", "payload": {"i": i}}, headers=auth())
    beat = wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.processed == 5 and b)
    assert beat.failed == 0 and beat.in_flight == 0
    # Acked (by the task store's finish script, atomically with the status): nothing left behind.
    assert rclient.hlen(KEYS.queue_messages("default.p2")) == 0
    assert all(rclient.scard(k) == 0 for k in rclient.keys("dramatiq:__acks__.*"))
    assert beat.cpu_percent >= 0


async def test_sigterm_drains_in_flight_work_and_exits_zero(procs, env_factory, tmp_path, rclient, api, auth):
    agent, log = start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    resp = await api.post("/api/v1/tasks", json={"type": "sleep", "payload": {"seconds": 2}}, headers=auth())
    task_id = (await resp.json())["id"]
    wait_status(rclient, task_id, "running")
    agent.send_signal(signal.SIGTERM)
    assert heartbeat_state_seen(rclient, "agent", "stopping")
    assert agent.wait(timeout=20) == 0, read_log(log)
    record = task_fields(rclient, KEYS, task_id)
    assert record["status"] == "succeeded", read_log(log)
    assert record["attempts"] == "1"
    assert rclient.zscore(KEYS.workers, "agent") is None
    # Nothing new was taken after the stop signal: a task submitted now stays queued.
    later = (await (await api.post("/api/v1/tasks", json={"type": "echo"}, headers=auth())).json())["id"]
    await asyncio.sleep(0.5)
    assert task_fields(rclient, KEYS, later)["status"] == "queued"


def heartbeat_state_seen(rclient, worker_id, state):
    return wait_for(lambda: (b := heartbeat(rclient, worker_id)) and b.state == state, timeout=5)


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_killed_process_is_restarted_and_its_task_redelivered(
    procs, env_factory, tmp_path, rclient, api, auth
):
    _, log = start_agent(procs, env_factory, tmp_path)
    first = wait_running(rclient, "agent")
    resp = await api.post(
        "/api/v1/tasks", json={"type": "sleep", "payload": {"seconds": 1.5}}, headers=auth()
    )
    task_id = (await resp.json())["id"]
    await asyncio.to_thread(wait_status, rclient, task_id, "running")  # the relay keeps running
    victim = first.procs[0].pid
    os.kill(victim, signal.SIGKILL)
    # The agent restarts the process (new pid) ...
    wait_for(
        lambda: (
            (b := heartbeat(rclient, "agent")) and b.processes == 1 and b.procs and b.procs[0].pid != victim
        ),
        what="a replacement process",
    )
    # ... and the killed process's message comes back (heartbeat timeout 3 s) and succeeds.
    record = wait_status(rclient, task_id, "succeeded", timeout=30)
    assert record["attempts"] == "2", read_log(log)
    assert f"/{victim}" not in record["worker"]
    statuses = [
        e[1][b"status"].decode() for e in rclient.xrange(KEYS.task_events) if e[1][b"id"].decode() == task_id
    ]
    assert statuses == ["queued", "running", "running", "succeeded"]
    beat = wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.procs[0].restarts == 1 and b)
    assert beat.state == "running"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_canceled_task_that_was_already_fetched_is_skipped(
    procs, env_factory, tmp_path, rclient, api, auth
):
    start_agent(procs, env_factory, tmp_path, WORKER_THREADS=1)
    wait_running(rclient, "agent")
    blocker = await api.post(
        "/api/v1/tasks", json={"type": "sleep", "payload": {"seconds": 1}}, headers=auth()
    )
    blocker_id = (await blocker.json())["id"]
    await asyncio.to_thread(wait_status, rclient, blocker_id, "running")  # the relay keeps running
    queued = await api.post("/api/v1/tasks", json={"type": "echo"}, headers=auth())
    queued_id = (await queued.json())["id"]
    await asyncio.sleep(0.3)  # the single thread is busy; the echo sits in the prefetch buffer or the queue
    assert (await api.post(f"/api/v1/tasks/{queued_id}/cancel", headers=auth())).status == 200
    wait_status(rclient, blocker_id, "succeeded")
    await asyncio.sleep(0.5)
    record = task_fields(rclient, KEYS, queued_id)
    assert record["status"] == "canceled"
    assert record["attempts"] == "0"


async def test_message_sent_with_dramatiq_itself_gets_a_record(
    procs, env_factory, tmp_path, rclient, settings
):
    from worker.actors import register_actors
    from worker.broker import build_broker

    start_agent(procs, env_factory, tmp_path)
    broker = build_broker(settings, worker_id="sender")
    register_actors(broker, settings)
    message = broker.get_actor("echo").send({"from": "dramatiq"})
    record = wait_status(rclient, message.message_id, "succeeded")
    assert record["type"] == "echo"
    assert record["queue"] == "default.p2"
    broker.close()


def test_agent_refuses_a_worker_id_in_use(procs, env_factory, tmp_path, rclient):
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    log = tmp_path / "second.log"
    second = procs.start("worker", env_factory(WORKER_ID="agent"), log)
    assert second.wait(timeout=20) != 0
    assert "WORKER_ID 'agent' is in use" in read_log(log)


def test_redis_url_is_used_not_localhost(redis_url):
    assert not redis_url.endswith(":6379/0")
    assert redis.Redis.from_url(redis_url).ping()


async def test_correlation_id_follows_the_task_into_worker_json_logs(
    procs, env_factory, tmp_path, rclient, api, auth
):
    _, log = start_agent(procs, env_factory, tmp_path, OPSDECK_ENV="production")
    wait_running(rclient, "agent")
    headers = {**auth(), "X-Request-ID": "trace-4711"}
    resp = await api.post(
        "/api/v1/tasks", json={"type": "fail", "payload": {"message": "x"}}, headers=headers
    )
    task_id = (await resp.json())["id"]
    wait_status(rclient, task_id, "dead")
    lines = [json.loads(line) for line in read_log(log).splitlines() if line.startswith("{")]
    mine = [e for e in lines if e.get("task_id") == task_id]
    assert mine, read_log(log)
    assert all(e["correlation_id"] == "trace-4711" for e in mine)
    ended = [e for e in mine if e["event"] == "task ended"]
    assert [e["status"] for e in ended] == ["retrying", "retrying", "dead"]
    assert ended[-1]["level"] == "warning"
    assert ended[0]["process"].startswith("proc-")
    assert ended[0]["timestamp"].endswith("Z")
    # Dramatiq's own (stdlib) error line for the failure carries the same ids.
    assert any("Failed to process message" in e["event"] for e in mine)
    assert "Bearer" not in read_log(log)
    # A task with a result produces no warning about discarded results (results live in the record).
    echo = await api.post("/api/v1/tasks", json={"type": "echo", "payload": {"x": 1}}, headers=auth())
    wait_status(rclient, (await echo.json())["id"], "succeeded")
    assert "returned a value" not in read_log(log)


async def test_per_minute_rollups_count_each_attempt_once(procs, env_factory, tmp_path, rclient, api, auth):
    start_agent(procs, env_factory, tmp_path)
    ids = [(await (await api.post("/api/v1/tasks", json={"type": "echo"}, headers=auth())).json())["id"]]
    ids.append((await (await api.post("/api/v1/tasks", json={"type": "fail"}, headers=auth())).json())["id"])
    for task_id in ids:
        wait_status(rclient, task_id, "succeeded", "dead")
    totals: dict[str, float] = {}
    for key in rclient.keys(KEYS.stats_minute_prefix + "*"):
        assert 0 < rclient.ttl(key) <= 8 * 86400
        for field, value in rclient.hgetall(key).items():
            totals[field.decode()] = totals.get(field.decode(), 0) + float(value)
    assert totals["processed"] == 4  # echo + three attempts of fail
    assert totals["failed"] == 3
    assert totals["retried"] == 2
    assert totals["processed:echo"] == 1
    assert totals["failed:fail"] == 3
    assert totals["duration_count"] == 4
    assert totals["duration_ms_sum"] > 0
