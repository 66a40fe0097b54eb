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

    def __init__(self, make: Callable[[str], list[str]]) -> None:
        self._make = make
        self._ready: list[str] = []

    def take(self) -> str:
        """The next identifier (refilling from ``os.urandom`` when the block is used up)."""
        while True:  # another thread may empty a fresh block first
            try:
                return self._ready.pop()
            except IndexError:
                self._ready.extend(self._make(os.urandom(16 * BLOCK).hex()))

    def forget(self) -> None:
        """Drop the unused block (after ``fork``: parent and child must not hand out the same ids)."""
        self._ready.clear()


def _uuid4s(raw: str) -> list[str]:
    """UUID texts from each 32 hex digits of ``raw`` (one comprehension: no call per id)."""
    return [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}-"
        f"{_VARIANT[int(raw[i + 16], 16)]}{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, len(raw), 32)
    ]


def _hex32s(raw: str) -> list[str]:
    """Each 32 hex digits of ``raw``."""
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


_uuids = _Supply(_uuid4s)
_hexes = _Supply(_hex32s)

#: A random UUID, version 4, in its canonical text form (as ``str(uuid.uuid4())``).
uuid4_text: Callable[[], str] = _uuids.take
#: 32 random hex digits (128 bits), e.g. a correlation id.
random_hex: Callable[[], str] = _hexes.take

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_uuids.forget)
    os.register_at_fork(after_in_child=_hexes.forget)
