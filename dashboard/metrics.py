"""The dashboard's ``/metrics``: HTTP request durations by route, method and status.

Prometheus scrapes it with ``METRICS_TOKEN`` as a bearer token (the guard lets the request
through to this handler, which checks the token itself), or with an ``admin`` JWT.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dashboard.keys import SETTINGS
from shared.auth import Verifier
from shared.errors import AuthError
from shared.metrics import HttpMetrics, cancelled_status

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)
VERIFIER = web.AppKey("metrics_verifier", Verifier)
#: Path of the exposition (skips session auth; the token is checked here).
PATH = "/metrics"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    """Create the registry and register the route."""
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[HTTP_METRICS] = HttpMetrics(registry, "dashboard")
    app[VERIFIER] = Verifier(app[SETTINGS].jwt_key)
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


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; ``METRICS_TOKEN`` as bearer, or an admin token."""
    header = request.headers.get("Authorization", "")
    token = request.app[SETTINGS].metrics_token
    allowed = bool(token) and hmac.compare_digest(
        header.encode(), f"Bearer {token.get_secret_value() if token else ''}".encode()
    )
    if not allowed:
        try:
            allowed = request.app[VERIFIER].from_header(header or None).has("admin")
        except AuthError:
            allowed = False
    if not allowed:
        raise AuthError("METRICS_TOKEN or an admin token required")
    return web.Response(
        body=generate_latest(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
