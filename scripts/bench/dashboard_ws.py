"""Benchmark: the dashboard's live stream with 100 and 1000 concurrent WebSocket viewers.

For each viewer count, two servers run in turn, each in its own process, against the same viewers
(all in this process) for the same window:

* ``bare``: an aiohttp app that sends one pre-serialised frame (the size of a real dashboard
  frame) to every socket ``WORKERS`` times a second, as many frames as the dashboard phase writes
  heartbeats — the floor of a fan-out that delivers every heartbeat on this machine;
* ``dashboard``: the real dashboard (``dashboard.app.create_app``) with its shared poller on a
  private ``redis-server`` while this process writes each of three workers' heartbeats once a
  second (three a second in all, each at a random point of its third of a second). The page needs
  each heartbeat promptly, so the dashboard has to send one frame per heartbeat; until 2026-12-03
  the bare server sent one frame a second, so the comparison charged the dashboard for the two
  frames a second it must send beyond that.

Viewers are spread evenly over every live page (:data:`PAGES`: overview, workers, one worker,
queues, one queue, the task list, one task, the audit log), each socket subscribed to the sections
its page shows, as the browser does (``/ws?s=<section key>``): Redis cost per tick then counts one
read per distinct section, the same for 100 viewers as for 1000.

Reported per phase: the server process's CPU (psutil, percent of one core) and per frame sent
(CPU time / frames the viewers received), Redis commands per poller tick (INFO commandstats delta
/ ticks from ``/api/stream/stats``) and per second, frames received, and update latency p50/p99
(heartbeat written → frame carrying it received, dashboard only). One JSON document goes to
stdout, progress to stderr::

    .venv/bin/python scripts/bench/dashboard_ws.py           # 30 s per phase
    .venv/bin/python scripts/bench/dashboard_ws.py --quick   # 5 s per phase
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from aiohttp import web  # noqa: E402

from shared.auth import mint  # noqa: E402
from shared.devtools.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.procutil import python_module, spawn, terminate  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.tasks import SLEEP, Priority  # noqa: E402
from shared.taskstore import TaskStore  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
WORKERS = 3
#: Every live page and the section keys its socket subscribes to (dashboard/pages.py; "{task}" is
#: a task recorded before the phases). Viewer i shows page i % len(PAGES).
PAGES: dict[str, list[str]] = {
    "overview": [],
    "workers": ["workers", "audit?limit=50"],
    "worker": ["workers", "worker:bench-0"],
    "queues": ["queues"],
    "queue": ["queue:default.p2"],
    "tasks": ["tasks?"],
    "task": ["task:{task}"],
    "audit": ["audit?limit=500"],
}
FRAME_BYTES = 1300
TARGETS = {"cpu_percent_1000_max": 5.0, "latency_p99_ms_max": 250.0}


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def serve_bare(port: int) -> None:
    """``--serve-bare``: broadcast one pre-serialised frame to every socket per heartbeat the
    dashboard phase writes (``WORKERS`` a second)."""
    sockets: set[web.WebSocketResponse] = set()
    frame = orjson.dumps({"type": "update", "data": {"meta": {"pad": "x" * (FRAME_BYTES - 40)}}})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(compress=False)
        await sock.prepare(request)
        sockets.add(sock)
        async for _ in sock:
            pass
        sockets.discard(sock)
        return sock

    async def tick(app: web.Application) -> Any:
        async def loop() -> None:
            next_at = time.monotonic()
            while True:  # on a schedule: the time a round of sends takes does not slow the rate
                next_at += 1.0 / WORKERS
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                for sock in list(sockets):
                    await sock.send_bytes(frame)

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.cleanup_ctx.append(tick)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def heartbeats(client: redis.Redis, keys: Keys, stop: asyncio.Event, written: list[float]) -> None:
    """Write WORKERS heartbeats once a second (staggered), as agents do."""
    i = 0
    slot = time.monotonic()
    while not stop.is_set():
        wid = f"bench-{i % WORKERS}"
        now = time.time()
        beat = {
            "id": wid,
            "host": "bench",
            "pid": 1,
            "state": "running",
            "version": "0",
            "started_at": now - 60,
            "sent_at": now,
            "uptime_seconds": 60,
            "cpu_percent": float(i % 50),
            "rss_bytes": 2**27,
            "memory_percent": 1.0,
            "processes": 2,
            "processes_desired": 2,
            "threads": 8,
            "in_flight": 0,
            "processed": i,
            "failed": 0,
            "queues": ["default.p2"],
            "procs": [],
        }
        with client.pipeline(transaction=False) as pipe:
            pipe.set(keys.worker(wid), orjson.dumps(beat), px=15_000)
            pipe.zadd(keys.workers, {wid: int(now * 1000)})
            pipe.execute()
        written.append(now)
        i += 1
        # WORKERS a second on average, each at a random point of its slot: agents beat on their own
        # clocks, so a beat must fall anywhere relative to the poller's tick (an exact 1/WORKERS s
        # period would lock to the 1 s tick and always hit, or always miss, the same probe window)
        slot += 1.0 / WORKERS
        await asyncio.sleep(max(0.0, slot + random.uniform(0.0, 1.0 / WORKERS) - time.monotonic()))


def page_url(url: str, page: str, task_id: str) -> str:
    """The ``/ws`` URL of a viewer of ``page``."""
    keys = [k.replace("{task}", task_id) for k in PAGES[page]]
    return url + ("?" + urlencode([("s", k) for k in keys]) if keys else "")


async def record_task(redis_url: str) -> str:
    """One task recorded as the coordinator does (the task page's subject); its id."""
    client = aioredis.Redis.from_url(redis_url)
    store = TaskStore(client, Settings(redis_url=redis_url, jwt_secret=SECRET))  # type: ignore[arg-type]
    submitted = await store.submit(SLEEP, {"seconds": 0}, Priority.P2, subject="bench", correlation_id="c")
    await store.aclose()
    await client.aclose()
    return submitted.task_id


async def viewer(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    out: dict[str, Any],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """One viewer: count frames; for frames carrying heartbeats, record sent_at → received latency."""
    async with session.ws_connect(url, headers=headers, compress=0, max_msg_size=0) as ws:
        out["connected"] += 1
        if out["connected"] == out["want"]:
            ready.set()
        seen: dict[str, float] = {}
        async for msg in ws:
            now = time.time()
            out["frames"] += 1
            data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
            if b'"sent_at"' not in data:
                continue
            for w in orjson.loads(data)["data"].get("workers", []):
                sent = w.get("sent_at") or 0.0
                if sent > seen.get(w["id"], 0.0):
                    if w["id"] in seen and out["measuring"]:
                        out["latencies"].append(now - sent)
                    seen[w["id"]] = sent


async def phase(
    kind: str, n: int, seconds: float, port: int, proc: psutil.Process, redis_url: str, task_id: str
) -> dict[str, Any]:
    """Connect ``n`` viewers (spread over :data:`PAGES` on the dashboard), measure for ``seconds``,
    disconnect."""
    url = f"http://127.0.0.1:{port}"
    headers = {"Origin": url}
    if kind == "dashboard":
        headers["Authorization"] = f"Bearer {mint(SECRET.encode(), ['viewer'], subject='bench', ttl=3600)}"
    out: dict[str, Any] = {"connected": 0, "want": n, "frames": 0, "latencies": [], "measuring": False}
    ready, stop = asyncio.Event(), asyncio.Event()
    rclient = redis.Redis.from_url(redis_url)
    written: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        pages = list(PAGES) if kind == "dashboard" else ["overview"]
        urls = [page_url(f"{url}/ws", pages[i % len(pages)], task_id) for i in range(n)]
        tasks = [asyncio.create_task(viewer(session, u, headers, out, ready, stop)) for u in urls]
        beats = (
            asyncio.create_task(heartbeats(rclient, Keys(), stop, written)) if kind == "dashboard" else None
        )
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(2.0)  # warm-up
        stats0 = await _stream_stats(session, url, headers) if kind == "dashboard" else None
        calls0 = _redis_calls(rclient)
        proc.cpu_percent(None)
        frames0, out["measuring"] = out["frames"], True
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        cpu = proc.cpu_percent(None)
        out["measuring"] = False
        calls = _redis_calls(rclient) - calls0
        stats1 = await _stream_stats(session, url, headers) if kind == "dashboard" else None
        stop.set()
        for t in tasks:
            t.cancel()
        if beats:
            beats.cancel()
        await asyncio.gather(*tasks, *([beats] if beats else []), return_exceptions=True)
    rclient.close()
    result: dict[str, Any] = {
        "viewers": n,
        "seconds": round(elapsed, 1),
        "server_cpu_percent": round(cpu, 1),
        "frames_received": out["frames"] - frames0,
        "frames_per_viewer_per_s": round((out["frames"] - frames0) / n / elapsed, 2),
        "server_cpu_us_per_frame": round(cpu / 100 * elapsed / max(1, out["frames"] - frames0) * 1e6, 1),
    }
    if kind == "dashboard" and stats0 and stats1:
        ticks = stats1["ticks"] - stats0["ticks"]
        lat = np.array(out["latencies"]) * 1000
        result.update(
            poller_ticks=ticks,
            probes=stats1["probes"] - stats0["probes"],
            redis_commands_per_tick=round(calls / max(1, ticks), 1),
            redis_commands_per_s=round(calls / elapsed, 1),
            latency_samples=len(lat),
            latency_p50_ms=round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            latency_p99_ms=round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        )
    return result


async def _stream_stats(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, Any]:
    async with session.get(f"{url}/api/stream/stats", headers=headers) as resp:
        data: dict[str, Any] = await resp.json()
        return data


def _redis_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_set", "cmdstat_zadd")
    )


def start_server(kind: str, port: int, redis_url: str, var_dir: Path) -> Any:
    """The bare server or the real dashboard, in its own process."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "JWT_SECRET": SECRET,
        "OPSDECK_VAR_DIR": str(var_dir),
        "DASHBOARD_PORT": str(port),
        "DASHBOARD_STREAM_INTERVAL": "1",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    if kind == "dashboard":
        return spawn(python_module("dashboard"), env=env)
    return spawn([sys.executable, __file__, "--serve-bare", "--port", str(port)], env=env)


async def wait_up(port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{port}/health/live") as resp:
                    if resp.status in (200, 404):
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        assert server.port != 6379
        server.start()
        try:
            task_id = await record_task(server.url)
            for n in args.viewers:
                for kind in ("bare", "dashboard"):
                    port = free_port()
                    proc = start_server(kind, port, server.url, Path(tmp) / "var")
                    try:
                        await wait_up(port)
                        log(f"{kind}: {n} viewers for {args.seconds} s")
                        result = await phase(
                            kind, n, args.seconds, port, psutil.Process(proc.pid), server.url, task_id
                        )
                        phases.append({"server": kind, **result})
                        log(json.dumps(phases[-1]))
                    finally:
                        terminate(proc, 5.0)
        finally:
            server.stop()
    return {
        "benchmark": "dashboard_ws",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds_per_phase": args.seconds,
        "targets": TARGETS,
        "viewer_pages": {page: keys for page, keys in PAGES.items()},
        "phases": phases,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5 s per phase instead of 30 s")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--viewers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 5.0
    args.seconds = min(max(args.seconds, 1.0), 120.0)  # bounded
    args.viewers = [min(max(v, 1), 5000) for v in args.viewers]
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every phase and print one JSON document."""
    args = parse_args(argv)
    if args.serve_bare:
        serve_bare(args.port)
        return
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
