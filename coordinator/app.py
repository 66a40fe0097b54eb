"""``create_app(settings)``: the coordinator's aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from coordinator.http import MAX_BODY_BYTES, edge_middleware
from coordinator.keys import HTTP_METRICS, REDIS, REGISTRY, SETTINGS, STORE, VERIFIER
from coordinator.routes import ENDPOINTS, add_routes
from coordinator.store import TaskStore
from shared.auth import Verifier
from shared.metrics import HttpMetrics
from shared.redis import async_client
from shared.settings import Settings


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = async_client(app[SETTINGS])
    app[REDIS] = client
    app[STORE] = TaskStore(client, app[SETTINGS])
    yield
    await client.aclose()


def create_app(settings: Settings) -> web.Application:
    """Build the coordinator app; Redis is connected lazily, so it starts even while Redis is down."""
    app = web.Application(middlewares=[edge_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[VERIFIER] = Verifier(settings.jwt_key)
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[HTTP_METRICS] = HttpMetrics(registry, "coordinator")
    app.cleanup_ctx.append(_redis_ctx)
    add_routes(app, ENDPOINTS)
    return app
