"""Redis client factories: asyncio clients for the web apps, sync clients for Dramatiq.

Timeouts are short and retries off, so a Redis outage surfaces within ``REDIS_TIMEOUT``
seconds as an error the caller maps to 503, never as a hang.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings import Settings


def _options(settings: Settings) -> dict[str, object]:
    return {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": min(settings.redis_timeout, 1.0),
        "health_check_interval": 30,
    }


def async_client(settings: Settings, *, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio client with a bounded pool; a command on a connection that died is retried
    once on a fresh one (the callers' deadlines still bound the total time)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    return aioredis.Redis.from_url(
        settings.effective_redis_url,
        max_connections=max_connections,
        retry=AsyncRetry(NoBackoff(), 1),
        **_options(settings),
    )


def sync_client(settings: Settings, *, retries: int = 0, **extra: object) -> redis.Redis:
    """A synchronous client (Dramatiq's broker and the worker's task store use these)."""
    return redis.Redis.from_url(
        settings.effective_redis_url,
        retry=Retry(NoBackoff(), retries),
        **{**_options(settings), **extra},
    )
