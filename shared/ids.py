"""Random identifiers for the hot paths: task ids (UUID version 4 text) and correlation ids.

Both come from ``os.urandom`` like :func:`uuid.uuid4`, but drawn in blocks of :data:`BLOCK`
identifiers: one system call per block instead of one per id, no ``UUID`` object on the way to
the text, and handing one out is a ``list.pop`` (atomic under the GIL, so threads never share
an id). The coordinator makes two ids per submitted task, and on this kind of machine a system
call costs more than the rest of building an id.
"""

from __future__ import annotations

import os

#: Identifiers drawn per ``os.urandom`` call.
BLOCK = 256
#: The RFC 9562 variant bits (10xx) as the first hex digit of the fourth group, by random digit.
_VARIANT = "89ab89ab89ab89ab"

_uuids: list[str] = []
_hexes: list[str] = []


def _refill_uuids() -> None:
    raw = os.urandom(16 * BLOCK).hex()
    _uuids.extend(
        f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"
        for h in (raw[i : i + 32] for i in range(0, len(raw), 32))
    )


def _refill_hexes() -> None:
    raw = os.urandom(16 * BLOCK).hex()
    _hexes.extend(raw[i : i + 32] for i in range(0, len(raw), 32))


def uuid4_text() -> str:
    """A random UUID, version 4, in its canonical text form (as ``str(uuid.uuid4())``)."""
    while True:  # another thread may empty a fresh block first
        try:
            return _uuids.pop()
        except IndexError:
            _refill_uuids()


def random_hex() -> str:
    """32 random hex digits (128 bits), e.g. a correlation id."""
    while True:  # another thread may empty a fresh block first
        try:
            return _hexes.pop()
        except IndexError:
            _refill_hexes()


def _forget() -> None:
    """After ``fork``: parent and child must not hand out the same ids."""
    _uuids.clear()
    _hexes.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
