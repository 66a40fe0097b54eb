"""Coalesce concurrent task submissions into one Lua call per round trip.

Each request awaits its own outcome, but while one call is in flight the submissions of other
requests queue up and go out together in the next one (``shared/lua/submit.lua`` takes a
batch). Idle, a submission goes out at once; loaded, one round trip, one command and one reply
carry up to MAX_BATCH submissions. Each submission arrives packed already (its arguments as
RESP bulk strings, :mod:`shared.resp`): a batch is a header and the chunks joined.

The script also settles idempotency replays: an id seen before comes back with the first task's
id, or as a conflict when that task was asked for with a different request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from shared.errors import Conflict
from shared.resp import array_header, bulk
from shared.store import script_sha, script_source

#: Most submissions sent in one call.
MAX_BATCH = 256
#: submit.lua's outcome of a submission whose idempotency key names a different request.
CONFLICT = -1


class Submitted(NamedTuple):
    """Outcome of a submission: the task id and whether this call created it."""

    task_id: str
    created: bool


Pending = tuple[bytes, "asyncio.Future[Submitted]"]
_REUSED = "idempotency_key was already used for a different request"
_REUSED_FIELD = "reused with a different request"
#: Builds a Submitted without its Python-level ``__new__`` (one per request on the hot path).
_make_submitted = tuple.__new__


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
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, task_args: bytes) -> asyncio.Future[Submitted]:
        """Queue one task's arguments (``args_per_task`` bulk strings, :func:`shared.resp.bulk`)
        for the next call. The future resolves to its outcome:
        Conflict when its idempotency key was used for a different request, the call's error when
        Redis fails or the deadline passes."""
        loop = self._loop
        if loop is None:  # asyncio.get_running_loop() makes a getpid system call: once is enough
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Submitted] = asyncio.Future(loop=loop)
        self._pending.append((task_args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        while self._pending:
            await self._flush_batch()

    async def _flush_batch(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        live = [p for p in batch if not p[1].done()]
        if not live:
            return
        try:
            async with asyncio.timeout(self._deadline):
                reply = await self._call(live)
        except Exception as exc:  # refused, timed out: this batch and all waiting get the error,
            live += self._pending  # so an outage answers everyone within one deadline
            self._pending = []
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome, task_id in zip(live, reply[::2], reply[1::2], strict=True):
            if future.done():
                continue
            if outcome == CONFLICT:
                future.set_exception(
                    Conflict(_REUSED, fields=[{"loc": ["body", "idempotency_key"], "msg": _REUSED_FIELD}])
                )
            else:
                future.set_result(_make_submitted(Submitted, (task_id.decode(), outcome == 1)))

    async def _call(self, batch: list[Pending]) -> list[Any]:
        count = self._head_args + self._args_per_task * len(batch)
        command = b"".join([array_header(count), self._head, *[task_args for task_args, _ in batch]])
        try:
            return await self._send(command)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH): load it and send again
            await self._client.script_load(script_source("submit"))
            return await self._send(command)
        except (ConnectionError, RedisConnectionError):
            # A pooled connection that died under us (Redis restarted, a proxy reset it). The
            # script skips tasks it already recorded, so sending the batch again is safe.
            return await self._send(command)

    async def _send(self, command: bytes) -> list[Any]:
        pool = self._client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(command, check_health=False)
            reply = await conn.read_response()
        except NoScriptError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if isinstance(reply, Exception):  # pragma: no cover - read_response raises error replies
            raise reply
        return list(reply)
