"""Benchmark: Opsdeck's worker lifecycle cost against plain Dramatiq, and enqueue → done latency.

In one run, on a private redis-server:

* ``plain``: a Dramatiq worker process (RedisBroker with Dramatiq's default middleware) drains N
  queued no-op messages;
* ``opsdeck``: the same worker built as Opsdeck builds it (``worker.broker.build_broker``: task
  store middleware writing running/succeeded with counters, rollups and lifecycle events, broker
  heartbeat, retries policy) drains N no-op tasks submitted through the coordinator's task store;
* ``latency``: with the Opsdeck worker idle-waiting, tasks are submitted at a moderate rate and
  enqueue → done is read from each task record (``created_at`` → ``finished_at``).

Both workers use one process with WORKER_THREADS threads. Throughput is the messages acked
from a fresh worker's first ack to its last over that time (the seconds to the first ack, its
start-up, are reported beside it: Opsdeck's worker imports and sets up more, which is not a
per-message cost); the overhead is ``1 - opsdeck / plain`` of each kind's best round (target
≤ 15 %), and the order of the two alternates between rounds. JSON goes to stdout, progress to
stderr::

    .venv/bin/python scripts/bench/worker.py            # N=20000, 2 rounds
    .venv/bin/python scripts/bench/worker.py --quick    # N=3000, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import redis  # noqa: E402

from shared.devtools.embedded_redis import EmbeddedRedis  # noqa: E402
from shared.procutil import python_module, spawn, terminate  # noqa: E402
from shared.task_types import register  # noqa: E402
from shared.tasks import EchoPayload, Priority, TaskType  # noqa: E402

NOOP = register(TaskType("bench_noop", EchoPayload, "Benchmark no-op.", queue_group="bench"))
QUEUE = "bench.p2"
TARGET_OVERHEAD = 0.15


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def noop(payload: dict[str, Any]) -> None:
    """Does nothing."""


def serve(kind: str, redis_url: str, threads: int, traced: bool = False) -> None:
    """Run one Dramatiq worker of ``kind`` until SIGTERM (``traced``: an Opsdeck worker with
    tracing set up from the ``OTEL_*`` variables first, as ``worker.process`` does)."""
    import signal
    import threading

    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker: dramatiq.Broker  # plain: Dramatiq's RedisBroker; opsdeck: the one build_broker picks
    if kind == "plain":
        broker = RedisBroker(url=redis_url)
        dramatiq.actor(actor_name=NOOP.actor_name, queue_name=QUEUE, broker=broker)(noop)
    else:
        from shared import tracing
        from shared.logging import setup_logging
        from shared.settings import Settings
        from worker.actors.builtin import declare
        from worker.broker import build_broker

        setup_logging("INFO", json=True, process="bench")  # as `python -m worker.process` does

        settings = Settings(redis_url=redis_url, jwt_secret="b" * 40, worker_threads=threads)  # type: ignore[arg-type]
        if traced:  # before the broker: it adds TaskTracing when on
            tracing.configure(settings, "opsdeck-worker")
        broker = build_broker(settings, worker_id="bench")
        declare(broker, settings, NOOP, noop)
    broker.declare_queue(QUEUE)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    stop.wait()
    worker.stop()
    broker.close()


def start_worker(
    kind: str, redis_url: str, threads: int, trace_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``--serve kind`` in a child process (its own interpreter, like a real worker); with
    ``trace_env`` (``OTEL_*`` variables) an Opsdeck worker traced as they say."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(trace_env or {})}
    argv = python_module(
        "scripts.bench.worker", "--serve", kind, "--redis-url", redis_url, "--threads", str(threads)
    )
    if trace_env is not None:
        argv.append("--traced")
    return spawn(argv, env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL)


def enqueue_plain(client: redis.Redis, n: int) -> None:
    """N messages exactly as ``actor.send`` writes them (pipelined, so enqueue is not measured)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(client=client)
    actor = dramatiq.actor(actor_name=NOOP.actor_name, queue_name=QUEUE, broker=broker)(noop)
    with client.pipeline(transaction=False) as pipe:
        for _ in range(n):
            message = actor.message({}).copy(options={"redis_message_id": os.urandom(16).hex()})
            pipe.hset(f"dramatiq:{QUEUE}.msgs", message.options["redis_message_id"], message.encode())
            pipe.rpush(f"dramatiq:{QUEUE}", message.options["redis_message_id"])
        pipe.execute()


async def enqueue_opsdeck(redis_url: str, n: int) -> list[str]:
    """N tasks through the coordinator's task store (records, indexes, events, message)."""
    from shared.redis import async_client
    from shared.settings import Settings
    from shared.taskstore import TaskStore

    settings = Settings(redis_url=redis_url, jwt_secret="b" * 40)  # type: ignore[arg-type]
    client = async_client(settings)
    store = TaskStore(client, settings)
    ids: list[str] = []
    for start in range(0, n, 500):
        batch = await asyncio.gather(
            *(store.submit(NOOP, {}, Priority.P2, subject="bench", correlation_id="c")
              for _ in range(min(500, n - start)))
        )  # fmt: skip
        ids += [s.task_id for s in batch]
    await store.aclose()
    await client.aclose()
    return ids


def drain(client: redis.Redis, proc: subprocess.Popen[bytes], timeout: float = 300) -> float:
    """Seconds until every message is acked (the queue's message hash is empty)."""
    started = time.perf_counter()
    deadline = started + timeout
    while client.hlen(f"dramatiq:{QUEUE}.msgs"):
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        if time.perf_counter() > deadline:
            raise TimeoutError("worker did not drain the queue")
        time.sleep(0.005)
    return time.perf_counter() - started


def steady_rate(
    client: redis.Redis, proc: subprocess.Popen[bytes], n: int, timeout: float = 300
) -> tuple[float, float]:
    """Messages per second from the first ack to the last (the queue's message hash empty), and
    the seconds until that first ack (process start, imports, broker set-up: not the lifecycle
    cost, so not in the rate)."""
    started = time.perf_counter()
    deadline = started + timeout
    left = n
    while left == n:  # until the first ack
        left = client.hlen(f"dramatiq:{QUEUE}.msgs")
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        if time.perf_counter() > deadline:
            raise TimeoutError("worker did not start acking")
        time.sleep(0.002)
    first_ack = time.perf_counter()
    seconds = drain(client, proc, timeout=max(1.0, deadline - first_ack))
    return left / seconds, first_ack - started


def throughput_round(
    kind: str, redis_url: str, n: int, threads: int, trace_env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Messages per second of a fresh worker of ``kind`` draining N messages (from its first
    ack), and its seconds to that first ack (``trace_env``: see :func:`start_worker`)."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    if kind == "plain":
        enqueue_plain(client, n)
    else:
        asyncio.run(enqueue_opsdeck(redis_url, n))
    proc = start_worker(kind, redis_url, threads, trace_env)
    try:
        return steady_rate(client, proc, n)
    finally:
        terminate(proc, 20)
        client.close()


def latency_round(redis_url: str, n: int, rate: float, threads: int) -> dict[str, float]:
    """enqueue → done (ms) percentiles at ``rate`` tasks/s against an idle-waiting Opsdeck worker."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    proc = start_worker("opsdeck", redis_url, threads)
    time.sleep(2.0)  # boot
    try:

        async def paced() -> list[str]:
            from shared.redis import async_client
            from shared.settings import Settings
            from shared.taskstore import TaskStore

            settings = Settings(redis_url=redis_url, jwt_secret="b" * 40)  # type: ignore[arg-type]
            aclient = async_client(settings)
            store = TaskStore(aclient, settings)
            ids = []
            for _ in range(n):
                ids.append(
                    (await store.submit(NOOP, {}, Priority.P2, subject="b", correlation_id="c")).task_id
                )
                await asyncio.sleep(1 / rate)
            await store.aclose()
            await aclient.aclose()
            return ids

        ids = asyncio.run(paced())
        drain(client, proc)
        time.sleep(0.2)
        with client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(f"opsdeck:task:{task_id}", "created_us", "finished_at")
            rows = pipe.execute()
    finally:
        terminate(proc, 20)
    lat = np.array([int(f) - int(c) / 1000 for c, f in rows if c and f], dtype=float)
    return {
        "tasks": int(lat.size),
        "rate_per_s": rate,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def main() -> None:
    """Serve (child) or run the benchmark and print its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=("plain", "opsdeck"), help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.redis_url, args.threads, args.traced)
        return
    if args.quick:
        args.messages, args.rounds = 3000, 1
    with tempfile.TemporaryDirectory(prefix="opsdeck-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", aof=False)
        url = server.start()
        try:
            rounds: list[dict[str, Any]] = []
            for number in range(1, args.rounds + 1):
                kinds = ("plain", "opsdeck") if number % 2 else ("opsdeck", "plain")  # no order favoured
                for kind in kinds:
                    rate, first_ack = throughput_round(kind, url, args.messages, args.threads)
                    log(f"round {number} {kind}: {rate:.0f} msg/s (first ack after {first_ack:.2f} s)")
                    rounds.append({
                        "round": number, "kind": kind, "msgs_per_s": round(rate, 1),
                        "first_ack_s": round(first_ack, 2),
                    })  # fmt: skip
            latency = latency_round(url, 300 if args.quick else 1000, 100.0, args.threads)
            log(f"latency: {latency}")
        finally:
            server.stop()
    best = {k: max(r["msgs_per_s"] for r in rounds if r["kind"] == k) for k in ("plain", "opsdeck")}
    overhead = round(1 - best["opsdeck"] / best["plain"], 3)
    print(
        json.dumps(
            {
                "benchmark": "worker",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "messages": args.messages,
                "threads": args.threads,
                "baseline_plain_dramatiq_msgs_per_s": best["plain"],
                "opsdeck_msgs_per_s": best["opsdeck"],
                "overhead": overhead,
                "target_overhead_max": TARGET_OVERHEAD,
                "meets_target": overhead <= TARGET_OVERHEAD,
                "enqueue_to_done": latency,
                "rounds": rounds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
