"""Fault tests: work submitted is done exactly once while processes die and Redis misbehaves, on
both transports (the Redis broker, and RabbitMQ with its outbox relays).

Quick versions run in ``make test``; ``make soak`` runs them long (OPSDECK_SOAK=1: more tasks,
more kills, longer outages). Every run is bounded in count and time and stops by itself.

What differs on RabbitMQ, and how it is tested here:

- A SIGKILLed process's connection closes with it, so RabbitMQ requeues its unacked messages at
  once (no heartbeat to wait for); a copy that arrives while the dead attempt's lease is still
  alive is deferred, as on Redis.
- A *frozen* (SIGSTOPped) process keeps its TCP connection: RabbitMQ redelivers its messages only
  once it closes the connection for missed AMQP heartbeats (the ``heartbeat`` of the node URL,
  else the server's 60 s), never on ``BROKER_HEARTBEAT_TIMEOUT``. The stall tests run on RabbitMQ
  with ``?heartbeat=1`` in the worker's URL (the same two outcomes as on Redis), and one more
  proves that a stall past the lease but inside the AMQP heartbeat redelivers nothing.
- Submissions pass through the outbox: a relay killed while it holds entries it read leaves them
  pending, and another relay takes them over after ``OUTBOX_CLAIM_AFTER`` (2 s here).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import time
from typing import Any

import aiohttp
import pytest
import redis

from coordinator.app import create_app
from shared.devtools.embedded_redis import EmbeddedRedis, free_port
from shared.devtools.load.faultproxy import FaultProxy
from shared.transport.urls import node_urls
from tests.conftest import BROKERS
from tests.helpers import read_log
from tests.reliability.audit import (
    KEYS,
    assert_exactly_once,
    assert_nothing_left,
    events_by_task,
    outbox_left,
    pending_of,
    post_accepted,
    recorded_tasks,
    statuses,
    submit_many,
    until,
    wait_all,
    wait_ready,
)
from tests.worker.test_end_to_end import heartbeat, wait_running

SOAK = os.environ.get("OPSDECK_SOAK") == "1"
pytestmark = pytest.mark.slow
#: OUTBOX_CLAIM_AFTER of every process here: a relay's unconfirmed entries are taken over after 2 s.
CLAIM_AFTER = 2.0
on_both = pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
on_rabbitmq = pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)


def scale(quick: int, soak: int) -> int:
    return soak if SOAK else quick


def with_heartbeat(broker_url: str, seconds: int) -> str:
    """``broker_url`` with the AMQP heartbeat of every node URL set to ``seconds``."""
    return ",".join(f"{u}{'&' if '?' in u else '?'}heartbeat={seconds}" for u in node_urls(broker_url))


@pytest.fixture
def env(env_factory):
    """Fast intervals, an event stream long enough to audit every transition, quick takeovers."""
    return lambda **extra: env_factory(TASK_EVENTS_MAXLEN=200_000, OUTBOX_CLAIM_AFTER=CLAIM_AFTER, **extra)


@pytest.fixture
def settings(settings):
    """The in-process coordinator's settings (``api``), with the same quick takeovers."""
    return settings.model_copy(update={"outbox_claim_after": CLAIM_AFTER, "task_events_maxlen": 200_000})


@pytest.fixture
def management(request, broker_url):
    """The RabbitMQ node's management API call (None on the Redis transport)."""
    return request.getfixturevalue("rabbit").api if broker_url else None


@on_both
async def test_sigkilled_worker_processes_lose_and_duplicate_nothing(
    procs, env, tmp_path, rclient, api, auth, broker_url, management
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
    await wait_all(rclient, [t["id"] for t in turns], within=60)
    sleep, echo = {"type": "sleep", "payload": {"seconds": 0.02}}, {"type": "echo", "payload": {}}
    ids = await submit_many(api, auth(), [sleep if i % 2 else echo for i in range(n)])
    rating_ids: list[str] = []
    rng = random.Random(7)
    killed = 0
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
            killed += 1
        await asyncio.sleep(0.7)
    assert killed >= kills // 2
    await wait_all(rclient, ids + rating_ids, scale(120, 600))
    assert_exactly_once(
        rclient,
        {
            **dict.fromkeys([t["id"] for t in turns] + ids, "succeeded"),
            **dict.fromkeys(rating_ids, "succeeded"),
        },
    )
    bandit = await (await api.get("/api/v1/bandit", headers=auth())).json()
    assert sum(arm["updates"] for arm in bandit["arms"].values()) == ratings
    await assert_nothing_left(rclient, broker_url, management=management)


@on_both
async def test_agent_sigterm_under_load_drains_and_loses_nothing(
    procs, env, tmp_path, rclient, api, auth, broker_url, management
):
    n = scale(120, 1000)
    agent = procs.start("worker", env(WORKER_ID="agent", WORKER_THREADS=4), tmp_path / "agent.log")
    wait_running(rclient, "agent")
    ids = await submit_many(api, auth(), [{"type": "sleep", "payload": {"seconds": 0.05}}] * n)
    await until(lambda: statuses(rclient, ids).count("succeeded") >= 10, what="some progress")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0, read_log(tmp_path / "agent.log")
    done = statuses(rclient, ids)
    assert "running" not in done  # drained: nothing left half-done
    procs.start("worker", env(WORKER_ID="agent-2", WORKER_THREADS=4), tmp_path / "agent2.log")
    await wait_all(rclient, ids, within=scale(60, 300))
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
    await assert_nothing_left(rclient, broker_url, management=management)


@on_rabbitmq
async def test_a_relay_killed_holding_outbox_entries_loses_and_duplicates_nothing(
    procs, env, tmp_path, rclient, auth, broker_url, management
):
    """Submissions flow into a coordinator subprocess whose relay reaches RabbitMQ through a proxy;
    the proxy goes silent (the relay's publishes hang, unconfirmed) and the coordinator is SIGKILLed
    while it holds the entries it read. The agent's relay takes them over after OUTBOX_CLAIM_AFTER;
    a second coordinator takes the traffic. Every accepted task, and every task recorded at all
    (a 202 may die with its connection), runs exactly once; the outbox ends empty."""
    at_least, n_after = scale(300, 2000), scale(100, 1000)
    (node,) = node_urls(broker_url)
    amqp_port = int(node.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = FaultProxy(amqp_port)
    try:
        through_proxy = node.replace(f":{amqp_port}/", f":{proxy.port}/", 1)
        agent_log = tmp_path / "agent.log"
        procs.start("worker", env(WORKER_ID="agent", WORKER_PROCESSES=2, WORKER_THREADS=8), agent_log)
        wait_running(rclient, "agent", processes=2)
        port = free_port()
        first = procs.start(
            "coordinator", env(COORDINATOR_PORT=port, BROKER_URL=through_proxy), tmp_path / "coordinator.log"
        )
        base = f"http://127.0.0.1:{port}"
        accepted: list[str] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await wait_ready(http, base)
            # until the coordinator dies (bounded: 100 * at_least)
            flow = asyncio.create_task(flood(http, base, auth(), 100 * at_least, accepted))
            await until(lambda: len(accepted) >= at_least, within=60, what="submissions flowing")
            proxy.set("blackhole")  # its relay's next batch is read, published, never confirmed
            consumer = f"{socket.gethostname()}-{first.pid}"
            held = await until(lambda: stuck(rclient, consumer), 15, what="the relay holding entries")
            assert not flow.done()  # submissions still flowing
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = time.monotonic()
            assert pending_of(rclient, consumer) == held  # read, unconfirmed, and nobody took them yet
            proxy.set("reset")  # the dead relay's connection: dropped (nothing else uses the proxy)
            await flow  # the rest of the flood fails against the dead coordinator: not accepted
            port2 = free_port()
            procs.start("coordinator", env(COORDINATOR_PORT=port2), tmp_path / "coordinator2.log")
            base2 = f"http://127.0.0.1:{port2}"
            await wait_ready(http, base2)
            await flood(http, base2, auth(), n_after, accepted)
        await until(lambda: pending_of(rclient, consumer) == 0, within=CLAIM_AFTER + 15, what="the takeover")
        taken_over = time.monotonic() - killed_at
        everything = recorded_tasks(rclient)
        assert set(accepted) <= set(everything) and len(accepted) >= at_least + n_after
        await wait_all(rclient, everything, within=scale(90, 600))
        assert_exactly_once(rclient, dict.fromkeys(everything, "succeeded"))
        await assert_nothing_left(rclient, broker_url, management=management)
        assert "took over" in read_log(agent_log) or "took over" in read_log(tmp_path / "coordinator2.log")
        assert taken_over < CLAIM_AFTER + 10
        summary = {"held": held, "taken_over_s": round(taken_over, 2), "accepted": len(accepted)}
        print(f"relay-kill {json.dumps({**summary, 'recorded': len(everything)})}")  # shown with -s
    finally:
        proxy.close()


def stuck(client: redis.Redis, consumer: str) -> int:
    """How many entries the relay ``consumer`` holds, once it holds the same ones for 0.3 s (a
    batch whose confirms merely were in flight is acked within that); 0 until then."""
    before = pending_of(client, consumer)
    if not before:
        return 0
    time.sleep(0.3)  # well inside OUTBOX_CLAIM_AFTER: nobody may take them over meanwhile
    return before if pending_of(client, consumer) == before else 0


async def flood(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], n: int, accepted: list[str]
) -> None:
    """POST ``n`` echo tasks, 20 at a time; the ids of those accepted go to ``accepted``. Stops early
    once a whole batch fails (the coordinator is gone)."""
    url = f"{base}/api/v1/tasks"
    for start in range(0, n, 20):
        replies = await asyncio.gather(
            *(
                post_accepted(http, url, {"type": "echo", "payload": {"i": i}}, headers)
                for i in range(start, start + 20)
            )
        )
        got = [r["id"] for r in replies if r is not None]
        accepted += got
        if not got:
            return


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "own-redis")  # AOF, appendfsync everysec
    server.start()
    yield server
    server.stop()


@on_both
async def test_redis_restart_keeps_queued_and_delayed_work(
    procs, env, tmp_path, own_redis, aiohttp_client, settings, auth, broker_url
):
    client = redis.Redis.from_url(own_redis.url)
    app_settings = settings.model_copy(update={"redis_url": own_redis.url})
    api = await aiohttp_client(create_app(app_settings))
    extra = {"REDIS_URL": own_redis.url, "WORKER_ID": "agent", "WORKER_THREADS": 2,
             "TASK_MAX_RETRIES": 1, "RETRY_MIN_BACKOFF": 4, "RETRY_MAX_BACKOFF": 5}  # fmt: skip
    procs.start("worker", env(**extra), tmp_path / "agent.log")
    wait_running(client, "agent")
    fails = await submit_many(api, auth(), [{"type": "fail", "payload": {"message": "x"}}] * 5)
    await until(lambda: statuses(client, fails).count("retrying") == 5, what="delayed retries")
    sleeps = await submit_many(api, auth(), [{"type": "sleep", "payload": {"seconds": 0.1}}] * scale(60, 400))
    if broker_url is None:
        assert client.llen(KEYS.queue("default.p2")) > 0  # still a backlog when Redis goes down
    else:  # in RabbitMQ or still in the outbox
        assert statuses(client, sleeps).count("queued") > 0
    own_redis.stop()  # SIGTERM: Redis writes its AOF and exits
    await asyncio.sleep(1.0)
    own_redis.start()
    await wait_all(client, sleeps + fails, within=scale(90, 300))
    assert_exactly_once(client, {**dict.fromkeys(sleeps, "succeeded"), **dict.fromkeys(fails, "dead")})
    beat = heartbeat(client, "agent")
    assert beat is not None and beat.state == "running"
    await assert_nothing_left(client, broker_url)
    client.close()


@on_both
async def test_redis_unreachable_then_back(
    procs, env, tmp_path, rclient, redis_server, aiohttp_client, settings, auth, broker_url
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
        await wait_all(rclient, before + after, within=60)
        assert_exactly_once(rclient, dict.fromkeys(before + after, "succeeded"))
        await until(lambda: (b := heartbeat(rclient, "agent")) and b.state == "running", what="agent running")
        await assert_nothing_left(rclient, broker_url)
    finally:
        proxy.close()


@on_both
async def test_latency_and_resets_between_processes_and_redis(
    procs, env, tmp_path, rclient, redis_server, aiohttp_client, settings, auth, broker_url
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
        await wait_all(rclient, ids, within=scale(90, 300))
        assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
        beat = heartbeat(rclient, "agent")
        assert beat is not None and beat.state == "running"
        # Processes may have restarted themselves after a lost connection; none crashed.
        assert all(p.restarts == 0 for p in beat.procs), "a process crashed under network faults"
        await assert_nothing_left(rclient, broker_url)
    finally:
        proxy.close()


async def busiest_process(client: redis.Redis, worker_id: str, at_least: int) -> int:
    """The pid of the agent's process running the most tasks (at least ``at_least``)."""

    def pick() -> int | None:
        beat = heartbeat(client, worker_id)
        counters = {
            pid: int(client.hget(KEYS.worker_process(worker_id, pid), "in_flight") or 0)
            for pid in [p.pid for p in (beat.procs if beat else []) if p.alive]
        }
        best = max(counters, key=lambda pid: counters[pid], default=None)
        return best if best is not None and counters[best] >= at_least else None

    pid = await until(pick, what=f"a process running {at_least} task(s)")
    assert pid is not None
    return pid


async def frozen_process_run(
    procs, env, tmp_path, rclient, api, auth, *, seconds: float, stall: float, **agent_env: Any
) -> tuple[list[str], dict[str, list[str]]]:
    """Four sleep tasks on two processes of four threads; the busiest process is frozen (SIGSTOP)
    for ``stall`` s, then resumed. However the four are spread, the other process has a free
    thread for each task the frozen one runs."""
    procs.start(
        "worker",
        env(WORKER_ID="agent", WORKER_PROCESSES=2, WORKER_THREADS=4, **agent_env),
        tmp_path / "agent.log",
    )
    wait_running(rclient, "agent", processes=2)
    ids = await submit_many(api, auth(), [{"type": "sleep", "payload": {"seconds": seconds}}] * 4)
    await until(lambda: statuses(rclient, ids).count("running") == 4, what="all four running")
    pid = await busiest_process(rclient, "agent", at_least=2)
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(stall)
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_all(rclient, ids, within=60)
    await asyncio.sleep(1.5)  # late (deferred or stale) deliveries settle
    return ids, events_by_task(rclient, ids)


def short_amqp_heartbeat(broker_url: str | None) -> dict[str, str]:
    """On RabbitMQ, the worker's node URLs with a 1 s AMQP heartbeat. RabbitMQ closes a connection
    2 to 3 heartbeat intervals after the last byte it received from it, so a frozen process's
    connections close (and its messages are redelivered) 2-3 s into the stall: about when
    BROKER_HEARTBEAT_TIMEOUT (3 s) has Redis's maintenance redeliver them."""
    return {"BROKER_URL": with_heartbeat(broker_url, 1)} if broker_url else {}


@on_both
async def test_a_stall_past_the_heartbeat_but_within_the_lease_runs_nothing_twice(
    procs, env, tmp_path, rclient, api, auth, broker_url
):
    """Frozen longer than the redelivery clock (BROKER_HEARTBEAT_TIMEOUT, 3 s, on Redis; two to
    three AMQP heartbeats, 2-3 s, on RabbitMQ): the frozen process's messages are redelivered, but their
    attempts still hold a live lease (6 s), so the other process defers them instead of running
    them; once resumed, the first attempt ends."""
    ids, events = await frozen_process_run(
        procs, env, tmp_path, rclient, api, auth, seconds=6, stall=4.5, **short_amqp_heartbeat(broker_url)
    )
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
    for task_id in ids:
        assert events[task_id] == ["queued", "running", "succeeded"], (task_id, events[task_id])
        assert rclient.hget(KEYS.task(task_id), "attempts") == b"1"
    if broker_url:  # the redelivery did happen (and was deferred behind the lease)
        assert "delivery deferred" in read_log(tmp_path / "agent.log")


@on_both
async def test_a_stall_past_the_lease_records_one_end_and_notes_the_duplicate_execution(
    procs, env, tmp_path, rclient, api, auth, broker_url
):
    """Frozen longer than the lease: another process takes the attempts over and ends them; the
    frozen process, resumed, ends its stale attempts too — recorded as duplicate executions
    (a timeline note and a counter), never as a second end."""
    ids, events = await frozen_process_run(
        procs, env, tmp_path, rclient, api, auth, seconds=8, stall=10, **short_amqp_heartbeat(broker_url)
    )
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
    taken_over = [i for i in ids if events[i].count("running") == 2]
    assert len(taken_over) >= 2, events  # the frozen process ran at least two
    for task_id in taken_over:
        assert events[task_id].count("duplicate") == 1, events[task_id]
        record = rclient.hgetall(KEYS.task(task_id))
        assert record[b"attempts"] == b"2" and record[b"duplicates"] == b"1", record
    assert sum(e.count("duplicate") for e in events.values()) == len(taken_over)


@on_rabbitmq
async def test_on_rabbitmq_a_stall_inside_the_amqp_heartbeat_redelivers_nothing_even_past_the_lease(
    procs, env, tmp_path, rclient, api, auth, management
):
    """RabbitMQ redelivers only when a connection closes; a frozen process's stays open until the
    AMQP heartbeat (the server's 60 s here) gives up on it. Frozen 10 s, past BROKER_HEARTBEAT_TIMEOUT
    (3 s) and past the lease (6 s): nothing is redelivered, nobody takes over, and each task runs
    once, its one attempt ending when the process resumes (its lease set again on the next beat)."""
    ids, events = await frozen_process_run(procs, env, tmp_path, rclient, api, auth, seconds=8, stall=10)
    assert_exactly_once(rclient, dict.fromkeys(ids, "succeeded"))
    for task_id in ids:
        assert events[task_id] == ["queued", "running", "succeeded"], (task_id, events[task_id])
        record = rclient.hgetall(KEYS.task(task_id))
        assert record[b"attempts"] == b"1" and b"duplicates" not in record, record
    assert "delivery deferred" not in read_log(tmp_path / "agent.log")
    assert outbox_left(rclient) == {"entries": 0, "pending": 0}
