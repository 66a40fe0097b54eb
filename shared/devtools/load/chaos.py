"""Fault injection for the ``chaos`` profile.

Time is cut into cycles; in each cycle a fault window covers ``ratio`` (30 %) of it. A window
starts by SIGKILLing one Dramatiq process of the agent (pid from the heartbeat's ``procs``; the
agent restarts it and its unacked messages come back after ``BROKER_HEARTBEAT_TIMEOUT``) and
slows every Redis connection of the stack through the fault proxy (``latency`` mode) until the
window closes. ``active()`` tells the recorder whether a request started under a fault.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field

from shared.devtools.load.stack import Stack

#: Share of the time under an injected fault.
FAULT_RATIO = 0.3
#: Delay the proxy adds to every chunk in each direction while Redis is slowed (seconds).
REDIS_DELAY = 0.05


@dataclass
class Chaos:
    """Runs fault windows against a :class:`Stack` until stopped."""

    stack: Stack
    cycle: float
    ratio: float = FAULT_RATIO
    delay: float = REDIS_DELAY
    kills: list[int] = field(default_factory=list)
    kill_failures: int = 0
    latency_windows: int = 0
    fault_seconds: float = 0.0
    _active: bool = False

    def active(self) -> bool:
        """True while a fault window is open."""
        return self._active

    def kill_one(self) -> int | None:
        """SIGKILL one live Dramatiq process of the agent; its pid, or None if none was found."""
        agent = self.stack.agent.pid if self.stack.agent is not None else None
        pids = [p for p in self.stack.dramatiq_pids() if p != agent]
        random.shuffle(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append(pid)
            return pid
        self.kill_failures += 1
        return None

    async def run(self, until: float) -> None:
        """Fault windows until the monotonic time ``until`` (or cancellation); leaves Redis healthy."""
        proxy = self.stack.proxy
        try:
            # the first window opens after one calm cycle share, so the run starts from a baseline
            await asyncio.sleep(min(self.cycle * (1 - self.ratio) / 2, max(0.0, until - time.monotonic())))
            while time.monotonic() < until:
                window = min(self.cycle * self.ratio, max(0.0, until - time.monotonic()))
                started = time.monotonic()
                self._active = True
                self.kill_one()
                if proxy is not None:
                    proxy.set("latency", self.delay)
                    self.latency_windows += 1
                try:
                    await asyncio.sleep(window)
                finally:
                    if proxy is not None:
                        proxy.set("pass")
                    self._active = False
                    self.fault_seconds += time.monotonic() - started
                await asyncio.sleep(min(self.cycle * (1 - self.ratio), max(0.0, until - time.monotonic())))
        finally:
            if proxy is not None:
                proxy.set("pass")
            self._active = False

    def summary(self, elapsed: float) -> dict[str, object]:
        """What was injected, for the report."""
        return {
            "target_ratio": self.ratio,
            "cycle_s": round(self.cycle, 2),
            "fault_seconds": round(self.fault_seconds, 2),
            "fault_ratio": round(self.fault_seconds / elapsed, 3) if elapsed > 0 else 0.0,
            "workers_killed": len(self.kills),
            "killed_pids": self.kills,
            "kill_failures": self.kill_failures,
            "redis_latency_windows": self.latency_windows,
            "redis_delay_ms_per_chunk": round(self.delay * 1000, 1),
            "injected": len(self.kills) + self.latency_windows,
        }
