"""Benchmark: chat end to end — ``POST /api/v1/chat?wait=10`` until the suggestion comes back.

One run starts a private ``redis-server`` (no AOF, never port 6379), a real coordinator
(``python -m coordinator``) and a real worker agent (``python -m worker``, WORKER_PROCESSES × 8
threads, built-in engine), then CLIENTS concurrent clients each send chat turns back to back
(each in its own session, so turns are numbered 1, 2, 3 …) and time every answer. Every answer
must be a 200 with a suggestion; anything else counts as an error.

Two modes run in the same run, the agent restarted between them: ``polling`` (idle consumers
poll their queue every ``WORKER_IDLE_WAIT_MS`` = 100 ms, the coach P0/P1 ones every
``COACH_IDLE_WAIT_MS`` = 20 ms — Opsdeck before wake-ups, ``WORKER_IDLE_WAKEUP=0``) and
``wakeups`` (the default: idle consumers block on the queue wake-up channel, see
``shared/transport/wakeup.py``). For each mode, first the *idle* CPU of the agent's process tree and of
redis-server over ``--idle-seconds`` with no traffic at all, then the chat latency phase.

One JSON document goes to stdout, progress to stderr. Run from the project root::

    .venv/bin/python scripts/bench/chat.py                 # 20 clients, 2 s warm-up + 10 s per phase
    .venv/bin/python scripts/bench/chat.py --quick         # 1 s + 3 s per phase
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

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402

from shared.auth import mint  # noqa: E402
from shared.devtools.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from shared.devtools.load.traffic import MESSAGES  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.procutil import isolated_env, python_module, spawn, stop_all  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env_for(redis_url: str, var_dir: Path, secret: str, **extra: Any) -> dict[str, str]:
    env = isolated_env()
    env.update(
        REDIS_URL=redis_url,
        JWT_SECRET=secret,
        OPSDECK_VAR_DIR=str(var_dir),
        LOG_LEVEL="WARNING",
        WORKER_METRICS_PORT="0",
        PYTHONPATH=str(ROOT),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


async def wait_ready(base: str, client: redis.Redis, worker_id: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{base}/health/ready") as r:
                    beat = client.get(Keys().worker(worker_id))
                    if r.status == 200 and beat and json.loads(beat)["state"] == "running":
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("coordinator or worker did not become ready")


async def client_loop(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], idx: int, stop: float, out: list[float]
) -> int:
    errors = 0
    n = 0
    while time.monotonic() < stop:
        body = {
            "session_id": f"bench-{idx}-{os.getpid()}",
            "message": MESSAGES[n % len(MESSAGES)],
            "user_id": "b",
        }
        started = time.perf_counter()
        async with http.post(url, json=body, headers=headers) as r:
            answer = await r.json()
        elapsed = time.perf_counter() - started
        n += 1
        if r.status == 200 and answer.get("suggestion"):
            out.append(elapsed)
        else:
            errors += 1
            if errors <= 2:
                log(f"  error: {r.status} {str(answer)[:300]}")
    return errors


async def phase(base: str, token: str, clients: int, warmup: float, seconds: float) -> dict[str, Any]:
    url = f"{base}/api/v1/chat?wait=10"
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        scratch: list[float] = []
        await asyncio.gather(
            *(client_loop(http, url, headers, i, time.monotonic() + warmup, scratch) for i in range(clients))
        )
        latencies: list[float] = []
        started = time.monotonic()
        errors = await asyncio.gather(
            *(client_loop(http, url, headers, i, started + seconds, latencies) for i in range(clients))
        )
        duration = time.monotonic() - started
    ms = np.array(latencies) * 1000
    return {
        "answers": len(latencies),
        "errors": int(sum(errors)),
        "answers_per_s": round(len(latencies) / duration, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p90_ms": round(float(np.percentile(ms, 90)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "max_ms": round(float(ms.max()), 2) if len(ms) else None,
    }


#: Environment of each mode (see the module docstring).
MODES: dict[str, dict[str, Any]] = {
    "polling": {"WORKER_IDLE_WAKEUP": 0, "COACH_IDLE_WAIT_MS": 20},
    "wakeups": {"WORKER_IDLE_WAKEUP": 1},
}


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


async def idle_cpu(agent_pid: int, redis_pid: int, seconds: float) -> dict[str, Any]:
    """CPU share (% of one core) of the agent's process tree and of redis-server, no traffic."""
    agent = psutil.Process(agent_pid)
    tree = [agent, *agent.children(recursive=True)]
    server = [psutil.Process(redis_pid)]
    before_tree, before_server, started = cpu_seconds(tree), cpu_seconds(server), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    workers = len(tree) - 1
    tree_pct = 100 * (cpu_seconds(tree) - before_tree) / elapsed
    return {
        "agent_tree_cpu_pct": round(tree_pct, 2),
        "per_worker_process_cpu_pct": round(tree_pct / max(1, workers), 2),
        "redis_cpu_pct": round(100 * (cpu_seconds(server) - before_server) / elapsed, 2),
        "worker_processes": workers,
        "seconds": round(elapsed, 1),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    secret = "bench-" + "s" * 40
    token = mint(secret.encode(), ["tasks:write", "tasks:read"], subject="bench", ttl=3600)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        embedded = EmbeddedRedis(Path(tmp) / "redis", aof=False)
        embedded.start()
        client = redis.Redis.from_url(embedded.url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        var = Path(tmp) / "var"
        coordinator = spawn(
            python_module("coordinator"),
            env=env_for(embedded.url, var, secret, COORDINATOR_PORT=port),
            stdout=subprocess.DEVNULL,
            cwd=str(ROOT),
        )
        try:
            for mode in args.modes:
                worker_id = f"bench-{mode}"
                env = env_for(
                    embedded.url,
                    var,
                    secret,
                    WORKER_ID=worker_id,
                    WORKER_PROCESSES=args.processes,
                    WORKER_THREADS=8,
                    WORKER_POLL_INTERVAL=1,
                    **MODES[mode],
                )
                agent = spawn(python_module("worker"), env=env, stdout=subprocess.DEVNULL, cwd=str(ROOT))
                try:
                    await wait_ready(base, client, worker_id)
                    await asyncio.sleep(2.0)  # imports and first polls settle
                    assert embedded.proc is not None
                    log(f"mode {mode}: idle CPU over {args.idle_seconds} s")
                    idle = await idle_cpu(agent.pid, embedded.proc.pid, args.idle_seconds)
                    log(f"  {idle}")
                    log(f"mode {mode}: {args.clients} chat clients")
                    chat = await phase(base, token, args.clients, args.warmup, args.seconds)
                    log(f"  {chat}")
                    results[mode] = {"idle": idle, "chat": chat}
                finally:
                    stop_all([agent], 20.0)
        finally:
            stop_all([coordinator], 10.0)
            embedded.stop()
    return results


def _ratio(phases: dict[str, Any], figure: str) -> float | None:
    if "wakeups" not in phases or "polling" not in phases:
        return None
    base = phases["polling"]["idle"][figure]
    return round(phases["wakeups"]["idle"][figure] / base, 3) if base else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2, help="WORKER_PROCESSES of the agent")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window per mode")
    parser.add_argument("--quick", action="store_true", help="1 s warm-up + 3 s per phase, 4 s idle")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.seconds, args.idle_seconds = 1.0, 3.0, 4.0
    phases = asyncio.run(bench(args))
    doc = {
        "benchmark": "chat_end_to_end",
        "what": "POST /api/v1/chat?wait=10 until the suggestion (built-in engine), concurrent clients",
        "clients": args.clients,
        "worker_processes": args.processes,
        "worker_threads": 8,
        "window_s": args.seconds,
        "target_p99_ms": 100,
        "modes": phases,
        "idle_cpu_ratio_wakeups_vs_polling": _ratio(phases, "agent_tree_cpu_pct"),
        "idle_redis_cpu_ratio_wakeups_vs_polling": _ratio(phases, "redis_cpu_pct"),
        "met": bool(phases.get("wakeups") and (phases["wakeups"]["chat"]["p99_ms"] or 1e9) < 100),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
