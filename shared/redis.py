"""Redis client factories: asyncio clients for the web apps, sync clients for Dramatiq.

Timeouts are short and retries off, so a Redis outage surfaces within ``REDIS_TIMEOUT``
seconds as an error the caller maps to 503, never as a hang.

The web apps' pools are bounded and *wait*: a request that finds every connection in use waits
for one, in arrival order (up to ``REDIS_TIMEOUT``), instead of failing at once, so a burst of
requests larger than the pool is served, not answered as an outage. Only a request that waited
the whole time is shed, with :class:`PoolExhausted` (the edge answers 503 ``overloaded``, see
:func:`shared.web.redis_refusal`). The pool counts both (:class:`WaitingPool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings import Settings


class PoolExhausted(redis.exceptions.ConnectionError):  # type: ignore[misc]  # redis is untyped here
    """Every connection of the pool stayed in use for the whole wait: the process sheds load
    (Redis itself may be fine). A ConnectionError, so code that treats any Redis failure alike
    still does; the edge tells it apart (503 ``overloaded``, not ``unavailable``)."""


class WaitingPool(aioredis.ConnectionPool):  # type: ignore[misc]  # redis is untyped here
    """A bounded pool whose checkouts wait, in arrival order, for a connection to come back.

    redis-py's own BlockingConnectionPool serialises every checkout and every release on one
    asyncio Condition (its lock changes hands once per turn of the event loop), so under a burst
    the pool hands out about one connection per turn and requests wait for the lock, not for
    Redis. Here a checkout that finds a connection free takes it at once; otherwise it queues a
    future, and each release hands its connection's place to the oldest waiter directly (the
    place is reserved, so no later checkout takes it first). A waiter whose ``timeout`` passes
    is shed (PoolExhausted). The pool counts the checkouts that waited and those it shed."""

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Seconds a checkout waits for a connection before it is shed.
        self.timeout = timeout
        #: Checkouts that found every connection in use and waited for one.
        self.waits = 0
        #: Checkouts that waited ``timeout`` seconds in vain (PoolExhausted).
        self.sheds = 0
        self._turns: deque[asyncio.Future[None]] = deque()
        #: Places handed to a waiter that has not taken its connection yet.
        self._reserved = 0

    @property
    def in_use(self) -> int:
        """Connections checked out right now."""
        return len(self._in_use_connections)

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        """A connection, waiting up to ``timeout`` seconds for one; PoolExhausted after that."""
        if self._turns or self._reserved or not self.can_get_connection():
            await self._wait_for_a_place()
        return await super().get_connection()

    async def release(self, connection: Any) -> None:
        """Put the connection back, and hand its place to the oldest waiter."""
        await super().release(connection)
        self._hand_on()

    async def _wait_for_a_place(self) -> None:
        self.waits += 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        try:
            async with asyncio.timeout(self.timeout):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self._reserved -= 1  # a place came just as this checkout gave up: pass it on
                self._hand_on()
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):  # a cancelled turn may have been skipped already
                    self._turns.remove(turn)
            if isinstance(exc, TimeoutError):
                self.sheds += 1
                raise PoolExhausted(
                    f"all {self.max_connections} Redis connections stayed in use for {self.timeout:g} s"
                ) from None
            raise
        self._reserved -= 1

    def _hand_on(self) -> None:
        """Give one free place to the oldest waiter, if any waits."""
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():
                self._reserved += 1
                turn.set_result(None)
                return


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": min(settings.redis_timeout, 1.0),
        "health_check_interval": 30,
    }


def async_client(settings: Settings, *, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio client on a :class:`WaitingPool` of ``max_connections`` (a checkout waits up to
    ``REDIS_TIMEOUT`` for a free connection); a command on a connection that died is retried
    once on a fresh one (the callers' deadlines still bound the total time)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    pool = WaitingPool.from_url(
        settings.effective_redis_url,
        max_connections=max_connections,
        timeout=settings.redis_timeout,
        retry=AsyncRetry(NoBackoff(), 1),
        **_options(settings),
    )
    return aioredis.Redis.from_pool(pool)


def sync_client(settings: Settings, *, retries: int = 0, **extra: object) -> redis.Redis:
    """A synchronous client (Dramatiq's broker and the worker's task store use these)."""
    return redis.Redis.from_url(
        settings.effective_redis_url,
        retry=Retry(NoBackoff(), retries),
        **{**_options(settings), **extra},
    )


class RedisStatus(NamedTuple):
    """What one check of Redis found (:func:`check_redis`)."""

    #: Why PING failed (unreachable, timed out, or refused: LOADING, BUSY, MASTERDOWN); None = answered.
    error: BaseException | None
    #: Seconds the check took.
    latency: float
    #: ``used_memory`` and ``maxmemory`` of INFO memory (bytes; maxmemory 0 = no limit), when read.
    used_memory: int | None = None
    maxmemory: int | None = None

    @property
    def out_of_memory(self) -> bool:
        """True when Redis has reached its maxmemory (with noeviction it refuses writes)."""
        return bool(self.maxmemory and self.used_memory is not None and self.used_memory >= self.maxmemory)


async def check_redis(client: aioredis.Redis, deadline: float) -> RedisStatus:
    """PING and INFO memory in one round trip, within ``deadline`` seconds; never raises (but cancels)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline), client.pipeline(transaction=False) as pipe:
            pipe.ping()
            pipe.info("memory")
            pong, info = await pipe.execute(raise_on_error=False)
    except Exception as exc:  # unreachable, timed out: nothing was answered
        return RedisStatus(exc, time.perf_counter() - started)
    latency = time.perf_counter() - started
    error = pong if isinstance(pong, BaseException) else None
    if not isinstance(info, dict):  # INFO answers even while loading; anything else: no figures
        return RedisStatus(error, latency)
    return RedisStatus(error, latency, int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
