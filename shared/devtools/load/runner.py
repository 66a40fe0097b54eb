"""``opsdeck load``: run one profile against a private stack (or ``--url``) and report.

The run is bounded: users stop at the end of the last stage, in-flight requests get a short
drain, then everything is cancelled; the stack is stopped in a ``finally`` with Ctrl-C ignored
during the cleanup, so no process is left behind. Exit codes: 0 thresholds met, 1 a threshold
failed, 2 bad usage or the stack did not start, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import orjson

from shared.devtools.load import report as reports
from shared.devtools.load.chaos import Chaos
from shared.devtools.load.profiles import PROFILES, Plan, plan
from shared.devtools.load.stack import STACK_ENV, Stack
from shared.devtools.load.traffic import Recorder, User

#: Requests after which a run stops early, whatever its duration.
MAX_REQUESTS = 20_000_000
#: Unrecorded traffic before the measured window (seconds), full and ``--quick`` runs.
WARMUP, WARMUP_QUICK = 10.0, 2.0
#: Points of the soak memory timeline.
TIMELINE_POINTS = 40


def log(message: str) -> None:
    """Progress on stderr (stdout carries the summary)."""
    print(f"opsdeck load: {message}", file=sys.stderr, flush=True)


class Run:
    """One load run: users per stage, optional chaos, memory samples."""

    def __init__(self, plan: Plan, base: str, token: str, stack: Stack | None) -> None:
        self.plan = plan
        self.base = base
        self.token = token
        self.stack = stack
        cycle = 5.0 if plan.quick else 20.0
        self.chaos = Chaos(stack, cycle=cycle) if plan.profile.chaos and stack is not None else None
        self.recorder = Recorder(self.chaos.active if self.chaos else lambda: False)
        self.nonce = secrets.token_hex(3)
        self.timeline: list[dict[str, float]] = []

    def memory(self) -> dict[str, tuple[int, int]]:
        """RSS per process of the private stack (empty with ``--url``)."""
        return reports.memory_sample(self.stack.processes()) if self.stack is not None else {}

    async def warm_up(self, seconds: float) -> None:
        """A few users for ``seconds``, not recorded: every Dramatiq process has imported and
        served before the measured window (and the start memory sample) begins."""
        async with aiohttp.ClientSession() as http:
            users = [User(http, self.base, self.token, f"{self.nonce}-warm{i}", Recorder()) for i in range(4)]
            deadline = time.monotonic() + seconds
            tasks = [asyncio.create_task(u.run(deadline)) for u in users]
            await asyncio.sleep(seconds)
            for user in users:
                user.stop.set()
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def execute(self) -> tuple[float, dict[str, Any] | None]:
        """Warm up, then drive the stages; returns (traffic seconds, memory summary)."""
        await self.warm_up(WARMUP_QUICK if self.plan.quick else WARMUP)
        mem_start = self.memory()
        drain = 5.0 if self.plan.quick else 15.0
        connector = aiohttp.TCPConnector(limit=self.plan.peak_users * 2 + 10)
        active: list[User] = []
        tasks: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession(connector=connector) as http:
            started = time.monotonic()
            deadline = started + self.plan.duration
            side = []
            if self.chaos is not None:
                side.append(asyncio.create_task(self.chaos.run(deadline)))
            if self.plan.profile.memory_samples and self.stack is not None:
                side.append(asyncio.create_task(self.sample_memory(started, deadline)))
            try:
                await self._drive_stages(http, started, deadline, active, tasks)
            finally:
                ended = time.monotonic()
                await _wind_down(active, tasks, side, drain)
        elapsed = ended - started
        if self.stack is None:
            return elapsed, None
        memory = reports.memory_summary(mem_start, self.memory())
        if self.timeline:
            memory["timeline_total_rss_mb"] = self.timeline
        return elapsed, memory

    async def _drive_stages(
        self,
        http: aiohttp.ClientSession,
        started: float,
        deadline: float,
        active: list[User],
        tasks: list[asyncio.Task[None]],
    ) -> None:
        """Grow or shrink the users to each stage's count, stage by stage (bounded by MAX_REQUESTS)."""
        stage_end = started
        for seconds, users in self.plan.stages:
            stage_end = min(deadline, stage_end + seconds)
            while len(active) < users:
                user = User(http, self.base, self.token, f"{self.nonce}-{len(tasks)}", self.recorder)
                active.append(user)
                tasks.append(asyncio.create_task(user.run(deadline)))
            while len(active) > users:
                active.pop().stop.set()
            log(f"{users} users until t+{stage_end - started:.0f}s")
            while time.monotonic() < stage_end and self.recorder.total < MAX_REQUESTS:  # noqa: ASYNC110
                await asyncio.sleep(min(0.2, max(0.0, stage_end - time.monotonic())))
            if self.recorder.total >= MAX_REQUESTS:
                log(f"stopping early: {MAX_REQUESTS} requests")
                return

    async def sample_memory(self, started: float, deadline: float) -> None:
        """Total RSS of the stack at regular times (soak)."""
        every = max(1.0, (deadline - started) / TIMELINE_POINTS)
        while time.monotonic() < deadline:
            sample = await asyncio.to_thread(self.memory)
            total = sum(rss for _, rss in sample.values())
            self.timeline.append(
                {"t_s": round(time.monotonic() - started, 1), "rss_mb": round(total / 2**20, 1)}
            )
            await asyncio.sleep(every)


async def _wind_down(
    active: list[User], tasks: list[asyncio.Task[None]], side: list[asyncio.Task[Any]], drain: float
) -> None:
    """Stop every user (waiting up to ``drain`` s for their last requests), then the side tasks."""
    for user in active:
        user.stop.set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in side:
        task.cancel()
    await asyncio.gather(*side, return_exceptions=True)


def _token_for_url() -> str:
    token = os.environ.get("OPSDECK_TOKEN")
    if token:
        return token
    from shared.auth import mint
    from shared.settings import load_settings

    return mint(load_settings().jwt_key, ["tasks:write", "tasks:read"], subject="load", ttl=48 * 3600)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_stack(stack: Stack | None, previous_sigterm: Any) -> None:
    """Stop the private stack with stop signals ignored, then restore their handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if stack is not None:
            killed = stack.stop()
            if killed:
                log(f"had to SIGKILL {killed}")
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous_sigterm)


def _refusal(url: str | None, the_plan: Plan) -> str | None:
    """Why ``--url`` cannot be used with this plan (None: it can)."""
    if url and the_plan.profile.chaos:
        return "chaos needs its own stack (a fault proxy in front of Redis); drop --url"
    if url and not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        return "--url must be a 127.0.0.1 address (load stays on this machine)"
    return None


def run(args: argparse.Namespace) -> int:
    """The ``opsdeck load`` command."""
    try:
        the_plan = plan(args.profile, quick=args.quick, duration=args.duration, users=args.users)
    except ValueError as exc:
        print(f"opsdeck load: {exc}", file=sys.stderr)
        return 2
    refusal = _refusal(args.url, the_plan)
    if refusal:
        print(f"opsdeck load: {refusal}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    stack: Stack | None = None
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        if args.url:
            base, token = args.url.rstrip("/"), _token_for_url()
        else:
            stack = Stack(proxy=the_plan.profile.chaos)
            log(f"starting a private stack under {stack.tmp}")
            try:
                stack.start(timeout=25.0 if args.quick else 60.0)
            except (RuntimeError, TimeoutError, OSError) as exc:
                print(f"opsdeck load: the stack did not start: {exc}\n{stack.logs_tail()}", file=sys.stderr)
                return 2
            base, token = stack.url, stack.token()
        log(f"{the_plan.profile.name}: {the_plan.duration:g}s against {base}")
        the_run = Run(the_plan, base, token, stack)
        elapsed, memory = asyncio.run(the_run.execute())
        faults = the_run.chaos.summary(elapsed) if the_run.chaos is not None else None
        crashed = stack.exited() if stack is not None else {}
        for name, why in crashed.items():
            log(f"{name} exited during the run: {why}")
    except KeyboardInterrupt:
        print("opsdeck load: interrupted; stopping", file=sys.stderr, flush=True)
        return 130
    finally:
        _stop_stack(stack, previous)
    meta = {
        "profile": the_plan.profile.name,
        "description": the_plan.profile.description,
        "quick": the_plan.quick,
        "started_at": started_at,
        "target": base,
        "own_stack": stack is not None,
        "stack_env": dict(STACK_ENV, WORKER_PROCESSES="2", WORKER_THREADS="8") if stack else None,
        "duration_s": the_plan.duration,
        "stages": [{"seconds": round(s, 2), "users": u} for s, u in the_plan.stages],
        "peak_users": the_plan.peak_users,
        "processes": [{"pid": p, "role": r} for p, r in sorted(stack.seen.items())] if stack else [],
        "thresholds_doc": "error rate < 5 % (requests and end-to-end outcomes); chat end-to-end p95 < 10 s",
    }
    report = reports.build(the_run.recorder, elapsed, meta, memory, faults)
    if crashed:
        report["stack_exited"] = crashed
        report["passed"] = False
    if args.report:
        Path(args.report).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(reports.summary_text(report), flush=True)
    return 0 if report["passed"] else 1


def add_parser(sub: Any) -> None:
    """Register ``load`` on the ``opsdeck`` subparsers."""
    p = sub.add_parser(
        "load", help="load suites against a private stack (or --url): sustained, burst, spike, soak, chaos"
    )
    p.add_argument(
        "profile",
        choices=list(PROFILES),
        help="; ".join(f"{n}: {v.description}" for n, v in PROFILES.items()),
    )
    p.add_argument(
        "--quick", action="store_true", help="CI size: fewer users, ≤ 40 s of traffic, < 60 s in all"
    )
    p.add_argument("--duration", type=float, help="seconds of traffic (default: the profile's)")
    p.add_argument("--users", type=int, help="peak virtual users (default: the profile's)")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--url", help="drive this coordinator (127.0.0.1) instead of a private stack; "
                   "token from OPSDECK_TOKEN or minted from JWT_SECRET")  # fmt: skip
    p.set_defaults(func=run)
