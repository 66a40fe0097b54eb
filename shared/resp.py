"""RESP, the Redis wire format, for the one command the coordinator sends per batch of tasks.

A command is an array of bulk strings: ``*<count>\\r\\n`` and then ``$<length>\\r\\n<bytes>\\r\\n``
per argument. hiredis' ``pack_command`` formats each argument with ``sprintf`` and copies it
through an intermediate string: about a thousand instructions an argument, the largest single
cost of a submission. A task's arguments are instead packed once, into a chunk the batcher joins
with the others behind one header: values that repeat (queue and type names, priorities,
subjects) come from a :class:`BulkCache`, the others are joined with a length prefix looked up
in :data:`PREFIXES` (bytes ``%`` formatting costs about as much as hiredis' ``sprintf``).
"""

from __future__ import annotations

from collections.abc import Iterable

#: What Redis receives for an empty string.
EMPTY = b"$0\r\n\r\n"
#: The end of every bulk string.
CRLF = b"\r\n"
#: The header of a bulk string of each length below PREFIXES_MAX (``$<length>\r\n``).
PREFIXES_MAX = 4096
PREFIXES = tuple(b"$%d\r\n" % n for n in range(PREFIXES_MAX))


def prefix(length: int) -> bytes:
    """The header of a bulk string of ``length`` bytes."""
    return PREFIXES[length] if length < PREFIXES_MAX else b"$%d\r\n" % length


class BulkCache(dict[str, bytes]):
    """The bulk string of each str it is asked for, made once (a dict lookup after that); holds
    at most ``size`` values and starts over when full."""

    def __init__(self, size: int = 4096) -> None:
        super().__init__()
        self.size = size

    def __missing__(self, value: str) -> bytes:
        if len(self) >= self.size:
            self.clear()
        packed = self[value] = bulk([value.encode()])
        return packed


def bulk(values: Iterable[bytes]) -> bytes:
    """The bulk strings of ``values``, back to back (a part of a command, without its count)."""
    return b"".join([b"$%d\r\n%b\r\n" % (len(value), value) for value in values])


def array_header(count: int) -> bytes:
    """The header of a command of ``count`` arguments."""
    return b"*%d\r\n" % count
