"""``/metrics`` and ``/openapi.json``."""

from __future__ import annotations

from aiohttp import web

from coordinator.appkeys import REGISTRY
from coordinator.http import json_response
from shared.metrics import exposition_handler

#: Prometheus exposition; needs ``METRICS_TOKEN`` as bearer, or an admin token
#: (:func:`coordinator.http.metrics_guard`).
metrics = exposition_handler(REGISTRY)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document generated from the route table and its models."""
    from coordinator.openapi import build_openapi

    return json_response(build_openapi())
