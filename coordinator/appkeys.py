"""Typed keys for what the coordinator app holds, and the principal the edge puts on a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared.auth import Principal, Verifier
from shared.metrics import HttpMetrics, RateLimitMetrics
from shared.ratelimit import RateLimiter
from shared.settings import Settings
from shared.taskstore import TaskStore

if TYPE_CHECKING:
    from shared.transport.outbox import OutboxRelay

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
STORE = web.AppKey("store", TaskStore)
VERIFIER = web.AppKey("verifier", Verifier)
REGISTRY = web.AppKey("registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
LIMITER = web.AppKey("rate_limiter", RateLimiter)
RATE_METRICS = web.AppKey("rate_metrics", RateLimitMetrics)
#: The caller, set by :func:`coordinator.http.edge` from the route's declared scope before the view runs.
#: The outbox relay of this process (only with RabbitMQ as the broker).
RELAY: web.AppKey[OutboxRelay] = web.AppKey("relay")
PRINCIPAL = web.RequestKey("principal", Principal)
