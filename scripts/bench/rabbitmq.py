"""Benchmark: the RabbitMQ transport (``BROKER_URL=amqp://``) against its baselines, in one run.

One run starts its own RabbitMQ node (``tests.rabbitmq.RabbitNode``: free 127.0.0.1 ports, its
own epmd, cookie and data; never the machine's 5672) and its own redis-servers (no AOF, never
6379), then three stacks side by side, all with WORKER_PROCESSES × WORKER_THREADS (2 × 8):

* ``opsdeck_rabbitmq``: a real coordinator and worker agent (``python -m coordinator``,
  ``python -m worker``) with ``BROKER_URL`` on the node (vhost ``opsdeck``, quorum queues, the
  default ``RABBITMQ_QUEUE_TYPE``): submissions go into the Redis outbox and the relays (one in
  the coordinator, one in the agent) publish them with publisher confirms;
* ``opsdeck_redis``: the same on Redis alone (the baseline of what the transport costs);
* ``plain_dramatiq_rabbitmq``: the baseline of what RabbitMQ itself costs: as many Dramatiq
  worker processes as the agent runs, with as many threads, on Dramatiq's ``RabbitmqBroker``
  (``confirm_delivery=True``, default middleware, queues of the same type; vhost ``plain``)
  consuming a bare echo actor; messages sent with ``actor.send`` from SENDERS threads.

Measured, each beside its same-run baseline:

1. **End-to-end tasks/s**: N echo tasks submitted (Opsdeck: ``TaskStore.submit``, what the
   coordinator's POST calls, in gathered batches of 500; plain: ``actor.send``, which waits for
   each confirm, from SENDERS threads) to the stack's idle, already running workers, from the
   first submit to the last task succeeded (the last ``finished_at``; plain: the last ack). Each
   round also says when the submits returned and when everything was published (the outbox
   empty). After a warm-up round of each, rounds rotate the order of the three; each kind's best
   round counts (the machine is shared: a slow round is the machine's, not the kind's).
   Target: Opsdeck on RabbitMQ ≥ 0.5 × plain Dramatiq on the same RabbitMQ.
2. **Chat** p50/p99 at 20 clients on each Opsdeck stack (``scripts/bench/chat.py``'s phase:
   ``POST /api/v1/chat?wait=10`` until the suggestion).
3. **Submit latency**: ``POST /api/v1/tasks`` at a paced RATE (open loop) through the
   coordinator: the 202's time on each stack, and submit → started / succeeded
   (``created_us`` → ``started_at`` / ``finished_at`` of each record). Then, with the RabbitMQ
   stack's agent stopped, the **relay's lag** at RATE/4 and RATE: submit (``created_us``) → the
   message delivered to our own consumer of the queue, published by the coordinator's relay (on
   Redis it is 0: the submit script writes the message).

``--cluster`` instead runs a 3-node cluster (``tests.rabbitmq.RabbitCluster``) and a single node:
Opsdeck's tasks/s on the cluster (BROKER_URL naming the three nodes, quorum queues on three
members) beside Opsdeck on the single node and plain Dramatiq on the cluster, in rotating
rounds; then paced POSTs to the cluster stack with the node leading the tasks' queue SIGKILLed
KILL_AFTER seconds in. The pause is the longest time no task started, from the kill on, beside
the longest before it; every task must succeed, and how many started twice is counted. "New
leader listed" comes from ``rabbitmqctl list_queues`` polled every 0.5 s (each call ~1 s): an
upper bound.

Every process's log goes to a file of the run, whose last lines are printed on a failure. The
machine's other load shares the CPUs: only same-run comparisons mean anything. JSON goes to
stdout, progress to stderr. Run from the project root::

    .venv/bin/python scripts/bench/rabbitmq.py                     # N=6000, 3 rounds, 10 s chat
    .venv/bin/python scripts/bench/rabbitmq.py --quick             # N=1500, 1 round, 3 s chat
    .venv/bin/python scripts/bench/rabbitmq.py --cluster [--quick] # N=3000 (1000), 3 rounds (1)

The RabbitMQ harness is the test suite's (``tests/rabbitmq.py``, which imports pytest); this
script imports it rather than keeping a second copy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from scripts.bench.chat import env_for, phase, wait_ready  # noqa: E402
from shared.auth import mint  # noqa: E402
from shared.devtools.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from shared.procutil import python_module, spawn, stop_all  # noqa: E402

#: The plain Dramatiq baseline's actor and queue (its own vhost, so no clash with Opsdeck's).
PLAIN_ACTOR, PLAIN_QUEUE = "bench_echo", "bench"
#: Opsdeck's echo tasks (priority P2) land on this queue.
ECHO_QUEUE = "default.p2"
TARGET_RATIO = 0.5
SECRET = "bench-" + "s" * 40


_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the start."""
    print(f"[bench {time.monotonic() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


def pct(values: Any, q: float) -> float | None:
    arr = np.asarray(values, dtype=float)
    return round(float(np.percentile(arr, q)), 2) if arr.size else None


def summary(ms: list[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of latencies in ms."""
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "max_ms": round(max(ms), 2) if ms else None,
    }


# -- the plain Dramatiq baseline: worker processes (children) and a sender ----------------------------


def plain_broker(url: str, queue_type: str) -> Any:
    """Dramatiq's RabbitmqBroker with publisher confirms; queues get ``x-queue-type`` so both
    sides use the same kind of queue (the only change from a stock broker)."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    class Broker(RabbitmqBroker):
        def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
            arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)
            return {**arguments, "x-queue-type": queue_type}

    return Broker(url=url.split(",") if "," in url else url, confirm_delivery=True)


def plain_echo(payload: dict[str, Any]) -> None:
    """The bare actor (returning nothing: without a result backend Dramatiq would log a warning
    for every value returned)."""


def serve_plain(url: str, threads: int, queue_type: str) -> None:
    """One plain Dramatiq worker process until SIGTERM. Prints ``ready``, then (at most every
    5 ms, when it changed) ``<messages acked> <time.time() of the last ack>``."""
    import signal

    import dramatiq

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    class Acks(dramatiq.Middleware):
        count, last = 0, 0.0

        def after_ack(self, broker: Any, message: Any) -> None:
            self.last = time.time()
            self.count += 1  # one consumer thread (one queue) acks: no race

    acks = Acks()
    broker = plain_broker(url, queue_type)
    broker.add_middleware(acks)
    dramatiq.actor(actor_name=PLAIN_ACTOR, queue_name=PLAIN_QUEUE, broker=broker)(plain_echo)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)  # as worker/process.py
    worker.start()
    print("ready", flush=True)
    seen = -1
    while not stop.wait(0.005):
        if acks.count != seen:
            seen = acks.count
            print(f"{seen} {acks.last:.6f}", flush=True)
    worker.stop()
    broker.close()


class PlainWorkers:
    """The plain worker processes and what they report (see :func:`serve_plain`)."""

    def __init__(self, url: str, processes: int, threads: int, queue_type: str, log: Path) -> None:
        self.url, self.queue_type, self.log = url, queue_type, log
        argv = python_module(
            "scripts.bench.rabbitmq", "--serve-plain", "--amqp-url", url,
            "--threads", str(threads), "--queue-type", queue_type,
        )  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("ab") as err:
            self.procs = [
                spawn(argv, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=err)
                for _ in range(processes)
            ]
        self.counts = [0] * processes
        self.lasts = [0.0] * processes
        self.ready = [threading.Event() for _ in range(processes)]
        for i, proc in enumerate(self.procs):
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()

    def _read(self, i: int, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line == "ready":
                self.ready[i].set()
            elif line:
                count, last = line.split()
                self.lasts[i], self.counts[i] = (
                    float(last),
                    int(count),
                )  # the time first: read after the count

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for event, proc in zip(self.ready, self.procs, strict=True):
            while not event.wait(0.1):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"plain worker {proc.pid} did not start ({proc.returncode})")

    def acked(self) -> int:
        return sum(self.counts)

    def round(self, n: int, senders: int, timeout: float) -> dict[str, Any]:
        """Send N messages from ``senders`` threads, wait for N more acks: tasks/s."""
        import dramatiq

        broker = plain_broker(self.url, self.queue_type)
        actor = dramatiq.actor(actor_name=PLAIN_ACTOR, queue_name=PLAIN_QUEUE, broker=broker)(plain_echo)
        base = self.acked()
        shares = [range(k, n, senders) for k in range(senders)]
        errors: list[BaseException] = []

        def send(share: range) -> None:
            try:
                for i in share:
                    actor.send({"n": i})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(s,)) for s in shares]
        started = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted = time.time()
        broker.close()
        if errors:
            raise errors[0]
        deadline = time.monotonic() + timeout
        while self.acked() < base + n:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a plain worker exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"plain: {self.acked() - base}/{n} acked")
            time.sleep(0.01)
        done = max(self.lasts)
        return {
            "tasks_per_s": round(n / (done - started), 1),
            "submit_s": round(submitted - started, 2),
            "published_s": round(submitted - started, 2),  # each send waited for its confirm
            "seconds": round(done - started, 2),
        }

    def stop(self) -> None:
        stop_all(self.procs, 15.0)


# -- Opsdeck stacks: coordinator + agent processes -------------------------------------------------


@dataclass
class Stack:
    """One Opsdeck deployment: its redis-server, coordinator and worker agent."""

    name: str
    redis: EmbeddedRedis
    broker_url: str | None
    var: Path
    processes: int
    threads: int
    queue_type: Literal["quorum", "classic"] = "quorum"
    port: int = field(default_factory=free_port)
    coordinator: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker_id(self) -> str:
        return f"bench-{self.name}"

    def env(self, **extra: Any) -> dict[str, str]:
        env = env_for(self.redis.url, self.var, SECRET, **extra)
        for key in [k for k in env if k == "BROKER_URL" or k.startswith("RABBITMQ_")]:
            del env[key]  # nothing from this machine's environment
        if self.broker_url:
            env.update(BROKER_URL=self.broker_url, RABBITMQ_QUEUE_TYPE=self.queue_type)
        return env

    def _spawn(self, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """``python -m module``, its output (logs) appended to a file of the run (see :func:`tails`)."""
        self.var.mkdir(parents=True, exist_ok=True)
        with (self.var / f"{module}.log").open("ab") as out:
            return spawn(python_module(module), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))

    @property
    def logs(self) -> list[Path]:
        return [self.var / "coordinator.log", self.var / "worker.log"]

    def start(self) -> None:
        self.coordinator = self._spawn("coordinator", self.env(COORDINATOR_PORT=self.port))
        self.start_agent()

    def start_agent(self) -> None:
        env = self.env(
            WORKER_ID=self.worker_id,
            WORKER_PROCESSES=self.processes,
            WORKER_THREADS=self.threads,
            WORKER_POLL_INTERVAL=1,
        )
        self.agent = self._spawn("worker", env)

    async def wait_ready(self) -> None:
        client = redis.Redis.from_url(self.redis.url)
        try:
            await wait_ready(self.base, client, self.worker_id, limit=90.0)
        finally:
            client.close()

    def stop_agent(self) -> None:
        if self.agent is not None:
            stop_all([self.agent], 20.0)
            self.agent = None

    def stop(self) -> None:
        self.stop_agent()
        if self.coordinator is not None:
            stop_all([self.coordinator], 10.0)
            self.coordinator = None

    def settings(self) -> Any:
        from shared.settings import Settings

        return Settings(
            redis_url=self.redis.url,
            broker_url=self.broker_url,
            rabbitmq_queue_type=self.queue_type,
            jwt_secret=SECRET,  # type: ignore[arg-type]
        )


@contextlib.asynccontextmanager
async def task_store(stack: Stack) -> AsyncIterator[Any]:
    from shared.redis import async_client
    from shared.taskstore import TaskStore

    settings = stack.settings()
    client = async_client(settings)
    store = TaskStore(client, settings)
    try:
        yield store
    finally:
        await store.aclose()
        await client.aclose()


async def opsdeck_round(stack: Stack, n: int, limit: float) -> dict[str, Any]:
    """Submit N echo tasks through the task store, wait until all succeeded: tasks/s."""
    from shared.tasks import ECHO, Priority

    client = redis.Redis.from_url(stack.redis.url)
    keys = stack.settings().keys
    try:
        base = client.zcard(keys.tasks_by_status("succeeded"))
        async with task_store(stack) as store:
            started = time.time()
            ids: list[str] = []
            for first in range(0, n, 500):
                batch = await asyncio.gather(
                    *(store.submit(ECHO, {"n": i}, Priority.P2, subject="bench", correlation_id="c")
                      for i in range(first, min(n, first + 500)))
                )  # fmt: skip
                ids += [s.task_id for s in batch]
            submitted = time.time()
        deadline = time.monotonic() + limit
        relayed: float | None = None if stack.broker_url else submitted
        while client.zcard(keys.tasks_by_status("succeeded")) < base + n:
            if relayed is None and not client.xlen(keys.outbox):
                relayed = time.time()  # every entry published and confirmed (within 10 ms)
            if any(client.zcard(keys.tasks_by_status(s)) for s in ("failed", "dead")):
                raise RuntimeError(f"{stack.name}: tasks failed")
            if time.monotonic() > deadline:
                done = client.zcard(keys.tasks_by_status("succeeded")) - base
                raise TimeoutError(f"{stack.name}: {done}/{n} succeeded")
            await asyncio.sleep(0.01)
        rows = records(client, keys, ids, "finished_at")
        done_at = max(int(f) for (f,) in rows) / 1000
    finally:
        client.close()
    return {
        "tasks_per_s": round(n / (done_at - started), 1),
        "submit_s": round(submitted - started, 2),
        "published_s": round((relayed or done_at) - started, 2),
        "seconds": round(done_at - started, 2),
    }


def records(client: redis.Redis, keys: Any, ids: list[str], *fields: str) -> list[list[Any]]:
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(keys.task(task_id), *fields)
        return list(pipe.execute())


def tails(paths: list[Path], lines: int = 15) -> None:
    """The last lines of each process log (on a failure: the run's files are removed after)."""
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            log(f"--- {path.name} ({path.parent.name}), last {len(text)} lines:\n" + "\n".join(text))


# -- submit latency, relay lag ------------------------------------------------------------------------


def token() -> str:
    return mint(SECRET.encode(), ["tasks:write", "tasks:read"], subject="bench", ttl=3600)


async def paced_posts(stack: Stack, rate: float, seconds: float) -> tuple[list[float], list[str], int]:
    """``POST /api/v1/tasks`` (echo) at ``rate`` per second, open loop: 202 times (ms), ids, errors."""
    url = f"{stack.base}/api/v1/tasks"
    headers = {"Authorization": f"Bearer {token()}"}
    latencies: list[float] = []
    ids: list[str] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def post(i: int, at: float | None) -> None:
            nonlocal errors
            if at is not None:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
            sent = time.perf_counter()
            async with http.post(url, json={"type": "echo", "payload": {"n": i}}, headers=headers) as r:
                body = await r.json()
            if r.status == 202:
                if at is not None:
                    latencies.append((time.perf_counter() - sent) * 1000)
                    ids.append(body["id"])
            else:
                errors += 1

        await asyncio.gather(*(post(-i, None) for i in range(1, 9)))  # connections open, not measured
        start = time.monotonic() + 0.05
        await asyncio.gather(*(post(i, start + i / rate) for i in range(int(rate * seconds))))
    return latencies, ids, errors


async def wait_statuses(stack: Stack, ids: list[str], status: str, limit: float = 60.0) -> None:
    client = redis.Redis.from_url(stack.redis.url)
    keys = stack.settings().keys
    deadline = time.monotonic() + limit
    try:
        while True:
            rows = records(client, keys, ids, "status")
            left = sum(1 for (s,) in rows if s != status.encode())
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{stack.name}: {left}/{len(ids)} tasks not {status}")
            await asyncio.sleep(0.05)
    finally:
        client.close()


async def submit_latency(stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
    """202 times at ``rate``, then submit → started and submit → succeeded of the same tasks."""
    latencies, ids, errors = await paced_posts(stack, rate, seconds)
    await wait_statuses(stack, ids, "succeeded")
    client = redis.Redis.from_url(stack.redis.url)
    try:
        rows = records(client, stack.settings().keys, ids, "created_us", "started_at", "finished_at")
    finally:
        client.close()
    to_start = [int(s) - int(c) / 1000 for c, s, _ in rows]
    to_end = [int(f) - int(c) / 1000 for c, _, f in rows]
    return {
        "rate_per_s": rate,
        "errors": errors,
        "accepted_202": summary(latencies),
        "submit_to_started": summary(to_start),
        "submit_to_succeeded": summary(to_end),
    }


async def relay_lag(stack: Stack, rate: float, seconds: float) -> dict[str, Any]:
    """With no worker on the queue: submit (``created_us``) → the message delivered to our own
    consumer of ``default.p2``, published by the coordinator's relay."""
    import aio_pika

    from shared.transport.rabbitmq import declared_queues

    arrived: dict[str, float] = {}
    expected: set[str] = set()
    complete = asyncio.Event()
    assert stack.broker_url is not None
    connection = await aio_pika.connect(stack.broker_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=5000)
        for name, arguments in declared_queues(ECHO_QUEUE, stack.queue_type):  # as the relay does
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        queue = await channel.declare_queue(ECHO_QUEUE, passive=True)
        await queue.purge()

        async def on_message(message: Any) -> None:
            arrived[json.loads(message.body)["message_id"]] = time.time()
            if expected and expected.issubset(arrived):
                complete.set()

        await queue.consume(on_message, no_ack=True)
        latencies, ids, errors = await paced_posts(stack, rate, seconds)
        expected.update(ids)
        if expected.issubset(arrived):
            complete.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), 30)
    finally:
        await connection.close()
    client = redis.Redis.from_url(stack.redis.url)
    try:
        rows = records(client, stack.settings().keys, ids, "created_us")
    finally:
        client.close()
    lag = [(arrived[i] * 1e6 - int(c)) / 1000 for i, (c,) in zip(ids, rows, strict=True) if i in arrived]
    return {
        "rate_per_s": rate,
        "errors": errors,
        "missing": len(ids) - len(lag),
        "accepted_202": summary(latencies),
        "submit_to_published": summary(lag),
    }


# -- the runs -------------------------------------------------------------------------------------


@contextlib.contextmanager
def rabbit_node(tmp: Path, **kwargs: Any) -> Iterator[Any]:
    """The private node (or cluster), killed at the end (its data is thrown away)."""
    import pytest

    from tests.rabbitmq import RabbitCluster, RabbitNode, require_rabbitmq

    try:
        require_rabbitmq()  # as the tests do: installs Debian's package when root with apt-get
    except pytest.skip.Exception as exc:
        sys.exit(str(exc))
    size = kwargs.pop("cluster", 0)
    node: Any = RabbitCluster(tmp / "rabbit", size=size) if size else RabbitNode(tmp / "rabbit")
    try:
        yield node
    finally:
        if size:
            node.stop(graceful=False)
        else:
            node.close(graceful=False)


def redis_server(tmp: Path, name: str) -> EmbeddedRedis:
    server = EmbeddedRedis(tmp / f"redis-{name}", aof=False)
    server.start()
    assert server.port != 6379
    return server


def ordered(number: int, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The round's order of the kinds: rotated by one each round, so over as many rounds as kinds
    each kind runs once in each place (none favoured by the machine warming up or tiring)."""
    shift = (number - 1) % len(kinds)
    return kinds[shift:] + kinds[:shift]


#: One kind of throughput round: N tasks in, its figures out.
Runner = Callable[[int], Awaitable[dict[str, Any]]]


async def rounds_of(
    args: argparse.Namespace, runners: dict[str, Runner]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """A warm-up round of each kind, then ``args.rounds`` rounds of every kind: each kind's best
    tasks/s, and the rounds."""
    for run in runners.values():
        await run(args.warmup_tasks)
    log(f"warm-up done ({args.warmup_tasks} tasks each)")
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        for kind in ordered(number, tuple(runners)):
            result = await runners[kind](args.tasks)
            log(f"round {number} {kind}: {result}")
            rounds.append({"round": number, "kind": kind, **result})
    best = {k: float(max(r["tasks_per_s"] for r in rounds if r["kind"] == k)) for k in runners}
    return best, rounds


def round_timeout(args: argparse.Namespace) -> float:
    return max(60.0, float(args.tasks) / 50)


def plain_runner(plain: PlainWorkers, args: argparse.Namespace) -> Runner:
    async def run(n: int) -> dict[str, Any]:
        return await asyncio.to_thread(plain.round, n, args.senders, round_timeout(args))

    return run


def opsdeck_runner(stack: Stack, args: argparse.Namespace) -> Runner:
    async def run(n: int) -> dict[str, Any]:
        return await opsdeck_round(stack, n, round_timeout(args))

    return run


async def main_run(args: argparse.Namespace) -> dict[str, Any]:
    """The default mode (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="opsdeck-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with rabbit_node(tmp) as node, contextlib.ExitStack() as cleanup:
            node.launch()  # boots while the Redis stack starts
            stacks: dict[str, Stack] = {}
            for name in ("rabbitmq", "redis"):
                server = redis_server(tmp, name)
                cleanup.callback(server.stop)
                stack = Stack(
                    name, server, None, tmp / f"var-{name}", args.processes, args.threads, args.queue_type
                )
                cleanup.callback(stack.stop)
                stacks[name] = stack
            stacks["redis"].start()
            node.wait_ready()
            assert node.amqp_port != 5672
            stacks["rabbitmq"].broker_url = node.amqp_url_for(node.add_vhost("opsdeck"))
            stacks["rabbitmq"].start()
            plain = PlainWorkers(
                node.amqp_url_for(node.add_vhost("plain")),
                args.processes,
                args.threads,
                args.queue_type,
                tmp / "plain.log",
            )
            cleanup.callback(plain.stop)
            try:
                await asyncio.gather(*(s.wait_ready() for s in stacks.values()))
                await asyncio.to_thread(plain.wait_ready)
                log("RabbitMQ node, both Opsdeck stacks and the plain workers are up")
                return await measure(args, stacks, plain)
            except BaseException:
                tails([*stacks["rabbitmq"].logs, *stacks["redis"].logs, plain.log])
                raise
    raise AssertionError("unreachable")


async def measure(args: argparse.Namespace, stacks: dict[str, Stack], plain: PlainWorkers) -> dict[str, Any]:
    """Throughput rounds, submit latency, chat, relay lag (see the module docstring)."""
    best, rounds = await rounds_of(args, {
        "plain_dramatiq_rabbitmq": plain_runner(plain, args),
        "opsdeck_rabbitmq": opsdeck_runner(stacks["rabbitmq"], args),
        "opsdeck_redis": opsdeck_runner(stacks["redis"], args),
    })  # fmt: skip
    ratio = round(best["opsdeck_rabbitmq"] / best["plain_dramatiq_rabbitmq"], 3)
    figures = {
        "baseline_plain_dramatiq_rabbitmq_tasks_per_s": best["plain_dramatiq_rabbitmq"],
        "baseline_opsdeck_redis_tasks_per_s": best["opsdeck_redis"],
        "opsdeck_rabbitmq_tasks_per_s": best["opsdeck_rabbitmq"],
        "ratio_vs_plain_dramatiq": ratio,
        "ratio_vs_opsdeck_redis": round(best["opsdeck_rabbitmq"] / best["opsdeck_redis"], 3),
        "meets_target": ratio >= TARGET_RATIO,
    }
    log(f"throughput: {figures}")
    submit: dict[str, Any] = {}
    for name in ("rabbitmq", "redis"):
        submit[name] = await submit_latency(stacks[name], args.rate, args.submit_seconds)
        log(f"submit {name}: {submit[name]}")
    chat: dict[str, Any] = {}
    for name in ("rabbitmq", "redis"):
        log(f"chat {name}: {args.clients} clients")
        chat[name] = await phase(stacks[name].base, token(), args.clients, args.warmup, args.seconds)
        log(f"  {chat[name]}")
    stacks["rabbitmq"].stop_agent()  # the relay lag: our consumer, not a worker, takes the messages
    relay: dict[str, Any] = {}
    for rate in (args.rate / 4, args.rate):
        seconds = args.submit_seconds / (2 if rate < args.rate else 1)
        relay[f"at_{rate:g}_per_s"] = lag = await relay_lag(stacks["rabbitmq"], rate, seconds)
        log(f"relay at {rate:g}/s: {lag}")
    return {
        "throughput": figures,
        "chat": {**chat, "p99_ratio_rabbitmq_vs_redis": _ratio(chat, "p99_ms")},
        "submit": submit,
        "relay_lag": {**relay, "redis": "0 (the submit script writes the message itself)"},
        "rounds": rounds,
    }


def _ratio(pair: dict[str, Any], figure: str) -> float | None:
    a, b = pair["rabbitmq"].get(figure), pair["redis"].get(figure)
    return round(a / b, 3) if a and b else None


# -- --cluster: three nodes, and the queue leader killed ---------------------------------------------


async def leader_kill(stack: Stack, cluster: Any, vhost: str, args: argparse.Namespace) -> dict[str, Any]:
    """Paced POSTs to the cluster stack; ``args.kill_after`` s in, the node leading the tasks'
    queue is SIGKILLed. The pause: the longest time no task started, around the kill, beside the
    longest before it; every task must still succeed."""
    leader = await asyncio.to_thread(cluster.leader, ECHO_QUEUE, vhost)
    log(f"leader of {ECHO_QUEUE}: {leader.nodename}; killing it {args.kill_after:g} s into the submits")
    moments: dict[str, float] = {}

    async def kill() -> None:
        await asyncio.sleep(args.kill_after)
        moments["kill"] = time.time()
        await asyncio.to_thread(cluster.kill, leader)
        new = await asyncio.to_thread(cluster.wait_leader, ECHO_QUEUE, vhost, not_on=leader, timeout=60)
        moments["elected"] = time.time()
        log(f"new leader {new.nodename} listed {moments['elected'] - moments['kill']:.1f} s after the kill")

    (latencies, ids, errors), _ = await asyncio.gather(
        paced_posts(stack, args.rate, args.kill_seconds), kill()
    )
    await wait_statuses(stack, ids, "succeeded", limit=120.0)
    client = redis.Redis.from_url(stack.redis.url)
    try:
        rows = records(client, stack.settings().keys, ids, "created_us", "started_at", "attempts")
    finally:
        client.close()
    killed_ms = moments["kill"] * 1000
    starts = sorted(int(s) for _, s, _ in rows)
    gaps = [(b - a, b) for a, b in itertools.pairwise(starts)]
    before = [g for g, end in gaps if end < killed_ms]
    after = [(g, end) for g, end in gaps if end >= killed_ms]
    pause, resumed = max(after) if after else (0, killed_ms)
    late = [int(s) - int(c) / 1000 for c, s, _ in rows if int(c) / 1000 >= killed_ms - 1000]
    return {
        "rate_per_s": args.rate,
        "tasks": len(ids),
        "post_errors": errors,
        "killed": leader.nodename,
        "all_succeeded": True,
        "tasks_started_more_than_once": sum(1 for *_, a in rows if int(a) > 1),
        "pause_ms": pause,
        "baseline_longest_gap_before_kill_ms": max(before) if before else None,
        "pause_ended_after_kill_s": round((resumed - killed_ms) / 1000, 2),
        "new_leader_listed_after_s": round(moments["elected"] - moments["kill"], 1),
        "accepted_202_during_run": summary(latencies),
        "submit_to_started_from_1s_before_kill": summary(late),
    }


async def cluster_run(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--cluster`` mode (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="opsdeck-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with (
            rabbit_node(tmp / "cluster", cluster=3) as cluster,
            rabbit_node(tmp / "single") as single,
            contextlib.ExitStack() as cleanup,
        ):
            single.launch()
            await asyncio.to_thread(cluster.start)
            single.wait_ready()
            log("3-node cluster formed, single node up")
            vhost = cluster.seed.add_vhost("opsdeck")
            urls = {
                "cluster": ",".join(node.amqp_url_for(vhost) for node in cluster.nodes),
                "single": single.amqp_url_for(single.add_vhost("opsdeck")),
            }
            stacks: dict[str, Stack] = {}
            for name, url in urls.items():
                server = redis_server(tmp, name)
                cleanup.callback(server.stop)
                stacks[name] = Stack(
                    name, server, url, tmp / f"var-{name}", args.processes, args.threads, args.queue_type
                )
                cleanup.callback(stacks[name].stop)
                stacks[name].start()
            plain_vhost = cluster.seed.add_vhost("plain")
            plain = PlainWorkers(
                ",".join(node.amqp_url_for(plain_vhost) for node in cluster.nodes),
                args.processes,
                args.threads,
                args.queue_type,
                tmp / "plain.log",
            )
            cleanup.callback(plain.stop)
            try:
                await asyncio.gather(*(s.wait_ready() for s in stacks.values()))
                await asyncio.to_thread(plain.wait_ready)
                log("both Opsdeck stacks and the plain workers are up")
                return await measure_cluster(args, stacks, plain, cluster, vhost)
            except BaseException:
                tails([*stacks["cluster"].logs, *stacks["single"].logs, plain.log])
                raise
    raise AssertionError("unreachable")


async def measure_cluster(
    args: argparse.Namespace, stacks: dict[str, Stack], plain: PlainWorkers, cluster: Any, vhost: str
) -> dict[str, Any]:
    """Throughput rounds on the cluster and the single node, then the leader kill."""
    best, rounds = await rounds_of(args, {
        "plain_dramatiq_cluster": plain_runner(plain, args),
        "opsdeck_cluster": opsdeck_runner(stacks["cluster"], args),
        "opsdeck_single_node": opsdeck_runner(stacks["single"], args),
    })  # fmt: skip
    figures = {
        "baseline_opsdeck_single_node_tasks_per_s": best["opsdeck_single_node"],
        "baseline_plain_dramatiq_cluster_tasks_per_s": best["plain_dramatiq_cluster"],
        "opsdeck_cluster_tasks_per_s": best["opsdeck_cluster"],
        "ratio_vs_single_node": round(best["opsdeck_cluster"] / best["opsdeck_single_node"], 3),
        "ratio_vs_plain_dramatiq": round(best["opsdeck_cluster"] / best["plain_dramatiq_cluster"], 3),
    }
    log(f"throughput: {figures}")
    plain.stop()
    stacks["single"].stop()
    kill = await leader_kill(stacks["cluster"], cluster, vhost, args)
    log(f"leader kill: {kill}")
    return {"throughput": figures, "leader_kill": kill, "rounds": rounds}


def main() -> None:
    """Serve (child) or run the benchmark and print its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, help="tasks per round (6000, --cluster 3000; quick 1500/1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind (quick: 1)")
    parser.add_argument("--warmup-tasks", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2, help="worker processes of each stack")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--senders", type=int, default=8, help="threads sending plain messages")
    parser.add_argument("--queue-type", choices=("quorum", "classic"), default="quorum")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=2.0, help="chat warm-up (s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="chat window (s)")
    parser.add_argument("--rate", type=float, default=200.0, help="paced submits per second")
    parser.add_argument("--submit-seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="N=1500, 1 round, 1 + 3 s chat, 2 s submits")
    parser.add_argument("--cluster", action="store_true", help="3-node cluster and leader kill instead")
    parser.add_argument("--kill-seconds", type=float, default=12.0, help="--cluster: paced submits (s)")
    parser.add_argument("--kill-after", type=float, default=3.0, help="--cluster: the kill, s into them")
    parser.add_argument("--serve-plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--amqp-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        serve_plain(args.amqp_url, args.threads, args.queue_type)
        return
    if args.tasks is None:
        args.tasks = (1000 if args.cluster else 1500) if args.quick else (3000 if args.cluster else 6000)
    if args.quick:
        args.rounds, args.warmup_tasks = 1, 200
        args.warmup, args.seconds, args.submit_seconds, args.kill_seconds = 1.0, 3.0, 2.0, 8.0
    started, load_before = time.monotonic(), os.getloadavg()[0]
    body = asyncio.run(cluster_run(args) if args.cluster else main_run(args))
    common = {
        "tasks_per_round": args.tasks,
        "rounds_run": args.rounds,
        "worker_processes": args.processes,
        "worker_threads": args.threads,
        "plain_senders": args.senders,
        "queue_type": args.queue_type,
    }
    if args.cluster:
        doc = {
            "benchmark": "rabbitmq_cluster",
            "what": "3-node RabbitMQ cluster (quorum queues on 3): Opsdeck's tasks/s vs a single node "
            "and vs plain Dramatiq on the cluster; the tasks' queue leader SIGKILLed under paced submits",
            **common,
        }
    else:
        doc = {
            "benchmark": "rabbitmq",
            "what": "BROKER_URL=amqp:// (outbox + relay, quorum queues) vs plain Dramatiq on the same "
            "RabbitMQ and vs Opsdeck on Redis; one run",
            "targets": {"opsdeck_rabbitmq_vs_plain_dramatiq_min": TARGET_RATIO},
            **common,
            "chat_clients": args.clients,
            "chat_window_s": args.seconds,
        }
    doc.update(body)
    doc["run_s"] = round(time.monotonic() - started, 1)
    # the machine's other work shares the CPUs: its 1-minute load average before and after the run
    doc["host_load_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    doc["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
