"""A thread-safe LRU cache whose entries also expire (LLM answers: 1000 entries, 10 minutes)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    """At most ``maxsize`` entries; the least recently used goes first, any entry after ``ttl`` s.

    ``hits`` and ``misses`` count lookups (an expired entry is a miss). ``clock`` is injectable
    for tests (default ``time.monotonic``).
    """

    def __init__(self, maxsize: int = 1000, ttl: float = 600.0, clock: Callable[[], float] = time.monotonic):
        if maxsize < 1 or ttl <= 0:
            raise ValueError("maxsize must be >= 1 and ttl > 0")
        self.maxsize = maxsize
        self.ttl = ttl
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        """The live value for ``key`` (marked most recently used), or None."""
        with self._lock:
            item = self._data.get(key)
            if item is not None and item[0] > self.clock():
                self._data.move_to_end(key)
                self.hits += 1
                return item[1]
            if item is not None:
                del self._data[key]
            self.misses += 1
            return None

    def put(self, key: str, value: V) -> None:
        """Store ``value`` for ``ttl`` seconds, evicting the least recently used entry when full."""
        with self._lock:
            self._data[key] = (self.clock() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def hit_ratio(self) -> float:
        """Hits / lookups (0.0 before the first lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
