"""Random identifiers for the hot paths: task ids (UUID version 4 text) and correlation ids.

Both come from ``os.urandom`` like :func:`uuid.uuid4`, but read in blocks of
:data:`BLOCK` identifiers: one system call per block instead of one per id, and no ``UUID``
object on the way to the text. The coordinator makes two ids per submitted task, and on this
kind of machine a system call costs more than the rest of building an id.
"""

from __future__ import annotations

import os
import threading

#: Identifiers drawn per ``os.urandom`` call.
BLOCK = 256
_SIZE = 16
#: The RFC 9562 variant bits (10xx) as the first hex digit of the fourth group.
_VARIANT = "89ab89ab89ab89ab"


class _Pool:
    """Hands out 16 random bytes at a time from a block refilled by one ``os.urandom`` call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._offset = 0

    def take(self) -> bytes:
        with self._lock:
            if self._offset >= len(self._block):
                self._block, self._offset = os.urandom(_SIZE * BLOCK), 0
            start = self._offset
            self._offset = start + _SIZE
            return self._block[start : start + _SIZE]

    def reset(self) -> None:
        """Forget the unused block (after ``fork``: parent and child must not share ids)."""
        self._block, self._offset = b"", 0


_pool = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.reset)


def random_hex() -> str:
    """32 random hex digits (128 bits), e.g. a correlation id."""
    return _pool.take().hex()


def uuid4_text() -> str:
    """A random UUID, version 4, in its canonical text form (as ``str(uuid.uuid4())``)."""
    h = _pool.take().hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"
