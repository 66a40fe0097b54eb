"""Benchmark: ``POST /api/v1/tasks`` of the coordinator against a bare aiohttp JSON handler.

What it measures, in one run and with the same load generator:

* ``baseline_bare_aiohttp``: an aiohttp server whose only handler parses the JSON body and
  answers 202 with a small JSON body (the ceiling of the framework on this machine);
* ``coordinator_post_tasks``: the real coordinator app (``coordinator.app.create_app``) doing
  bearer-token auth, validation and the atomic enqueue into a private ``redis-server``.

Each server runs in its own process (``--serve`` mode of this script) on a free 127.0.0.1
port. The load generator is ``wrk`` (one thread, CONNECTIONS keep-alive connections) when it is
on PATH (``make bench`` installs Debian's package), else an aiohttp generator in this process
(or ``--clients N`` spawned processes). A Python generator saturates before a bare aiohttp
server does on two cores, which flatters any ratio, so wrk is preferred. Each server is
warmed up once, before the first round.
* ``enqueue_floor``: the bare handler plus the coordinator's batched enqueue (``TaskStore.submit``,
  answered once Redis holds the task) and nothing else — the floor of any Redis-confirmed
  enqueue on this stack; the coordinator's own work (auth, validation, errors, correlation id,
  metrics) is the distance from it to ``coordinator_post_tasks``.

Rounds are short and the phases alternate inside each, in the order bare, enqueue, coordinator
and then reversed in the next round (so a drift of the machine's speed favours none of them).
A phase reports its median req/s, p50 and p99 over the rounds (and its best round's req/s);
``ratio`` is the median over rounds of the coordinator's req/s divided by the bare handler's
in the same round, because this shared VM's speed drifts by tens of percent within minutes and
a round's two phases are seconds apart (``ratio_best_of_rounds`` is best against best, the
figure earlier versions reported). Every round is in the report too. After each enqueuing
phase the length of the Dramatiq queue list is checked against the number of 2xx answers
(``enqueued_verified``).

One JSON document goes to stdout, progress to stderr. Run from the project root::

    .venv/bin/python scripts/bench/coordinator.py            # 12 rounds of 3 s per phase, 2 s warm-up
    .venv/bin/python scripts/bench/coordinator.py --quick    # smoke run: 2 rounds of 2 s, 0.5 s warm-up
    .venv/bin/python scripts/bench/coordinator.py --profile /tmp/coord.prof  # cProfile the coordinator

``--profile`` runs the coordinator server under cProfile (which slows it down: its numbers are
then not comparable) and prints its top functions to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402
from aiohttp import web  # noqa: E402

from shared.devtools.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from shared.procutil import spawn, terminate  # noqa: E402

if TYPE_CHECKING:
    from shared.settings import Settings

BODY = orjson.dumps({"type": "echo", "payload": {"n": 1}, "priority": "P2"})
PATH = "/api/v1/tasks"
#: The Dramatiq list the coordinator pushes ``echo`` tasks of priority P2 onto.
QUEUE_KEY = "dramatiq:default.p2"
TARGETS = {"ratio_min": 0.70, "p99_ms_max": 20}
#: Environment variable carrying the JWT secret to the coordinator server process.
SECRET_ENV = "OPSDECK_BENCH_JWT_SECRET"  # noqa: S105 - a variable name, not a secret
PHASES = ("bare", "enqueue", "coordinator")
#: The optional phase of ``--rate-limit SPEC``: the coordinator with RATE_LIMIT_SUBMIT=SPEC.
LIMITED = "coordinator_limited"
#: Phases that enqueue into Redis (their queue length is checked against their 2xx answers).
ENQUEUING = ("enqueue", "coordinator", LIMITED)


def log(message: str) -> None:
    """A progress line on stderr (stdout is reserved for the JSON result)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- servers (each runs in its own process: ``--serve bare|coordinator``) --------------------------


def bare_app() -> web.Application:
    """An aiohttp app whose one handler parses a JSON body and answers 202 with a small JSON body."""

    async def accept(request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())
        return web.Response(
            body=orjson.dumps({"status": "queued", "type": data.get("type")}),
            status=202,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post(PATH, accept)
    return app


def enqueue_app(redis_url: str, var_dir: Path) -> web.Application:
    """The bare handler plus the coordinator's batched, Redis-confirmed enqueue (``TaskStore.submit``)
    and nothing else: no auth, no validation, no middleware, no metrics. What any endpoint that
    answers only after Redis has the task costs on this stack; the coordinator's own work is
    the difference between this phase and ``coordinator``."""
    from pydantic import SecretStr

    from shared.redis import async_client
    from shared.settings import Settings
    from shared.task_types import get_task_type
    from shared.tasks import Priority
    from shared.taskstore import TaskStore

    settings = Settings(
        redis_url=redis_url, jwt_secret=SecretStr(os.environ[SECRET_ENV]), opsdeck_var_dir=var_dir
    )
    echo = get_task_type("echo")
    assert echo is not None
    store_key = web.AppKey("store", TaskStore)

    async def redis_ctx(app: web.Application) -> Any:
        client = async_client(settings)
        app[store_key] = TaskStore(client, settings)
        yield
        await app[store_key].aclose()
        await client.aclose()

    async def accept(request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())
        submitted = await request.app[store_key].submit(
            echo, data["payload"], Priority.P2, subject="bench", correlation_id="bench"
        )
        return web.Response(
            body=orjson.dumps({"id": submitted.task_id, "status": "queued"}),
            status=202,
            content_type="application/json",
        )

    app = web.Application()
    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post(PATH, accept)
    return app


def coordinator_settings(redis_url: str, var_dir: Path) -> Settings:
    """The coordinator's settings for a bench server (the rest from the environment, as always)."""
    from pydantic import SecretStr

    from shared.settings import Settings

    return Settings(
        redis_url=redis_url, jwt_secret=SecretStr(os.environ[SECRET_ENV]), opsdeck_var_dir=var_dir
    )


def coordinator_app(redis_url: str, var_dir: Path) -> web.Application:
    """The real coordinator app, as ``python -m coordinator`` builds it."""
    from coordinator.app import create_app

    return create_app(coordinator_settings(redis_url, var_dir))


def serve(kind: str, port: int, redis_url: str, var_dir: Path, profile: Path | None) -> None:
    """Serve ``kind`` on 127.0.0.1:``port`` until SIGTERM (optionally under cProfile)."""
    app = (
        bare_app()
        if kind == "bare"
        else enqueue_app(redis_url, var_dir)
        if kind == "enqueue"
        else coordinator_app(redis_url, var_dir)  # coordinator, or LIMITED (RATE_LIMIT_SUBMIT set)
    )
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, shutdown_timeout=2)
    finally:
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))


@dataclass
class Server:
    """A server child process and the URL it answers on."""

    kind: str
    proc: subprocess.Popen[bytes]
    url: str


def start_server(
    kind: str,
    redis_url: str,
    var_dir: Path,
    secret: str,
    profile: Path | None,
    rate_limit: str | None = None,
    *,
    script: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start ``--serve kind`` in a child process and wait until its port accepts connections
    (``script``: another benchmark with the same ``--serve`` options, default this one;
    ``extra_env``: variables added to the child's environment)."""
    port = free_port()
    argv = [sys.executable, str(script or Path(__file__).resolve()), "--serve", kind, "--port", str(port),
            "--redis-url", redis_url, "--var-dir", str(var_dir)]  # fmt: skip
    if profile is not None:
        argv += ["--profile", str(profile)]
    env = {**os.environ, SECRET_ENV: secret, **(extra_env or {})}
    if kind == LIMITED and rate_limit:
        env["RATE_LIMIT_SUBMIT"] = rate_limit
    proc = spawn(argv, env=env, stdout=subprocess.DEVNULL, cwd=str(ROOT))
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                terminate(proc, 5)
                raise TimeoutError(f"{kind} server did not listen on {port} within 30 s") from None
            time.sleep(0.05)
    log(f"{kind} server pid {proc.pid} on 127.0.0.1:{port}")
    return Server(kind, proc, f"http://127.0.0.1:{port}{PATH}")


# -- load generator ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one generator saw: latencies (s) of 2xx answers completed inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0  # non-2xx answers or failed requests completed inside the window
    total_2xx: int = 0  # every 2xx answer, warm-up included
    total_202: int = 0
    total_errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        """Add ``other``'s counts and latencies to this one."""
        self.latencies += other.latencies
        self.errors += other.errors
        self.total_2xx += other.total_2xx
        self.total_202 += other.total_202
        self.total_errors += other.total_errors
        self.error_samples = (self.error_samples + other.error_samples)[:5]


async def _post_loop(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    measure_from: float,
    measure_until: float,
    result: LoadResult,
) -> None:
    perf = time.perf_counter
    while True:
        started = perf()
        if started >= measure_until:
            return
        error = ""
        try:
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
        done = perf()
        ok = 200 <= status < 300
        if ok:
            result.total_2xx += 1
            if status == 202:
                result.total_202 += 1
        else:
            result.total_errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(error or f"HTTP {status}")
        if measure_from <= done < measure_until:
            if ok:
                result.latencies.append(done - started)
            else:
                result.errors += 1


async def generate_load(
    url: str, token: str | None, connections: int, start_at: float, warmup: float, duration: float
) -> LoadResult:
    """``connections`` coroutines POSTing over a keep-alive pool; warm-up from ``start_at`` (wall
    clock, so several generator processes line up), then a ``duration`` s measured window."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        now = time.perf_counter()
        measure_from = now + warmup
        measure_until = measure_from + duration
        await asyncio.gather(
            *(
                _post_loop(session, url, headers, measure_from, measure_until, result)
                for _ in range(connections)
            )
        )
    return result


def generate_load_process(
    url: str, token: str | None, connections: int, start_at: float, warmup: float, duration: float
) -> LoadResult:
    """``generate_load`` in a fresh event loop (the entry point of a ``--clients`` process)."""
    return asyncio.run(generate_load(url, token, connections, start_at, warmup, duration))


async def cpu_percent(
    watch: dict[str, Callable[[], list[int]]], start_at: float, warmup: float, duration: float
) -> dict[str, float]:
    """CPU use (% of one core) over the measured window of each named group of processes."""

    def cpu_seconds(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += float(times.user + times.system)
        return total

    await asyncio.sleep(max(0.0, start_at + warmup - time.time()))
    groups = {name: pids() for name, pids in watch.items()}
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    began = time.monotonic()
    await asyncio.sleep(duration)
    elapsed = time.monotonic() - began  # a busy event loop wakes this up late
    return {
        f"{name}_cpu_pct": round(100 * (cpu_seconds(pids) - before[name]) / elapsed, 1)
        for name, pids in groups.items()
    }


async def run_phase(
    server: Server,
    token: str | None,
    args: argparse.Namespace,
    pool: ProcessPoolExecutor | None,
    watch: dict[str, Callable[[], list[int]]],
    warmup: float,
) -> tuple[LoadResult, dict[str, float]]:
    """Drive one phase against ``server``; returns the merged result and the CPU use of ``watch``."""
    clients = args.clients
    start_at = time.time() + (0.1 if pool is None else 1.0)
    warmup = max(warmup, 0.2)  # the generator's connections open inside its own warm-up
    sampling = asyncio.ensure_future(cpu_percent(watch, start_at, warmup, args.duration))
    if pool is None:
        result = await generate_load(server.url, token, args.connections, start_at, warmup, args.duration)
        return result, await sampling
    loop = asyncio.get_running_loop()
    shares = [
        args.connections // clients + (1 if i < args.connections % clients else 0) for i in range(clients)
    ]
    futures = [
        loop.run_in_executor(
            pool, generate_load_process, server.url, token, n, start_at, warmup, args.duration
        )
        for n in shares
    ]
    parts = await asyncio.gather(*futures)
    merged = LoadResult()
    for part in parts:
        merged.merge(part)
    return merged, await sampling


_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _wrk_seconds(text: str) -> float:
    number = text.rstrip("usm")
    return float(number) * _WRK_UNITS[text[len(number) :]]


def wrk_script(path: Path, token: str | None) -> Path:
    """A wrk Lua script that POSTs BODY with the JSON content type (and the bearer token)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY.decode())}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run (one thread: the other core serves); parsed requests, rps, p50/p99, non-2xx."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out}")
    found: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        words = line.split()
        if line.strip().startswith(("50%", "99%")) and len(words) == 2:
            found["p" + words[0].rstrip("%")] = _wrk_seconds(words[1])
        elif "requests in" in line:
            found["requests"] = int(words[0])
        elif line.startswith("Requests/sec:"):
            found["rps"] = float(words[1])
        elif line.startswith("Non-2xx"):
            found["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors"):
            found["socket_errors"] = sum(int(w.strip(",")) for w in words[3::2])
    return found


async def run_wrk_phase(
    server: Server,
    token: str | None,
    args: argparse.Namespace,
    watch: dict[str, Callable[[], list[int]]],
    warmup: float,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Warm-up run (when ``warmup``), then the measured run with CPU sampling; the summary and CPU use."""
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(Path(tmp) / "post.lua", token)
        total = 0
        if warmup > 0:
            warm = await run_wrk(server.url, script, args.connections, warmup)
            total += warm["requests"] - warm["non_2xx"]
        sampling = asyncio.ensure_future(cpu_percent(watch, time.time(), 0.3, max(0.5, args.duration - 0.6)))
        found = await run_wrk(server.url, script, args.connections, args.duration)
        cpu = await sampling
    total += found["requests"] - found["non_2xx"]
    summary = {
        "rps": round(found["rps"], 1),
        "p50_ms": round(found.get("p50", float("nan")) * 1000, 2),
        "p99_ms": round(found.get("p99", float("nan")) * 1000, 2),
        "errors": found["non_2xx"] + found["socket_errors"],
        "requests": found["requests"],
        "total_2xx": total,
    }
    return summary, cpu


def summarize(result: LoadResult, duration: float) -> dict[str, Any]:
    """req/s, p50 and p99 (ms) and error count of a phase."""
    lat = np.asarray(result.latencies) * 1000
    p50, p99 = (float(v) for v in np.percentile(lat, [50, 99])) if lat.size else (float("nan"),) * 2
    return {
        "rps": round(lat.size / duration, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "errors": result.errors,
        "requests": int(lat.size),
    }


# -- orchestration ----------------------------------------------------------------------------------


def fixed(pids: list[int]) -> Callable[[], list[int]]:
    """A constant group of processes for ``cpu_percent``."""
    return lambda: pids


def generator_pids(pool: ProcessPoolExecutor | None, servers: dict[str, Server], redis_pid: int) -> list[int]:
    """This process, or with ``--clients`` its generator children (every child but the servers)."""
    if pool is None:
        return [os.getpid()]
    known = {redis_pid, *(s.proc.pid for s in servers.values())}
    return [c.pid for c in psutil.Process().children() if c.pid not in known]


async def measure_round(
    number: int,
    kind: str,
    server: Server,
    token: str | None,
    args: argparse.Namespace,
    pool: ProcessPoolExecutor | None,
    watch: dict[str, Callable[[], list[int]]],
    warmup: float,
    client: redis.Redis,
    *,
    enqueuing: bool,
) -> dict[str, Any]:
    """One phase of round ``number`` against ``server`` (Redis flushed before and after): its
    req/s, p50/p99, CPU use of ``watch``, server CPU µs per request and, when ``enqueuing``, the
    check of the Dramatiq queue's length against the 2xx answers. ``args``: ``generator``,
    ``connections``, ``clients``, ``duration``."""
    client.flushall()
    log(f"round {number}/{args.rounds}: {kind} ({warmup}s warm-up + {args.duration}s)")
    entry: dict[str, Any] = {"round": number, "phase": kind}
    if args.generator == "wrk":
        watch["generator"] = lambda: [c.pid for c in psutil.Process().children() if c.name() == "wrk"]
        summary, cpu = await run_wrk_phase(server, token, args, watch, warmup)
        entry.update(summary)
        accepted = int(summary.pop("total_2xx"))
        entry.pop("total_2xx", None)
    else:
        result, cpu = await run_phase(server, token, args, pool, watch, warmup)
        entry.update(summarize(result, args.duration))
        accepted = result.total_202
        if result.error_samples:
            entry["error_samples"] = result.error_samples
    entry.update(cpu)
    if entry["rps"]:  # server CPU time per answered request: robust to a client-bound run
        entry["server_cpu_us_per_req"] = round(cpu["server_cpu_pct"] * 1e4 / entry["rps"])
    if enqueuing:
        queued = int(client.llen(QUEUE_KEY))
        entry["responses_2xx"] = accepted
        entry["queue_length"] = queued
        # wrk stops with up to one request per connection in flight and uncounted,
        # though the server may have enqueued it: allow that much, never fewer.
        slack = 2 * args.connections if args.generator == "wrk" else 0
        entry["enqueued_verified"] = accepted > 0 and accepted <= queued <= accepted + slack
    log(json.dumps(entry))
    client.flushall()
    return entry


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start Redis and both servers, run the alternating rounds and build the report."""
    from shared.auth import mint

    secret = secrets.token_urlsafe(48)
    token = mint(secret.encode(), ["tasks:write"], subject="bench", ttl=3600)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="opsdeck-bench-") as tmp:
        embedded = EmbeddedRedis(Path(tmp) / "redis", aof=False)
        redis_url = embedded.start()
        log(f"redis-server on {redis_url}")
        client = redis.Redis.from_url(redis_url)
        assert embedded.proc is not None
        redis_pid = embedded.proc.pid
        servers: dict[str, Server] = {}
        pool = (
            ProcessPoolExecutor(max_workers=args.clients, mp_context=get_context("spawn"))
            if args.clients > 1
            else None
        )
        try:
            servers["bare"] = start_server("bare", redis_url, Path(tmp) / "var", secret, None)
            servers["enqueue"] = start_server("enqueue", redis_url, Path(tmp) / "var", secret, None)
            servers["coordinator"] = start_server(
                "coordinator", redis_url, Path(tmp) / "var", secret, args.profile
            )
            phases: tuple[str, ...] = PHASES
            if args.rate_limit:
                servers[LIMITED] = start_server(
                    LIMITED, redis_url, Path(tmp) / "var", secret, None, args.rate_limit
                )
                phases = (*PHASES, LIMITED)
            for number in range(1, args.rounds + 1):
                warmup = args.warmup if number == 1 else 0.0  # each server warms up once
                # ABC then CBA: a drift of the machine's speed inside a round favours no phase
                for kind in phases if number % 2 else phases[::-1]:
                    watch: dict[str, Callable[[], list[int]]] = {
                        "server": fixed([servers[kind].proc.pid]),
                        "redis": fixed([redis_pid]),
                        "generator": partial(generator_pids, pool, servers, redis_pid),
                    }
                    token_or_none = token if kind in ("coordinator", LIMITED) else None
                    rounds.append(
                        await measure_round(
                            number, kind, servers[kind], token_or_none, args, pool, watch, warmup, client,
                            enqueuing=kind in ENQUEUING,
                        )
                    )  # fmt: skip
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            for server in servers.values():
                terminate(server.proc, 10)
            client.close()
            embedded.stop()
    return report(args, rounds)


def phase_summary(rounds: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """A phase over all rounds: median req/s, p50 and p99 (and the best round's req/s), errors."""
    mine = [r for r in rounds if r["phase"] == kind]
    return {
        "rps": round(statistics.median(r["rps"] for r in mine), 1),
        "rps_best": max(r["rps"] for r in mine),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in mine), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in mine), 2),
        "errors": sum(r["errors"] for r in mine),
    }


def paired_ratio(rounds: list[dict[str, Any]], kind: str, base: str = "bare") -> float:
    """Median over rounds of ``kind``'s req/s divided by the ``base`` phase's (default the bare
    handler's) in the same round.

    Rounds are short and the phases alternate inside each, so a pair sees the same machine:
    on a shared VM whose speed drifts by tens of percent within minutes, the median of these
    pairs is steadier than any ratio of figures taken minutes apart (best against best, say)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in rounds:
        by_round.setdefault(r["round"], {})[r["phase"]] = r["rps"]
    pairs = [p[kind] / p[base] for p in by_round.values() if p.get(base) and kind in p]
    return round(statistics.median(pairs), 3) if pairs else 0.0


def report(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document: each phase over the rounds, the paired ratios, targets and every round."""
    bare, floor, coord = (phase_summary(rounds, kind) for kind in PHASES)
    limited: dict[str, Any] = {}
    if any(r["phase"] == LIMITED for r in rounds):  # --rate-limit: the same run with the limit on
        limited = {
            "rate_limit_submit": args.rate_limit,
            "coordinator_post_tasks_rate_limited": phase_summary(rounds, LIMITED),
            "ratio_rate_limited": paired_ratio(rounds, LIMITED),
        }
    ratio = paired_ratio(rounds, "coordinator")
    verified = all(r["enqueued_verified"] for r in rounds if r["phase"] in ENQUEUING)
    return {
        "benchmark": "coordinator",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "aiohttp": aiohttp.__version__,
        },
        "generator": args.generator,
        "connections": args.connections,
        "clients": args.clients,
        "rounds_run": args.rounds,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "profiled": args.profile is not None,
        "baseline_bare_aiohttp": bare,
        "coordinator_post_tasks": coord,
        # median over rounds of coordinator req/s / bare req/s in the same round (paired_ratio)
        "ratio": ratio,
        "ratio_best_of_rounds": round(coord["rps_best"] / bare["rps_best"], 3) if bare["rps_best"] else 0.0,
        # the bare handler + the same batched Redis-confirmed enqueue, nothing else (see enqueue_app)
        "enqueue_floor": floor,
        "enqueue_floor_ratio": paired_ratio(rounds, "enqueue"),
        "targets": TARGETS,
        "meets_targets": ratio >= TARGETS["ratio_min"] and coord["p99_ms"] <= TARGETS["p99_ms_max"],
        "enqueued_verified": verified,
        **limited,
        "rounds": rounds,
    }


def print_profile(path: Path, top: int = 30) -> None:
    """The coordinator's hottest functions (by own time, then cumulative) on stderr."""
    import pstats

    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--serve`` and friends are internal: the server child processes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--clients", type=int, default=1, help="python load generator processes")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk (C, one thread; Debian package wrk) or the aiohttp generator; auto = wrk if on PATH",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds per server, before round 1"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=12, help="rounds (each: bare, enqueue, coordinator)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.5 s warm-up, 3 s, 1 round")
    parser.add_argument("--profile", type=Path, help="cProfile the coordinator server into this file")
    parser.add_argument(
        "--rate-limit",
        metavar="SPEC",
        help="add a phase: the coordinator with RATE_LIMIT_SUBMIT=SPEC (e.g. 1000000/s), same rounds",
    )
    parser.add_argument("--serve", choices=(*PHASES, LIMITED), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--var-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.duration, args.rounds = 0.5, 2.0, 2
    if args.connections < 1 or args.clients < 1 or args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--connections, --clients and --rounds must be >= 1, --duration > 0, --warmup >= 0")
    if args.clients > args.connections:
        parser.error("--clients must not exceed --connections")
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "python"
    return args


def main(argv: list[str] | None = None) -> None:
    """Serve (child mode) or run the whole benchmark and print its JSON report."""
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.redis_url, args.var_dir, args.profile)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup in ``finally``
    result = asyncio.run(bench(args))
    if args.profile is not None:
        print_profile(args.profile)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
