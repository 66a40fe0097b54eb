"""``create_app(settings)``: the coordinator's aiohttp application."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from coordinator.http import MAX_BODY_BYTES, add_fallbacks, edge
from coordinator.keys import HTTP_METRICS, REDIS, REGISTRY, SETTINGS, STORE, VERIFIER
from coordinator.routes import ENDPOINTS, add_routes
from coordinator.waiter import waiter_ctx
from shared.auth import Verifier
from shared.metrics import HttpMetrics
from shared.redis import WaitingPool, async_client
from shared.settings import Settings
from shared.taskstore import TaskStore
from shared.web import REDIS_METRICS, json_parser_errors, setup_redis_metrics

#: (method, path) of the routes that take ``?wait=`` (their waiting requests are long-polls).
LONG_POLLS = frozenset(
    (ep.method, ep.path) for ep in ENDPOINTS if ep.query is not None and "wait" in ep.query.model_fields
)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = async_client(app[SETTINGS])
    app[REDIS] = client
    assert isinstance(client.connection_pool, WaitingPool)
    app[REDIS_METRICS].pool = client.connection_pool
    app[STORE] = TaskStore(client, app[SETTINGS])
    yield
    await app[STORE].aclose()
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
    app.on_startup.append(_freeze_heap)
    add_routes(
        app,
        ENDPOINTS,
        wrap=lambda handler, path, method: edge(
            handler, path, metrics, method, long_polls=(method, path) in LONG_POLLS
        ),
    )
    add_fallbacks(app, metrics)
    return app
