"""The dashboard's ``/metrics``: HTTP request durations by route, method and status.

Prometheus scrapes it with ``METRICS_TOKEN`` as a bearer token or with an ``admin`` JWT (the
guard checks either, as the route table says).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from shared.metrics import HttpMetrics, cancelled_status, exposition_handler

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
#: Path of the exposition (no session: the guard checks the token).
PATH = "/metrics"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    """Create the registry and register the route."""
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[HTTP_METRICS] = HttpMetrics(registry, "dashboard")
    app.router.add_get(PATH, metrics)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request (outermost middleware, so errors are counted with their status)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:  # the client went away (a WebSocket session ends so)
        status = cancelled_status(request.headers)
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[HTTP_METRICS].observe(request.method, route, status, time.perf_counter() - started)


#: Prometheus exposition; the guard lets only ``METRICS_TOKEN`` or an admin token through.
metrics = exposition_handler(REGISTRY)
