"""Circuit breaker for the LLM: stop calling a failing service, try again carefully later.

* **closed** — calls go through; each outcome enters a window of the last ``window`` (20) calls.
  The breaker opens when ``consecutive`` (5) calls in a row failed, or when at least
  ``min_calls`` (10) calls are in the window and ``≥ threshold`` (50 %) of them failed.
* **open** — every call is refused (the caller answers with its fallback) for ``cooldown`` (30 s).
* **half-open** — after the cooldown exactly one trial call is let through; its success closes
  the breaker (with a fresh window), its failure opens it for another cooldown. Other callers
  are refused while the trial runs.

One breaker per worker process (thread-safe); the state is exported as a gauge by the caller.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """Gauge values: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """See the module docstring; ``clock`` is injectable for tests."""

    def __init__(
        self,
        *,
        window: int = 20,
        threshold: float = 0.5,
        min_calls: int = 10,
        consecutive: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.threshold = threshold
        self.min_calls = min_calls
        self.consecutive = consecutive
        self.cooldown = cooldown
        self.clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._failures_in_row = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._trial_running = False
        self._lock = threading.Lock()

    def like(self) -> CircuitBreaker:
        """A fresh breaker with this one's thresholds and clock (one per model tier)."""
        return CircuitBreaker(
            window=self.window,
            threshold=self.threshold,
            min_calls=self.min_calls,
            consecutive=self.consecutive,
            cooldown=self.cooldown,
            clock=self.clock,
        )

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cooldown passed reads as half-open)."""
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock() - self._opened_at >= self.cooldown:
            self._state = BreakerState.HALF_OPEN
            self._trial_running = False
        return self._state

    @property
    def failures_in_row(self) -> int:
        """Failed calls since the last success."""
        return self._failures_in_row

    def allow(self) -> bool:
        """May a call go out now? In half-open only the one trial call may (it must report back)."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record(self, success: bool) -> BreakerState:
        """Report the outcome of an allowed call; returns the state after it."""
        with self._lock:
            state = self._current()
            if state is BreakerState.HALF_OPEN:
                self._trial_running = False
                if success:
                    self._close()
                else:
                    self._open()
                return self._state
            self._outcomes.append(success)
            self._failures_in_row = 0 if success else self._failures_in_row + 1
            failures = self._outcomes.count(False)
            if self._failures_in_row >= self.consecutive or (
                len(self._outcomes) >= self.min_calls and failures >= self.threshold * len(self._outcomes)
            ):
                self._open()
            return self._state

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self.clock()

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._outcomes.clear()
        self._failures_in_row = 0
