"""Coalesce concurrent task submissions into one Lua call per round trip, on a connection of its own.

Each request awaits its own outcome, but while a call is in flight the submissions of other
requests queue up and go out together in a later one (``shared/lua/submit.lua`` takes a
batch). Idle, a submission goes out on the event loop's next turn. Loaded, up to MAX_INFLIGHT
calls are in flight at once, each of up to MAX_BATCH submissions: while Redis runs one, the
server parses the next requests, and those go out when SEND_AT of them wait, when a turn of the
loop brings no more (the server would otherwise idle), or when a reply frees a place. With a
single call in flight the requests of a loaded server fall into one convoy that sits in Redis
while the server has nothing to do (a fifth of its time, measured: see docs/architecture.md).
Each submission arrives packed already (its arguments as RESP bulk strings, :mod:`shared.resp`):
a batch is a header and the chunks joined.

The batcher writes to and reads from its connection itself (an ``asyncio.Protocol`` with a
hiredis reader), not through redis-py's connection pool: per batch, the pool's checkout, its
stream reads and a task to drive them cost as much as the submissions of a dozen requests.
The connection is still made by redis-py (:func:`open_protocol`: address, TLS, AUTH, database),
and the script loaded through the client after a NOSCRIPT.

Failures keep the guarantees of a plain Redis call: each batch has a deadline; when the
oldest one's passes, or the connection cannot be made, every batch in flight and every
submission waiting behind them fail (an outage answers everyone within one deadline) and the
connection is dropped, so a late reply is never taken for another batch's. Batches whose
connection died under them are sent once more, in order, on a new one; after a NOSCRIPT (Redis
restarted, or this is its first call since) the connection is dropped too, the script loaded
and the batches sent once more. The script skips tasks it already recorded, so a batch sent
again records and enqueues nothing twice.

The script also settles idempotency replays: an id seen before comes back with the first task's
id, or as a conflict when that task was asked for with a different request; and it checks each
submission's rate-limit bucket (when it names one): a submission over it fails alone, with
RateLimited and the wait, while the others of the batch go through.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.aio import cancel_and_wait
from shared.errors import Conflict
from shared.ratelimit import SUBMIT_CLASS, RateLimited
from shared.resp import array_header, bulk
from shared.store import script_sha, script_source

#: Most submissions sent in one call.
MAX_BATCH = 256
#: submit.lua's outcome of a submission whose idempotency key names a different request.
CONFLICT = -1
#: submit.lua's outcome of a submission refused by its subject's rate limit (then the wait in ms).
LIMITED = -2
#: Batches sent and not answered yet, at most: Redis runs one while the server gathers the next.
MAX_INFLIGHT = 2
#: Waiting submissions that go out at once while a batch is in flight (else they wait for its
#: reply or for a turn of the loop that brings no more). Without it the requests of a loaded
#: server fall into one convoy that is in Redis while the server idles.
SEND_AT = 24
#: Sends of one batch after its first, for each cause: a lost connection, a NOSCRIPT (Redis
#: restarted, or this is its first call since).
RESENDS = 1


class Submitted(NamedTuple):
    """Outcome of a submission: the task id and whether this call created it."""

    task_id: str
    created: bool


Pending = tuple[bytes, "asyncio.Future[Submitted]"]
_REUSED = "idempotency_key was already used for a different request"
_REUSED_FIELD = "reused with a different request"
#: Builds a Submitted without its Python-level ``__new__`` (one per request on the hot path).
_make_submitted = tuple.__new__


class Replies(asyncio.Protocol):
    """The batcher's end of its connection: each reply parsed by hiredis and handed on in order."""

    def __init__(self, on_reply: Callable[[Replies, Any], None], on_lost: Callable[[Replies], None]) -> None:
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        #: The stream writer redis-py opened the connection with: kept, or collecting it would close it.
        self.writer: asyncio.StreamWriter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport to write to."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Hand every complete reply on."""
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._on_reply(self, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the batcher (whatever was in flight on this connection is lost with it)."""
        self.transport = None
        self._on_lost(self)

    def close(self) -> None:
        """Close the connection (connection_lost follows)."""
        if self.transport is not None:
            self.transport.close()


async def open_protocol(client: aioredis.Redis, protocol: Replies) -> Replies:
    """A new connection made exactly as ``client`` makes its own (address, TLS, AUTH, database),
    then driven by ``protocol``: redis-py opens a connection as a pair of asyncio streams, and
    their transport is handed over to the protocol, which reads the replies itself."""
    conn = client.connection_pool.make_connection()
    await conn.connect()
    writer = getattr(conn, "_writer", None)  # redis-py keeps the streams of a connection there
    if not isinstance(writer, asyncio.StreamWriter):
        await conn.disconnect()
        raise RuntimeError("this redis-py version does not keep its connection's streams in _writer")
    conn._writer = conn._reader = None  # the connection object lets go; the protocol owns them now
    transport = writer.transport
    protocol.writer = writer
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol


class _Batch:
    """A batch sent and not answered yet: its submissions, its command, its deadline."""

    __slots__ = ("command", "pending", "resends", "timer")

    #: Sends after the first, per cause (a lost connection, NOSCRIPT).
    resends: dict[str, int]

    def __init__(self, pending: list[Pending], command: bytes, timer: asyncio.TimerHandle) -> None:
        self.pending = pending
        self.command = command
        self.timer = timer
        self.resends = {}


class SubmitBatcher:
    """Sends task submissions to ``submit.lua`` in batches; see the module docstring."""

    def __init__(
        self, client: aioredis.Redis, deadline: float, header: Sequence[bytes], args_per_task: int
    ) -> None:
        """``header``: the script's leading arguments; each submission then adds ``args_per_task``."""
        self._client = client
        self._deadline = deadline
        self._head = bulk([b"EVALSHA", script_sha("submit").encode(), b"0", *header])
        self._head_args = 3 + len(header)
        self._args_per_task = args_per_task
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Pending] = []
        #: Batches sent and not answered yet, oldest first (replies come back in that order).
        self._inflight: deque[_Batch] = deque()
        self._scheduled = False
        #: How many were waiting when _on_turn last put the send off (-1: it did not).
        self._seen = -1
        self._conn: Replies | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()

    def submit(self, task_args: bytes) -> asyncio.Future[Submitted]:
        """Queue one task's arguments (``args_per_task`` bulk strings, :func:`shared.resp.bulk`)
        for the next call. The future resolves to its outcome: Conflict when its idempotency key
        was used for a different request, the call's error when Redis fails or the deadline
        passes."""
        loop = self._loop
        if loop is None:  # asyncio.get_running_loop() makes a getpid system call: once is enough
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Submitted] = asyncio.Future(loop=loop)
        pending = self._pending
        pending.append((task_args, future))
        if len(self._inflight) < MAX_INFLIGHT:
            if len(pending) >= SEND_AT:
                self._send()
            elif not self._scheduled:
                self._scheduled = True  # on the loop's next turn: what else arrives meanwhile joins
                loop.call_soon(self._on_turn)
        return future

    async def aclose(self) -> None:
        """Close the connection; submissions still waiting fail."""
        await cancel_and_wait([*self._side_tasks, *([self._connecting] if self._connecting else [])])
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._fail_all(RedisConnectionError("the submission connection was closed"))

    # -- sending -------------------------------------------------------------------------------
    def _on_turn(self) -> None:
        """A turn of the loop after a submission: with nothing in flight, send now; with a batch
        in Redis, send once a turn brought no more submissions (the server has nothing else to
        do), unless a reply or SEND_AT sent them first."""
        if self._inflight and len(self._inflight) < MAX_INFLIGHT and len(self._pending) != self._seen:
            self._seen = len(self._pending)
            assert self._loop is not None
            self._loop.call_soon(self._on_turn)
            return
        self._scheduled = False
        self._seen = -1
        if len(self._inflight) < MAX_INFLIGHT:
            self._send()

    def _send(self) -> None:
        """Send up to MAX_BATCH waiting submissions as one call."""
        batch = [p for p in self._pending[:MAX_BATCH] if not p[1].done()]
        del self._pending[:MAX_BATCH]
        if not batch:
            if self._pending:
                self._send()
            return
        count = self._head_args + self._args_per_task * len(batch)
        command = b"".join([array_header(count), self._head, *[task_args for task_args, _ in batch]])
        assert self._loop is not None
        self._inflight.append(_Batch(batch, command, self._loop.call_later(self._deadline, self._expire)))
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.write(command)
        else:
            self._reconnect()

    def _reconnect(self) -> None:
        """Open a connection unless one is on its way; it then sends every batch in flight."""
        if self._connecting is None:
            assert self._loop is not None
            self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await open_protocol(self._client, Replies(self._on_reply, self._on_lost))
        except Exception as exc:  # refused, timed out, authentication failed
            self._connecting = None
            self._fail_all(exc)
            return
        self._connecting = None
        self._conn = conn
        assert conn.transport is not None
        conn.transport.writelines([sent.command for sent in self._inflight])

    # -- receiving -----------------------------------------------------------------------------
    def _on_reply(self, conn: Replies, reply: Any) -> None:
        if conn is not self._conn or not self._inflight:
            return  # cannot happen: a connection is dropped as soon as a batch on it is given up
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            # Redis restarted (or SCRIPT FLUSH): drop the connection (the batches behind this one
            # get the same answer), load the script and send every batch in flight again
            self._conn = None
            conn.close()
            if self._resend_or_fail("noscript", reply):
                self._side_task(self._load_and_resend())
            return
        sent = self._inflight.popleft()
        sent.timer.cancel()
        if isinstance(reply, ResponseError):
            for _, future in sent.pending:
                if not future.done():
                    future.set_exception(reply)
        else:
            for (_, future), outcome, task_id in zip(sent.pending, reply[::2], reply[1::2], strict=True):
                if future.done():
                    continue
                if outcome == CONFLICT:
                    field = {"loc": ["body", "idempotency_key"], "msg": _REUSED_FIELD}
                    future.set_exception(Conflict(_REUSED, fields=[field]))
                elif outcome == LIMITED:  # the second item is the wait in ms
                    future.set_exception(RateLimited(SUBMIT_CLASS, task_id))
                else:
                    future.set_result(_make_submitted(Submitted, (task_id.decode(), outcome == 1)))
        if self._pending:
            self._send()

    def _on_lost(self, conn: Replies) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        # the script skips tasks it already recorded: sending a batch again is safe
        if self._resend_or_fail("lost", RedisConnectionError("Redis closed the connection")):
            self._reconnect()

    def _resend_or_fail(self, cause: str, exc: BaseException) -> bool:
        """Count one more send of each batch in flight; fail those sent RESENDS times again
        already. True when some are left to send."""
        keep: deque[_Batch] = deque()
        for sent in self._inflight:
            sends = sent.resends.get(cause, 0)
            if sends < RESENDS:
                sent.resends[cause] = sends + 1
                keep.append(sent)
            else:
                sent.timer.cancel()
                for _, future in sent.pending:
                    if not future.done():
                        future.set_exception(exc)
        self._inflight = keep
        return bool(keep)

    async def _load_and_resend(self) -> None:
        try:
            await self._client.script_load(script_source("submit"))
        except Exception as exc:
            self._fail_all(exc)
            return
        if self._inflight:
            self._reconnect()

    def _expire(self) -> None:
        """The oldest batch's deadline passed: it and everything waiting fail, and the
        connection is dropped (a late reply must not be taken for another batch's)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._fail_all(TimeoutError(f"Redis did not answer within {self._deadline:g} s"))

    # -- helpers -------------------------------------------------------------------------------
    def _fail_all(self, exc: BaseException) -> None:
        waiting = [p for sent in self._inflight for p in sent.pending] + self._pending
        for sent in self._inflight:
            sent.timer.cancel()
        self._inflight.clear()
        self._pending = []
        for _, future in waiting:
            if not future.done():
                future.set_exception(exc)

    def _side_task(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
