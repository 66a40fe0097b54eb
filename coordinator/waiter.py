"""Wait for tasks to end: ONE listener per coordinator process, futures per awaited task id.

``POST /api/v1/chat?wait=S`` and ``/ws/chat`` need to know when a coach task has ended. Polling
the record per request would cost a round trip per request per poll; instead one background
task reads the task lifecycle stream (``Keys.task_events``, written atomically with every status
change) with ``XREAD BLOCK`` and resolves the futures of the task ids being awaited.

The listener reads only while someone waits. When the first waiter arrives it *anchors* the
listener at the stream's current last entry, then reads the task's status once: an end before
the anchor shows in that read, an end after it arrives through the stream, so nothing is missed
and nothing is read while nobody waits. The listener has its own connection (a blocking read
holds it) and survives Redis outages (waiters then time out and the API answers 202).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web

from coordinator.appkeys import REDIS, SETTINGS
from shared.aio import cancel_and_wait
from shared.keys import Keys
from shared.redis import async_client
from shared.tasks import TERMINAL_STATUSES

log = logging.getLogger(__name__)

_TERMINAL = frozenset(s.value.encode() for s in TERMINAL_STATUSES)
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)


class TaskWaiter:
    """Futures for awaited task ids, resolved by one stream reader (module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        stream_client: aioredis.Redis | None = None,
        block_ms: int = 1000,
    ) -> None:
        self.client = client
        self.stream_client = stream_client or client
        self.keys = keys
        self.block_ms = block_ms
        self._waiters: dict[str, set[asyncio.Future[str]]] = {}
        self._last_id: bytes | None = None
        self._wake = asyncio.Event()
        self._anchoring = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # XREAD calls made (tests check the listener idles)

    @property
    def waiting(self) -> int:
        """Task ids awaited right now."""
        return len(self._waiters)

    def start(self) -> None:
        """Start the listener task."""
        self._task = asyncio.create_task(self._listen(), name="task-waiter")

    async def stop(self) -> None:
        """Stop the listener; pending waiters time out as usual."""
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def wait(self, task_id: str, seconds: float) -> str | None:
        """The task's terminal status once it ends within ``seconds``, else None (also on Redis errors)."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(fut)
        try:
            async with asyncio.timeout(seconds):
                await self._anchor()
                status = await self.client.hget(self.keys.task(task_id), "status")
                if status in _TERMINAL:
                    return bytes(status).decode()
                return await fut
        except (TimeoutError, *_REDIS_ERRORS):
            return None
        finally:
            futs = self._waiters.get(task_id)
            if futs is not None:
                futs.discard(fut)
                if not futs:
                    del self._waiters[task_id]

    async def _anchor(self) -> None:
        if self._last_id is not None:
            return
        async with self._anchoring:
            if self._last_id is None:
                last = await self.client.xrevrange(self.keys.task_events, count=1)
                self._last_id = last[0][0] if last else b"0-0"
                self._wake.set()

    async def _listen(self) -> None:
        while True:
            if not self._waiters:
                self._last_id = None  # idle: the next waiter anchors afresh
            if self._last_id is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                self.reads += 1
                replies = await self.stream_client.xread(
                    {self.keys.task_events: self._last_id}, count=1000, block=self.block_ms
                )
            except _REDIS_ERRORS as exc:
                log.warning("task event stream unreadable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for _stream, entries in replies:
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    status = fields.get(b"status")
                    if status not in _TERMINAL:
                        continue
                    for fut in self._waiters.get(fields.get(b"id", b"").decode(), ()):
                        if not fut.done():
                            fut.set_result(status.decode())


WAITER = web.AppKey("task_waiter", TaskWaiter)


async def waiter_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the app's Redis client): the process's one task waiter. Its blocking
    stream read has a connection of its own; status reads share the app's pool."""
    settings = app[SETTINGS]
    client = async_client(settings, max_connections=2)
    block_ms = max(50, int(settings.redis_timeout * 1000 / 2))
    keys = settings.keys
    waiter = TaskWaiter(app[REDIS], keys, stream_client=client, block_ms=block_ms)
    app[WAITER] = waiter
    waiter.start()
    yield
    await waiter.stop()
    await client.aclose()
