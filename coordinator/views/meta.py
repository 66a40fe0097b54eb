"""``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordinator.http import json_response
from coordinator.keys import REGISTRY


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; needs ``METRICS_TOKEN`` as bearer, or an admin token
    (:func:`coordinator.http.metrics_guard`)."""
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document generated from the route table and its models."""
    from coordinator.openapi import build_openapi

    return json_response(build_openapi())
