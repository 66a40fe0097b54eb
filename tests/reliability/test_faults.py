"""Fault tests: work submitted is done exactly once while processes die and Redis misbehaves.

Quick versions run in ``make test``; ``make soak`` runs them long (OPSDECK_SOAK=1: more tasks,
more kills, longer outages). Every run is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest
import redis

from coordinator.app import create_app
from shared.devtools.embedded_redis import EmbeddedRedis
from shared.devtools.load.faultproxy import FaultProxy
from shared.keys import Keys
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import heartbeat, wait_running

KEYS = Keys()
SOAK = os.environ.get("OPSDECK_SOAK") == "1"
pytestmark = pytest.mark.slow
TERMINAL = {"succeeded", "failed", "dead", "canceled"}


def scale(quick: int, soak: int) -> int:
    return soak if SOAK else quick


def statuses(client: redis.Redis, ids: list[str]) -> list[str | None]:
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(KEYS.task(task_id), "status")
        return [s.decode() if s else None for s in pipe.execute()]


def terminal_events(client: redis.Redis) -> Counter[tuple[str, str]]:
    """(task id, terminal status) → how many times that end was recorded."""
    seen: Counter[tuple[str, str]] = Counter()
    for _, fields in client.xrange(KEYS.task_events):
        status = fields[b"status"].decode()
        if status in TERMINAL:
            seen[(fields[b"id"].decode(), status)] += 1
    return seen


def assert_exactly_once(client: redis.Redis, expected: dict[str, str]) -> None:
    """Every task ended as expected, and its end was recorded exactly once."""
    ends = terminal_events(client)
    got = dict(zip(expected, statuses(client, list(expected)), strict=True))
    assert got == expected, {k: v for k, v in got.items() if v != expected[k]}
    for task_id, status in expected.items():
        assert ends[(task_id, status)] == 1, (task_id, status, ends[(task_id, status)])
    assert sum(ends.values()) == len(expected)


async def submit_many(api: Any, headers: dict[str, str], bodies: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(bodies), 50):
        replies = await asyncio.gather(
            *(api.post("/api/v1/tasks", json=b, headers=headers) for b in bodies[start : start + 50])
        )
        for reply in replies:
            assert reply.status == 202, await reply.text()
            ids.append((await reply.json())["id"])
    return ids


def wait_all(client: redis.Redis, ids: list[str], timeout: float) -> None:
    try:
        wait_for(lambda: all(s in TERMINAL for s in statuses(client, ids)), timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"tasks not all ended: {Counter(statuses(client, ids))}") from None


@pytest.fixture
def env(env_factory):
    """Fast intervals and an event stream long enough to audit every transition."""
    return lambda **extra: env_factory(TASK_EVENTS_MAXLEN=200_000, **extra)


async def test_sigkilled_worker_processes_lose_and_duplicate_nothing(
    procs, env, tmp_path, rclient, api, auth
):
    """Tasks and ratings flow while Dramatiq processes are SIGKILLed again and again: every task
    ends succeeded exactly once, and the bandit counts every rating exactly once (each is sent
    twice, too)."""
    n, ratings, kills = scale(300, 2000), scale(60, 500), scale(4, 20)
    procs.start(
        "worker", env(WORKER_ID="agent", WORKER_PROCESSES=2, WORKER_THREADS=4), tmp_path / "agent.log"
    )
    wait_running(rclient, "agent", processes=2)
    turns = []
    for i in range(ratings):  # answered turns to rate later
        body = {"session_id": f"s{i}", "message": "How much does it cost?", "user_id": "u"}
        reply = await api.post("/api/v1/chat", json=body, headers=auth())
        assert reply.status == 202, await reply.text()
        turns.append(await reply.json())
    wait_all(rclient, [t["id"] for t in turns], timeout=60)
    sleep, echo = {"type": "sleep", "payload": {"seconds": 0.02}}, {"type": "echo", "payload": {}}
    ids = await submit_many(api, auth(), [sleep if i % 2 else echo for i in range(n)])
    rating_ids: list[str] = []
    rng = random.Random(7)
    for k in range(kills):
        for turn in turns[k::kills]:  # ratings keep arriving while processes die
            for _ in range(2):  # and each one twice: it must count once
                rating = {"session_id": turn["session_id"], "turn_number": turn["turn_number"], "rating": 4}
                reply = await api.post("/api/v1/feedback/submit", json=rating, headers=auth())
                assert reply.status == 202, await reply.text()
                rating_ids.append((await reply.json())["id"])
        beat = heartbeat(rclient, "agent")
        alive = [p.pid for p in beat.procs if p.alive] if beat else []
        if alive:
            os.kill(rng.choice(alive), signal.SIGKILL)
        await asyncio.sleep(0.7)
    wait_all(rclient, ids + rating_ids, timeout=scale(120, 600))
    assert_exactly_once(
        rclient,
        {
            **dict.fromkeys([t["id"] for t in turns] + ids, "succeeded"),
            **dict.fromkeys(rating_ids, "succeeded"),
        },
    )
    bandit = await (await api.get("/api/v1/bandit", headers=auth())).json()
    assert sum(arm["updates"] for arm in bandit["arms"].values()) == ratings
    assert rclient.hlen(KEYS.queue_messages("default.p2")) == 0


async def test_agent_sigterm_under_load_drains_and_loses_nothing(procs, env, tmp_path, rclient, api, auth):
    n = scale(120, 1000)
    agent = procs.start("worker", env(WORKER_ID="agent", WORKER_THREADS=4), tmp_path / "agent.log")
    wait_running(rclient, "agent")
    ids = await submit_many(api, auth(), [{"type": "sleep", "payload": {"seconds": 0.05}}] * n)
    wait_for(lambda: statuses(rclient, ids).count("succeeded") >= 10, what="some progress")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0, read_log(tmp_path / "agent.log")
    done = statuses(rclient, ids)
    assert "running" not in done  # drained: nothing left half-done
    procs.start("worker", env(WORKER_ID="agent-2", WORKER_THREADS=4), tmp_path / "agent2.log")
    wait_all(rclient, ids, timeout=scale(60, 300))
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "own-redis")  # AOF, appendfsync everysec
    server.start()
    yield server
    server.stop()


async def test_redis_restart_keeps_queued_and_delayed_work(
    procs, env, tmp_path, own_redis, aiohttp_client, settings, auth
):
    client = redis.Redis.from_url(own_redis.url)
    app_settings = settings.model_copy(update={"redis_url": own_redis.url})
    api = await aiohttp_client(create_app(app_settings))
    extra = {"REDIS_URL": own_redis.url, "WORKER_ID": "agent", "WORKER_THREADS": 2,
             "TASK_MAX_RETRIES": 1, "RETRY_MIN_BACKOFF": 4, "RETRY_MAX_BACKOFF": 5}  # fmt: skip
    procs.start("worker", env(**extra), tmp_path / "agent.log")
    wait_running(client, "agent")
    fails = await submit_many(api, auth(), [{"type": "fail", "payload": {"message": "x"}}] * 5)
    wait_for(lambda: statuses(client, fails).count("retrying") == 5, what="delayed retries")
    sleeps = await submit_many(api, auth(), [{"type": "sleep", "payload": {"seconds": 0.1}}] * scale(60, 400))
    assert client.llen(KEYS.queue("default.p2")) > 0  # still a backlog when Redis goes down
    own_redis.stop()  # SIGTERM: Redis writes its AOF and exits
    await asyncio.sleep(1.0)
    own_redis.start()
    wait_all(client, sleeps + fails, timeout=scale(90, 300))
    assert_exactly_once(client, {**dict.fromkeys(sleeps, "succeeded"), **dict.fromkeys(fails, "dead")})
    beat = heartbeat(client, "agent")
    assert beat is not None and beat.state == "running"
    client.close()


async def test_redis_unreachable_then_back(
    procs, env, tmp_path, rclient, redis_server, aiohttp_client, settings, auth
):
    proxy = FaultProxy(redis_server.port)
    try:
        api = await aiohttp_client(create_app(settings.model_copy(update={"redis_url": proxy.url})))
        procs.start("worker", env(REDIS_URL=proxy.url, WORKER_ID="agent"), tmp_path / "agent.log")
        wait_running(rclient, "agent")
        before = await submit_many(api, auth(), [{"type": "echo"}] * 10)
        proxy.set("blackhole")
        outage_end = time.monotonic() + scale(4, 10)
        refused: list[dict[str, Any]] = []
        while time.monotonic() < outage_end:
            body = {"type": "echo", "idempotency_key": f"outage-{len(refused)}"}
            started = time.monotonic()
            resp = await api.post("/api/v1/tasks", json=body, headers=auth())
            assert resp.status == 503
            assert time.monotonic() - started < 5  # answered, never hung (target: ~2 s)
            refused.append(body)
            assert (await api.get("/health/ready")).status == 503
        proxy.set("pass")
        for _ in range(100):
            resp = await api.post("/api/v1/tasks", json={"type": "echo"}, headers=auth())
            if resp.status == 202:
                break
            await asyncio.sleep(0.1)
        assert resp.status == 202
        after = [(await resp.json())["id"]]
        # A 503 is not a "no": a write sent just before the outage may still land. Clients retry
        # with their idempotency key and get the one task either way — never two.
        for body in refused:
            retry = await api.post("/api/v1/tasks", json=body, headers=auth())
            assert retry.status in (200, 202)
            after.append((await retry.json())["id"])
        assert len(set(after)) == len(after)
        wait_all(rclient, before + after, timeout=60)
        assert_exactly_once(rclient, dict.fromkeys(before + after, "succeeded"))
        wait_for(lambda: (b := heartbeat(rclient, "agent")) and b.state == "running", what="agent running")
    finally:
        proxy.close()


async def test_latency_and_resets_between_processes_and_redis(
    procs, env, tmp_path, rclient, redis_server, aiohttp_client, settings, auth
):
    proxy = FaultProxy(redis_server.port)
    try:
        api = await aiohttp_client(create_app(settings.model_copy(update={"redis_url": proxy.url})))
        procs.start(
            "worker", env(REDIS_URL=proxy.url, WORKER_ID="agent", WORKER_THREADS=4), tmp_path / "agent.log"
        )
        wait_running(rclient, "agent")
        first = heartbeat(rclient, "agent")
        assert first is not None
        ids: list[str] = []
        for round_ in range(scale(3, 10)):
            proxy.set("latency", delay=0.03)
            ids += await submit_many(api, auth(), [{"type": "echo", "payload": {"r": round_}}] * 30)
            await asyncio.sleep(0.5)
            proxy.set("reset")
            await asyncio.sleep(0.3)
            proxy.set("pass")
            await asyncio.sleep(0.5)
        wait_all(rclient, ids, timeout=scale(90, 300))
        assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
        beat = heartbeat(rclient, "agent")
        assert beat is not None and beat.state == "running"
        # Processes may have restarted themselves after a lost connection; none crashed.
        assert all(p.restarts == 0 for p in beat.procs), "a process crashed under network faults"
    finally:
        proxy.close()


def events_by_task(client: redis.Redis, ids: list[str]) -> dict[str, list[str]]:
    """Each task's lifecycle statuses, in order."""
    wanted = set(ids)
    out: dict[str, list[str]] = {i: [] for i in ids}
    for _, fields in client.xrange(KEYS.task_events):
        task_id = fields[b"id"].decode()
        if task_id in wanted:
            out[task_id].append(fields[b"status"].decode())
    return out


def busiest_process(client: redis.Redis, worker_id: str, at_least: int) -> int:
    """The pid of the agent's process running the most tasks (at least ``at_least``)."""

    def pick() -> int | None:
        counters = {
            pid: int(client.hget(KEYS.worker_process(worker_id, pid), "in_flight") or 0)
            for pid in [p.pid for p in (heartbeat(client, worker_id) or _NO_BEAT).procs if p.alive]
        }
        best = max(counters, key=lambda pid: counters[pid], default=None)
        return best if best is not None and counters[best] >= at_least else None

    pid = wait_for(pick, what=f"a process running {at_least} task(s)")
    assert pid is not None
    return pid


class _NoBeat:
    procs: list[Any] = []


_NO_BEAT = _NoBeat()


async def frozen_process_run(
    procs, env, tmp_path, rclient, api, auth, *, seconds: float, stall: float
) -> tuple[list[str], dict[str, list[str]]]:
    """Four sleep tasks on two processes of four threads; the busiest process is frozen (SIGSTOP)
    for ``stall`` s, then resumed. However the four are spread, the other process has a free
    thread for each task the frozen one runs."""
    procs.start(
        "worker", env(WORKER_ID="agent", WORKER_PROCESSES=2, WORKER_THREADS=4), tmp_path / "agent.log"
    )
    wait_running(rclient, "agent", processes=2)
    ids = await submit_many(api, auth(), [{"type": "sleep", "payload": {"seconds": seconds}}] * 4)
    wait_for(lambda: statuses(rclient, ids).count("running") == 4, what="all four running")
    pid = busiest_process(rclient, "agent", at_least=2)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(stall)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_all(rclient, ids, timeout=60)
    await asyncio.sleep(1.5)  # late (deferred or stale) deliveries settle
    return ids, events_by_task(rclient, ids)


async def test_a_stall_past_the_heartbeat_but_within_the_lease_runs_nothing_twice(
    procs, env, tmp_path, rclient, api, auth
):
    """Frozen longer than BROKER_HEARTBEAT_TIMEOUT (3 s here): Dramatiq's maintenance redelivers
    the frozen process's messages, but their attempts still hold a live lease (6 s), so the
    other process defers them instead of running them; once resumed, the first attempt ends."""
    ids, events = await frozen_process_run(procs, env, tmp_path, rclient, api, auth, seconds=6, stall=4.5)
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
    for task_id in ids:
        assert events[task_id] == ["queued", "running", "succeeded"], (task_id, events[task_id])
        assert rclient.hget(KEYS.task(task_id), "attempts") == b"1"


async def test_a_stall_past_the_lease_records_one_end_and_notes_the_duplicate_execution(
    procs, env, tmp_path, rclient, api, auth
):
    """Frozen longer than the lease: another process takes the attempts over and ends them; the
    frozen process, resumed, ends its stale attempts too — recorded as duplicate executions
    (a timeline note and a counter), never as a second end."""
    ids, events = await frozen_process_run(procs, env, tmp_path, rclient, api, auth, seconds=8, stall=10)
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
    taken_over = [i for i in ids if events[i].count("running") == 2]
    assert len(taken_over) >= 2, events  # the frozen process ran at least two
    for task_id in taken_over:
        assert events[task_id].count("duplicate") == 1, events[task_id]
        record = rclient.hgetall(KEYS.task(task_id))
        assert record[b"attempts"] == b"2" and record[b"duplicates"] == b"1", record
    assert sum(e.count("duplicate") for e in events.values()) == len(taken_over)
