"""``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordinator.http import authorize, json_response
from coordinator.keys import REGISTRY, SETTINGS


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; needs ``METRICS_TOKEN`` as bearer, or an admin token."""
    token = request.app[SETTINGS].metrics_token
    header = request.headers.get("Authorization", "")
    if not (token and hmac.compare_digest(header.encode(), f"Bearer {token.get_secret_value()}".encode())):
        authorize(request, "admin")
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document generated from the route table and its models."""
    from coordinator.openapi import build_openapi

    authorize(request, None)
    return json_response(build_openapi())
