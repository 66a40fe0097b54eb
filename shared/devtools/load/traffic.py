"""Virtual users (aiohttp) and the recorder of what they saw.

Each user plays the seeds' traffic in a loop with small think times: a chat session of a few
turns (``POST /api/v1/chat?wait=10``; a 202 is followed by status polls until the suggestion
is there), a 1–5 rating for most answered turns (``POST /api/v1/feedback/submit``), and now
and then a small task (``echo`` or a short ``sleep``) whose status is polled until it ends.

Kinds recorded: ``chat``, ``feedback``, ``task_submit``, ``task_status`` (one sample per HTTP
request) and the end-to-end ones ``chat_e2e`` (POST until the suggestion) and ``task_e2e``
(submit until the task ended). An answer that is not the expected status, a connection error
and a timeout are errors; a 503 is an error too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

#: Seed chat turns (the load users and the chat benchmark send these).
MESSAGES = (
    "What does it cost per seat?",
    "We already use a competitor, why would we switch?",
    "Is the data stored in the EU? We need GDPR compliance.",
    "My team has no time for a long rollout.",
    "Sounds interesting, can we do a trial?",
    "Your price is too high for a team of our size.",
    "Who else in our industry uses this?",
)
#: Task statuses after which a task will not change any more.
TERMINAL = frozenset({"succeeded", "failed", "dead", "canceled"})
#: Samples kept per kind; beyond it reservoir sampling keeps the percentiles honest.
MAX_SAMPLES = 1_000_000
#: Timeout of one HTTP request (the chat's ``wait`` is 10 s).
REQUEST_TIMEOUT = 15.0
#: Longest time a user follows one chat turn or task to its end (seconds).
FOLLOW_LIMIT = 30.0


@dataclass
class KindStats:
    """Samples of one request kind."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    count: int = 0
    errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors_during_fault: int = 0
    count_during_fault: int = 0


class Recorder:
    """Collects latency samples and outcomes per kind; ``fault_active`` tags samples (chaos)."""

    def __init__(self, fault_active: Callable[[], bool] = lambda: False) -> None:
        self.kinds: dict[str, KindStats] = defaultdict(KindStats)
        self.fault_active = fault_active
        self.aborted = 0
        self.error_examples: list[str] = []

    @property
    def total(self) -> int:
        """Samples recorded, all kinds."""
        return sum(k.count for k in self.kinds.values())

    def add(self, kind: str, seconds: float, ok: bool, status: str, *, during_fault: bool = False) -> None:
        """Record one outcome (``seconds`` from its start)."""
        stats = self.kinds[kind]
        stats.count += 1
        stats.statuses[status] += 1
        if during_fault:
            stats.count_during_fault += 1
        if not ok:
            stats.errors += 1
            if during_fault:
                stats.errors_during_fault += 1
            if len(self.error_examples) < 20:
                self.error_examples.append(f"{kind}: {status}")
            return
        if len(stats.latencies) < MAX_SAMPLES:
            stats.latencies.append(seconds)
        else:
            slot = random.randrange(stats.count)
            if slot < MAX_SAMPLES:
                stats.latencies[slot] = seconds


class User:
    """One virtual user: loops over the traffic mix until ``stop`` is set or the deadline passes."""

    def __init__(
        self, http: aiohttp.ClientSession, base: str, token: str, uid: str, recorder: Recorder
    ) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.uid = uid
        self.rec = recorder
        self.stop = asyncio.Event()
        self.rng = random.Random(uid)
        self.sessions = 0

    async def run(self, deadline: float) -> None:
        """The user's loop; returns at the first check after ``stop`` or ``deadline``."""
        while not self._done(deadline):
            await self.chat_session(deadline)
            if not self._done(deadline) and self.rng.random() < 0.6:
                await self.task(deadline)

    def _done(self, deadline: float) -> bool:
        return self.stop.is_set() or time.monotonic() >= deadline

    async def think(self, low: float = 0.2, high: float = 1.0) -> None:
        """A pause between actions (cut short by ``stop``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.rng.uniform(low, high))

    async def request(
        self, kind: str, method: str, path: str, expect: tuple[int, ...], body: Any = None
    ) -> tuple[int, Any]:
        """One timed request; returns ``(status, json or None)``; status 0 is a transport error."""
        fault = self.rec.fault_active()
        started = time.perf_counter()
        try:
            async with self.http.request(
                method, self.base + path, json=body, headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as resp:  # fmt: skip
                data = await resp.json(content_type=None) if resp.content_length != 0 else None
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.rec.add(kind, time.perf_counter() - started, False, type(exc).__name__, during_fault=fault)
            return 0, None
        fault = fault or self.rec.fault_active()
        self.rec.add(kind, time.perf_counter() - started, status in expect, str(status), during_fault=fault)
        return status, data

    async def chat_session(self, deadline: float) -> None:
        """A session of 2–6 turns, most answered turns rated."""
        self.sessions += 1
        session_id = f"load-{self.uid}-{self.sessions}"
        for _ in range(self.rng.randint(2, 6)):
            if self._done(deadline):
                return
            turn = await self.chat_turn(session_id)
            if turn is not None and self.rng.random() < 0.7 and not self._done(deadline):
                await self.think(0.1, 0.5)
                body = {"session_id": session_id, "turn_number": turn, "rating": self.rng.randint(1, 5)}
                await self.request("feedback", "POST", "/api/v1/feedback/submit", (202,), body)
            await self.think()

    async def chat_turn(self, session_id: str) -> int | None:
        """One turn until its suggestion; returns the turn number when answered."""
        body = {"session_id": session_id, "message": self.rng.choice(MESSAGES), "user_id": self.uid}
        started = time.perf_counter()
        fault = self.rec.fault_active()
        status, data = await self.request("chat", "POST", "/api/v1/chat?wait=10", (200, 202), body)
        if status not in (200, 202) or not isinstance(data, dict):
            self.rec.add("chat_e2e", time.perf_counter() - started, False, str(status), during_fault=fault)
            return None
        turn = data.get("turn_number")
        if status == 200 and data.get("suggestion"):
            self.rec.add("chat_e2e", time.perf_counter() - started, True, "answered", during_fault=fault)
            return int(turn) if turn is not None else None
        outcome = await self.follow(str(data.get("status_url", "")), started)
        if outcome is None:
            return None
        ok = outcome == "succeeded"
        self.rec.add("chat_e2e", time.perf_counter() - started, ok, outcome, during_fault=fault)
        return int(turn) if ok and turn is not None else None

    async def task(self, deadline: float) -> None:
        """Submit a small task and poll its status until it ended."""
        if self.rng.random() < 0.5:
            body: dict[str, Any] = {
                "type": "echo",
                "payload": {"user": self.uid, "n": self.rng.randint(0, 999)},
            }
        else:
            body = {"type": "sleep", "payload": {"seconds": round(self.rng.uniform(0.01, 0.2), 3)}}
        body["priority"] = self.rng.choice(("P1", "P2", "P3"))
        started = time.perf_counter()
        fault = self.rec.fault_active()
        status, data = await self.request("task_submit", "POST", "/api/v1/tasks", (202,), body)
        if status != 202 or not isinstance(data, dict):
            return
        outcome = await self.follow(str(data.get("status_url", "")), started)
        if outcome is not None:
            ok = outcome == "succeeded"
            self.rec.add("task_e2e", time.perf_counter() - started, ok, outcome, during_fault=fault)
        await self.think()

    async def follow(self, status_url: str, started: float) -> str | None:
        """Poll a task until it ended: its final status, ``timeout``, or None when the run ends first."""
        while time.perf_counter() - started < FOLLOW_LIMIT:
            if self.stop.is_set():
                self.rec.aborted += 1
                return None
            await asyncio.sleep(self.rng.uniform(0.05, 0.25))
            status, data = await self.request("task_status", "GET", status_url, (200,))
            if status == 200 and isinstance(data, dict) and data.get("status") in TERMINAL:
                return str(data["status"])
        return "timeout"
