"""A real RabbitMQ cluster, proven: three nodes, quorum queues, ``BROKER_URL`` listing every node,
a coordinator and two worker agents (two Dramatiq processes each), all on 127.0.0.1.

Tasks and chat ratings are submitted at a steady rate while the node leading the queues is
SIGKILLed (and later started again) and Dramatiq processes are SIGKILLed. The audit: every task
the store recorded — every accepted one among them — ended exactly once (its end recorded once),
every rating counted once by the bandit, nothing left in the outbox or in any queue, every queue
back to three online members; the recovery times are printed as one JSON line
(``rabbitmq-cluster-recovery {...}``) and kept in the test's directory (``recovery.json``).

Every node URL is tried in its order (Dramatiq; the relays rotate), so every client connects to the
first node and every queue is led by it (RabbitMQ's client-local leader placement): killing that
leader drops every AMQP connection at once, the hardest case for a client.

``test_quick_cluster_fault`` (fewer tasks, one leader kill) runs in ``make test``; the long one
(``make soak``, OPSDECK_SOAK=1: thousands of tasks, two leader kills and restarts, more process
kills) is skipped otherwise. Both are bounded in count and time.

Not done here: network partitions (network namespaces would need addresses other than 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from shared.devtools.embedded_redis import free_port
from shared.task_types import all_queues
from tests.helpers import read_log
from tests.rabbitmq import RabbitCluster, RabbitError, RabbitNode, settle_quorum_declarations
from tests.reliability.audit import (
    KEYS,
    assert_exactly_once,
    assert_nothing_left,
    outbox_left,
    post_accepted,
    recorded_tasks,
    statuses,
    until,
    wait_all,
    wait_ready,
)
from tests.worker.test_end_to_end import heartbeat, wait_running

SOAK = os.environ.get("OPSDECK_SOAK") == "1"
pytestmark = pytest.mark.slow
AGENTS = ("agent-1", "agent-2")
#: The queue whose leader is killed (where the tasks go); every queue is led by the same node.
QUEUE = "default.p2"


@dataclass(frozen=True)
class Plan:
    tasks: int
    #: Chat turns answered before the faults, each rated twice while they happen.
    ratings: int
    #: Submissions per second (tasks and ratings alike).
    rate: float
    #: Leader kills, each followed by a restart of the killed node.
    leader_kills: int
    process_kills: int
    #: Seconds to wait for everything to end once the submissions stopped.
    drain: float


QUICK = Plan(tasks=400, ratings=20, rate=60.0, leader_kills=1, process_kills=2, drain=60.0)
LONG = Plan(tasks=4000, ratings=200, rate=80.0, leader_kills=2, process_kills=10, drain=300.0)


@pytest.fixture
def broker_url() -> None:
    """Not parametrized here: BROKER_URL is the cluster's, set by the test."""
    return None


@pytest.fixture
def cluster_vhost(rabbit_cluster: RabbitCluster) -> Any:
    """A fresh vhost on the cluster (every node running first), deleted after the test."""
    rabbit_cluster.ensure_running()
    vhost = rabbit_cluster.seed.add_vhost()
    yield vhost
    rabbit_cluster.ensure_running()
    rabbit_cluster.seed.delete_vhost(vhost)


@pytest.mark.skipif(not SOAK, reason="soak: its cluster boot alone takes 22-29 s (`make soak`)")
@pytest.mark.timeout(300)
async def test_quick_cluster_fault(
    rabbit_cluster, cluster_vhost, procs, env_factory, tmp_path, rclient, auth, capsys
):
    await cluster_run(
        rabbit_cluster, cluster_vhost, procs, env_factory, tmp_path, rclient, auth, capsys, QUICK
    )


@pytest.mark.skipif(not SOAK, reason="soak: runs under `make soak` (OPSDECK_SOAK=1)")
@pytest.mark.soak
@pytest.mark.timeout(1500)
async def test_cluster_soak(
    rabbit_cluster, cluster_vhost, procs, env_factory, tmp_path, rclient, auth, capsys
):
    await cluster_run(
        rabbit_cluster, cluster_vhost, procs, env_factory, tmp_path, rclient, auth, capsys, LONG
    )


async def cluster_run(
    cluster: RabbitCluster,
    vhost: str,
    procs: Any,
    env_factory: Any,
    tmp_path: Path,
    rclient: redis.Redis,
    auth: Any,
    capsys: Any,
    plan: Plan,
) -> None:
    began = time.monotonic()
    broker_url = ",".join(node.amqp_url_for(vhost) for node in cluster.nodes)
    report: dict[str, Any] = {"plan": plan.__dict__, "nodes": len(cluster.nodes)}

    def env(**extra: Any) -> Any:
        return env_factory(BROKER_URL=broker_url, TASK_EVENTS_MAXLEN=500_000, OUTBOX_CLAIM_AFTER=5, **extra)

    for agent in AGENTS:
        procs.start(
            "worker", env(WORKER_ID=agent, WORKER_PROCESSES=2, WORKER_THREADS=4), tmp_path / f"{agent}.log"
        )
    port = free_port()
    procs.start("coordinator", env(COORDINATOR_PORT=port), tmp_path / "coordinator.log")
    for agent in AGENTS:
        wait_running(rclient, agent, processes=2, timeout=60)
    await asyncio.to_thread(wait_declared, cluster, vhost)
    settle_quorum_declarations()  # a member SIGKILLed sooner would come back without its queues
    base = f"http://127.0.0.1:{port}"
    headers = auth()
    accepted: dict[str, float] = {}  # task id -> when its 202 came
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await wait_ready(http, base)
        turns = await answered_turns(http, base, headers, rclient, plan.ratings)
        report["setup_s"] = round(time.monotonic() - began, 1)
        flood_began = time.time()
        kinds = [{"type": "echo"}, *({"type": "sleep", "payload": {"seconds": s}} for s in (0.05, 0.3))]
        tasks = [("/api/v1/tasks", kinds[i % 3]) for i in range(plan.tasks)]
        ratings = [
            (
                "/api/v1/feedback/submit",
                {"session_id": t["session_id"], "turn_number": t["turn_number"], "rating": 4},
            )
            for t in turns
            for _ in range(2)  # each rating twice: it must count once
        ]
        bodies = mix(tasks, ratings)
        rating_ids: list[str] = []
        flood = asyncio.create_task(paced(http, base, headers, bodies, plan.rate, accepted, rating_ids))
        faults = asyncio.create_task(leader_faults(cluster, vhost, plan, accepted, report))
        kills = asyncio.create_task(process_kills(rclient, plan, len(bodies), accepted, report))
        await flood
        flood_ended = time.time()
        await kills
        await faults
        assert len(accepted) == len(bodies), f"{len(bodies) - len(accepted)} submissions refused"
        everything = recorded_tasks(rclient)
        assert set(accepted) <= set(everything)
        await wait_all(rclient, everything, plan.drain)
        drained = time.time()
        bandit = await (await http.get(f"{base}/api/v1/bandit", headers=headers)).json()
    turn_ids = [t["id"] for t in turns]
    assert_exactly_once(rclient, dict.fromkeys(everything, "succeeded"))
    assert set(turn_ids + rating_ids) <= set(everything)
    assert sum(arm["updates"] for arm in bandit["arms"].values()) == plan.ratings  # counted once each
    node = cluster.any_running()
    await assert_nothing_left(rclient, broker_url, management=node.api, within=60)
    assert outbox_left(rclient) == {"entries": 0, "pending": 0}
    await asyncio.to_thread(wait_declared, cluster, vhost, 60.0)  # all members online again
    for agent in AGENTS:
        beat = heartbeat(rclient, agent)
        assert beat is not None and beat.state == "running" and beat.processes == 2, beat

    ends = end_times(rclient, flood_began)
    report.update(
        tasks=len(everything),
        accepted=len(accepted),
        ratings=plan.ratings,
        rating_submissions=len(rating_ids),
        redelivered=sum(1 for a in attempts(rclient, everything) if a > 1),
        duplicates=sum(1 for _, f in rclient.xrange(KEYS.task_events) if f[b"status"] == b"duplicate"),
        deferred=sum(read_log(tmp_path / f"{a}.log").count("delivery deferred") for a in AGENTS),
        skipped_deliveries=sum(read_log(tmp_path / f"{a}.log").count("task skipped") for a in AGENTS),
        outbox_takeovers=sum(
            read_log(tmp_path / f"{name}.log").count("took over") for name in (*AGENTS, "coordinator")
        ),
        flood_s=round(flood_ended - flood_began, 1),
        drain_after_flood_s=round(drained - flood_ended, 1),
        longest_pause_in_task_ends_s=longest_pause(ends),
        total_s=round(time.monotonic() - began, 1),
    )
    for kill in report.get("leader_kills", []):
        after = [t for t in ends if t >= kill["killed_at"]]
        kill["first_end_after_kill_s"] = round(after[0] - kill["killed_at"], 2) if after else None
        kill["longest_pause_after_kill_s"] = longest_pause([kill["killed_at"], *after[:2000]])
        kill["first_end_of_a_later_submission_s"] = first_end_of_later(rclient, accepted, kill["killed_at"])
        del kill["killed_at"]
    (tmp_path / "recovery.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print(f"\nrabbitmq-cluster-recovery {json.dumps(report)}")


# -- setup --------------------------------------------------------------------------------------------


def wait_declared(cluster: RabbitCluster, vhost: str, within: float = 60.0) -> None:
    """Wait until every queue (and its .DQ and .XQ) exists as a quorum queue with a member online
    on every node."""
    want = {f"{q}{s}" for q in all_queues() for s in ("", ".DQ", ".XQ")}
    every = {n.nodename for n in cluster.nodes}
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            rows = {r["name"]: r for r in cluster.any_running().list_queues(vhost)}
            missing = {
                q: rows.get(q)
                for q in want
                if q not in rows
                or rows[q]["type"] != "quorum"
                or set(rows[q]["members"]) != every
                or set(rows[q]["online"]) != every
            }
            if not missing:
                return
            last = dict(list(missing.items())[:3])
        except RabbitError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"queues not on every node within {within}s: {last}")
        time.sleep(1.0)


async def answered_turns(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], client: redis.Redis, n: int
) -> list[dict[str, Any]]:
    turns = []
    for i in range(n):
        body = {"session_id": f"cluster-{i}", "message": "How much does it cost?", "user_id": "u"}
        async with http.post(f"{base}/api/v1/chat", json=body, headers=headers) as reply:
            assert reply.status == 202, await reply.text()
            turns.append(await reply.json())
    await wait_all(client, [t["id"] for t in turns], 60)
    assert set(statuses(client, [t["id"] for t in turns])) == {"succeeded"}
    return turns


def mix(tasks: list[Any], ratings: list[Any]) -> list[Any]:
    """The ratings spread evenly through the tasks (in a fixed order)."""
    out = list(tasks)
    step = max(1, len(tasks) // max(1, len(ratings)))
    for k, rating in enumerate(ratings):
        out.insert(min(len(out), k * (step + 1)), rating)
    return out


# -- load and faults ------------------------------------------------------------------------------------


async def paced(
    http: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    bodies: list[tuple[str, dict[str, Any]]],
    rate: float,
    accepted: dict[str, float],
    rating_ids: list[str],
) -> None:
    """Submit every body at ``rate`` per second (10 at a time); a refused one is retried (bounded)."""
    start = time.monotonic()
    for at in range(0, len(bodies), 10):
        await asyncio.sleep(max(0.0, start + at / rate - time.monotonic()))
        chunk = bodies[at : at + 10]
        for _ in range(20):
            replies = await asyncio.gather(
                *(post_accepted(http, base + path, body, headers) for path, body in chunk)
            )
            now = time.time()
            left = []
            for (path, body), reply in zip(chunk, replies, strict=True):
                if reply is None:
                    left.append((path, body))
                    continue
                accepted[reply["id"]] = now
                if path.endswith("/feedback/submit"):
                    rating_ids.append(reply["id"])
            if not left:
                break
            chunk = left
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"{len(chunk)} submissions refused 20 times")


async def reached(accepted: dict[str, float], count: float, what: str) -> None:
    await until(lambda: len(accepted) >= count, 600, 0.1, what)


async def leader_faults(
    cluster: RabbitCluster, vhost: str, plan: Plan, accepted: dict[str, float], report: dict[str, Any]
) -> None:
    """Kill the node leading QUEUE at a quarter of the submissions (then at each further share),
    time the new leader's election, start the node again later and time its rejoining."""
    kills: list[dict[str, Any]] = report.setdefault("leader_kills", [])
    total = plan.tasks + 2 * plan.ratings
    for k in range(plan.leader_kills):
        share = (k + 0.25) / plan.leader_kills
        await reached(accepted, total * share, "submissions before a leader kill")
        leader: RabbitNode = await asyncio.to_thread(cluster.leader, QUEUE, vhost)
        killed_at = time.time()
        await asyncio.to_thread(cluster.kill, leader)
        killed = time.monotonic()
        new = await asyncio.to_thread(cluster.wait_leader, QUEUE, vhost, not_on=leader, timeout=60)
        entry = {
            "killed": leader.nodename.split("@")[0].rsplit("-", 1)[1],
            "new_leader": new.nodename.split("@")[0].rsplit("-", 1)[1],
            "new_leader_s": round(time.monotonic() - killed, 2),
            "killed_at": killed_at,
        }
        await reached(accepted, total * (share + 0.35 / plan.leader_kills), "submissions before the restart")
        started = time.monotonic()
        entry["down_s"] = round(started - killed, 1)
        # Launched from this (the main) thread: a node is spawned to die with the thread that
        # started it (PR_SET_PDEATHSIG), and the executor's threads end with the test's loop.
        leader.launch()
        await asyncio.to_thread(leader.wait_ready)
        await asyncio.to_thread(cluster.wait_formed)
        entry["restart_and_rejoin_s"] = round(time.monotonic() - started, 1)
        kills.append(entry)


async def process_kills(
    client: redis.Redis, plan: Plan, total: int, accepted: dict[str, float], report: dict[str, Any]
) -> None:
    """SIGKILL a random Dramatiq process of a random agent, ``plan.process_kills`` times, spread
    over the submissions from a tenth of them on."""
    rng = random.Random(16)
    done = 0
    for k in range(plan.process_kills):
        share = 0.1 + 0.85 * k / max(1, plan.process_kills)
        await reached(accepted, total * share, "submissions before a process kill")
        for _ in range(50):  # a slot may be restarting: try the other agent, then wait a little
            agent = rng.choice(AGENTS)
            beat = heartbeat(client, agent)
            alive = [p.pid for p in beat.procs if p.alive] if beat else []
            if alive:
                os.kill(rng.choice(alive), signal.SIGKILL)
                done += 1
                break
            await asyncio.sleep(0.2)
    report["process_kills"] = done
    assert done == plan.process_kills


# -- the figures ------------------------------------------------------------------------------------


def end_times(client: redis.Redis, since: float) -> list[float]:
    """When each task end was recorded (s, sorted), from ``since`` on."""
    ends = []
    for _, fields in client.xrange(KEYS.task_events, min=f"{int(since * 1000)}-0"):
        if fields[b"status"] in (b"succeeded", b"failed", b"dead", b"canceled"):
            ends.append(int(fields[b"ts"]) / 1000)
    return sorted(ends)


def longest_pause(times: list[float]) -> float | None:
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return round(max(gaps), 2) if gaps else None


def attempts(client: redis.Redis, ids: list[str]) -> list[int]:
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(KEYS.task(task_id), "attempts")
        return [int(a or 0) for a in pipe.execute()]


def first_end_of_later(client: redis.Redis, accepted: dict[str, float], after: float) -> float | None:
    """Seconds from ``after`` until the first task accepted after it ended (the whole path back)."""
    later = [i for i, at in accepted.items() if at > after][:500]
    if not later:
        return None
    with client.pipeline(transaction=False) as pipe:
        for task_id in later:
            pipe.hget(KEYS.task(task_id), "finished_at")
        finished = [int(f) / 1000 for f in pipe.execute() if f]
    return round(min(finished) - after, 2) if finished else None
