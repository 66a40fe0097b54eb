"""Idle-tier probes: keep each model tier's health record fresh when no turn uses the tier.

Every Dramatiq process with an LLM runs one :class:`TierProber` thread (started by the
:class:`LLMProbes` middleware when the worker boots, stopped before it shuts down). Every
``check_every`` seconds it reads the tiers' health records (``Keys.llm_tiers``, one ``HMGET``)
and, for each tier whose last call (anyone's: a turn or a probe) is ``LLM_PROBE_INTERVAL`` or
more old — or that has no record — takes the tier's probe lease (``SET Keys.llm_probe(tier)
NX EX interval``); the one process that gets it makes one tiny call
(:meth:`~worker.coach.llm.GuardedLLM.probe`) and reports it like any call. The lease makes it
at most one probe per tier per interval across all workers, however many processes check; a
busy tier is never probed (its record is always recent). Redis errors skip the round.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Middleware

from shared.keys import Keys
from worker.coach.llm import GuardedLLM

log = logging.getLogger(__name__)


class TierProber:
    """Probe the idle tiers of ``llm`` (module docstring); ``clock`` in seconds since the epoch."""

    def __init__(
        self,
        llm: GuardedLLM,
        client: redis.Redis,
        keys: Keys,
        interval: float,
        worker: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.llm = llm
        self.client = client
        self.keys = keys
        self.interval = interval
        self.worker = worker
        self.clock = clock
        #: Seconds between two looks at the records: a quarter interval, within [1, 30].
        self.check_every = min(30.0, max(1.0, interval / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def idle(self) -> list[str]:
        """The tiers whose last reported call is ``interval`` or more old (or never reported)."""
        raw = self.client.hmget(self.keys.llm_tiers, self.llm.tiers)
        now_ms = self.clock() * 1000
        idle = []
        for tier, record in zip(self.llm.tiers, raw, strict=True):
            try:
                at = float(json.loads(record)["at"]) if record is not None else -math.inf
            except (ValueError, TypeError, KeyError):
                at = -math.inf
            if now_ms - at >= self.interval * 1000:
                idle.append(tier)
        return idle

    def run_once(self) -> dict[str, str]:
        """One round: the tiers this process probed, with each probe's outcome."""
        probed: dict[str, str] = {}
        try:
            for tier in self.idle():
                lease = max(1, math.ceil(self.interval))
                if self.client.set(self.keys.llm_probe(tier), self.worker, nx=True, ex=lease):
                    probed[tier] = self.llm.probe(tier)
        except redis.RedisError as exc:
            log.warning("llm probe round skipped: %s", type(exc).__name__)
        return probed

    def _loop(self) -> None:
        while not self._stop.wait(self.check_every):
            try:
                self.run_once()
            except Exception:  # never let the thread die: the next round tries again
                log.exception("llm probe round failed")

    def start(self) -> None:
        """Run rounds in a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="llm-probes", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a probe in flight finishes first, within the call's timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class LLMProbes(Middleware):
    """Starts the process's :class:`TierProber` when its Dramatiq worker boots, stops it before
    the worker shuts down."""

    def __init__(self, prober: TierProber) -> None:
        self.prober = prober

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        """Start probing."""
        self.prober.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Stop probing."""
        self.prober.stop()
