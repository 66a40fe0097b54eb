"""``create_app(settings)``: the coordinator's aiohttp application."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from coordinator.appkeys import (
    HTTP_METRICS,
    LIMITER,
    RATE_METRICS,
    REDIS,
    REGISTRY,
    RELAY,
    SETTINGS,
    STORE,
    VERIFIER,
)
from coordinator.http import MAX_BODY_BYTES, Guard, Handler, add_fallbacks, bearer_guard, edge, rate_limited
from coordinator.routes import ENDPOINTS, GUARDS, RATE_CLASSES, add_routes
from coordinator.waiter import waiter_ctx
from shared.auth import Verifier
from shared.metrics import HttpMetrics, RateLimitMetrics
from shared.ratelimit import ROUTE_CLASSES, RateLimiter
from shared.redis import WaitingPool, async_client
from shared.settings import Settings
from shared.taskstore import TaskStore
from shared.web import REDIS_METRICS, json_parser_errors, setup_redis_metrics

#: (method, path) of the routes that take ``?wait=`` (their waiting requests are long-polls).
LONG_POLLS = frozenset(
    (ep.method, ep.path) for ep in ENDPOINTS if ep.query is not None and "wait" in ep.query.model_fields
)
#: Routes that check their rate limit themselves: POST /api/v1/tasks inside submit.lua's batch
#: (no round trip of its own), /ws/chat once per message (not per upgrade).
SELF_LIMITED = frozenset({("POST", "/api/v1/tasks"), ("GET", "/ws/chat")})
#: The declared scope of each route (None: public), enforced by its edge.
_SCOPES = {(ep.method, ep.path): ep.scope for ep in ENDPOINTS}


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = async_client(app[SETTINGS])
    app[REDIS] = client
    assert isinstance(client.connection_pool, WaitingPool)
    app[REDIS_METRICS].pool = client.connection_pool
    app[STORE] = TaskStore(client, app[SETTINGS])
    app[LIMITER] = RateLimiter(client, app[STORE].keys, app[SETTINGS].rate_limits)
    yield
    await app[STORE].aclose()
    await client.aclose()


async def _relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """With RabbitMQ as the broker: this process's outbox relay (shared.transport.outbox)."""
    from shared.aio import cancel_and_wait
    from shared.transport.outbox import relay_for

    client = async_client(app[SETTINGS], max_connections=4)  # its blocking reads wait on their own
    app[RELAY] = relay = relay_for(app[SETTINGS], client)
    task = asyncio.create_task(relay.run(), name="outbox-relay")
    yield
    await cancel_and_wait([task])
    await client.aclose()


async def _freeze_heap(app: web.Application) -> None:
    """Move everything built at start-up out of the garbage collector's sight: the app's
    long-lived objects (models, routes, clients) are never garbage, and collections that
    traverse them cost a measurable share of each request."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> web.Application:
    """Build the coordinator app; Redis is connected lazily, so it starts even while Redis is down."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)  # no middleware: see coordinator.http.edge
    app[SETTINGS] = settings
    app[VERIFIER] = Verifier(settings.jwt_key)
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    metrics = app[HTTP_METRICS] = HttpMetrics(registry, "coordinator")
    setup_redis_metrics(app, registry, "coordinator", settings)  # opsdeck_redis_up and its probe
    json_parser_errors(app)  # aiohttp's own 400s (oversize headers) in the JSON error shape
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(waiter_ctx)  # one task-end listener per process (chat ?wait)
    if settings.rabbitmq:
        app.cleanup_ctx.append(_relay_ctx)
    app.on_startup.append(_freeze_heap)
    app[RATE_METRICS] = RateLimitMetrics(registry, "coordinator", ROUTE_CLASSES)
    limits = settings.rate_limits

    def wrap(handler: Handler, path: str, method: str) -> Handler:
        route = (method, path)
        scope = _SCOPES[route]
        guard: Guard | None = None
        if scope is not None:  # "" (any valid token) checks no scope
            guard = GUARDS.get(route, bearer_guard)(settings, app[VERIFIER], scope or None)
        route_class = RATE_CLASSES.get(route)
        if route_class in limits and route not in SELF_LIMITED:
            handler = rate_limited(handler, route_class)  # inside the edge: after its guard
        return edge(handler, path, metrics, method, long_polls=route in LONG_POLLS, guard=guard)

    add_routes(app, ENDPOINTS, wrap=wrap)
    add_fallbacks(app, metrics)
    return app
