"""Random identifiers for the hot paths: task ids (UUID version 4 text) and correlation ids.

Both come from ``os.urandom`` like :func:`uuid.uuid4`, but drawn in blocks of :data:`BLOCK`
identifiers: one system call per block instead of one per id, no ``UUID`` object on the way to
the text, and handing one out is a ``list.pop`` (atomic under the GIL, so threads never share
an id). The coordinator makes two ids per submitted task, and on this kind of machine a system
call costs more than the rest of building an id.
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: Identifiers drawn per ``os.urandom`` call.
BLOCK = 256
#: The RFC 9562 variant bits (10xx) as the first hex digit of the fourth group, by random digit.
_VARIANT = "89ab89ab89ab89ab"


class _Supply:
    """Identifiers made from 32 random hex digits each, BLOCK at a time."""

    def __init__(self, make: Callable[[str], str]) -> None:
        self._make = make
        self._ready: list[str] = []

    def take(self) -> str:
        """The next identifier (refilling from ``os.urandom`` when the block is used up)."""
        while True:  # another thread may empty a fresh block first
            try:
                return self._ready.pop()
            except IndexError:
                raw = os.urandom(16 * BLOCK).hex()
                self._ready.extend(self._make(raw[i : i + 32]) for i in range(0, len(raw), 32))

    def forget(self) -> None:
        """Drop the unused block (after ``fork``: parent and child must not hand out the same ids)."""
        self._ready.clear()


def _uuid4(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


_uuids = _Supply(_uuid4)
_hexes = _Supply(str)

#: A random UUID, version 4, in its canonical text form (as ``str(uuid.uuid4())``).
uuid4_text: Callable[[], str] = _uuids.take
#: 32 random hex digits (128 bits), e.g. a correlation id.
random_hex: Callable[[], str] = _hexes.take

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_uuids.forget)
    os.register_at_fork(after_in_child=_hexes.forget)
