"""HTTP edge helpers: JSON errors, body parsing, authorization, and the per-route edge tying them up.

A route's scope is declared once, in :data:`coordinator.routes.ENDPOINTS`; :func:`edge` checks it
with the route's :data:`Guard` before the view runs and hands the view the caller as
``request[PRINCIPAL]`` (starlette's ``requires(scopes)``, as a wrapper per route)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from multidict import istr
from pydantic import BaseModel, ValidationError

from coordinator.appkeys import LIMITER, PRINCIPAL, RATE_METRICS, SETTINGS
from shared.auth import Principal, Verifier
from shared.errors import AuthError, ScopeError, ValidationFailed, pydantic_fields
from shared.ids import random_hex
from shared.jsondepth import check_depth
from shared.logging import CORRELATION_ID
from shared.metrics import HttpMetrics, cancelled_status
from shared.ratelimit import RateLimited
from shared.settings import Settings
from shared.web import (
    MAX_BODY_BYTES,
    REDIS_DOWN,
    error_response,
    exception_response,
    json_response,
    parse_query,
)

log = logging.getLogger(__name__)

#: Accepted shape of an incoming X-Request-ID (anything else is replaced by a fresh id).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

JSON_TYPE = "application/json"
X_REQUEST_ID = istr("X-Request-ID")
perf_counter = time.perf_counter
Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Checks a request's credentials against its route's scope: the principal, or AuthError (401) /
#: ScopeError (403). Built once per route by a :data:`GuardFactory` from the declared scope.
Guard = Callable[[web.Request], Principal]
#: ``factory(settings, verifier, scope)``: the guard of a route declaring ``scope`` (None: any
#: valid token); how the caller presents its credentials differs by route, the scope never does.
GuardFactory = Callable[[Settings, Verifier, str | None], Guard]


async def read_body(request: web.Request) -> bytes:
    """The raw body of a JSON request: 415 unless it is ``application/json``, 413 beyond
    MAX_BODY_BYTES. A body the parser already holds whole (any small request) is taken as it
    is, without aiohttp's read loop."""
    # the exact header is the common case: only parse it (parameters, case) when it differs
    if request.headers.get("Content-Type") != JSON_TYPE and request.content_type != JSON_TYPE:
        raise web.HTTPUnsupportedMediaType(reason="Content-Type must be application/json")
    content = request.content
    if not content.is_eof():
        return await request.read()  # 413 beyond the app's client_max_size (MAX_BODY_BYTES)
    body = content.read_nowait()
    if len(body) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(body))
    return body


async def read_json(request: web.Request, model: type[Model]) -> Model:
    """Parse and validate a JSON body in one pass (pydantic-core): 415, 413, 400 or 422 on bad
    input (:func:`shared.web.read_json` is the dashboard's form)."""
    body = await read_body(request)
    check_depth(body)  # 422 past MAX_JSON_DEPTH, before pydantic parses (shared.jsondepth)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise web.HTTPBadRequest(reason=f"malformed JSON: {first['msg']}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise ValidationFailed(
                "body must be a JSON object", fields=[{"loc": ["body"], "msg": "expected an object"}]
            ) from None
        raise ValidationFailed("request body is invalid", fields=pydantic_fields(exc, "body")) from None


def bearer_guard(settings: Settings, verifier: Verifier, scope: str | None) -> Guard:
    """The guard of an ordinary route: ``Authorization: Bearer`` holding ``scope`` (a header
    verified before costs one dict lookup: :meth:`Verifier.authorize`)."""
    authorize = verifier.authorize

    def guard(request: web.Request) -> Principal:
        return authorize(request.headers.get(hdrs.AUTHORIZATION), scope)

    return guard


def websocket_guard(settings: Settings, verifier: Verifier, scope: str | None) -> Guard:
    """The guard of a WebSocket route: the bearer token from the Authorization header, else from
    ``?token=`` (browsers cannot set headers on a WebSocket); 401 / 403 like every route.
    Cross-origin browser pages are refused (403)."""
    authorize = verifier.authorize

    def guard(request: web.Request) -> Principal:
        header = request.headers.get(hdrs.AUTHORIZATION)
        token = request.query.get("token")
        if header is None and token:
            header = f"Bearer {token}"
        principal = authorize(header, scope)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise ScopeError("cross-origin WebSocket refused: Origin must match the Host")
        return principal

    return guard


def metrics_guard(settings: Settings, verifier: Verifier, scope: str | None) -> Guard:
    """The guard of ``/metrics``: ``METRICS_TOKEN`` as bearer (compared in constant time), else a
    token holding ``scope`` (admin)."""
    authorize = verifier.authorize
    secret = settings.metrics_token
    expected = f"Bearer {secret.get_secret_value()}".encode() if secret else None
    scraper = Principal("metrics", frozenset(), math.inf)

    def guard(request: web.Request) -> Principal:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if expected is not None and hmac.compare_digest((header or "").encode(), expected):
            return scraper
        return authorize(header, scope)

    return guard


def correlation_id(request: web.Request) -> str:
    """The request's correlation id (from X-Request-ID, or generated by :func:`edge`)."""
    return CORRELATION_ID.get()


def waiting(request: web.Request) -> bool:
    """True when the request asks to wait (``?wait=S`` with S > 0): a long-poll."""
    value = request.query.get("wait")
    if not value:
        return False
    try:
        return float(value) > 0
    except ValueError:
        return False


def edge(
    handler: Handler,
    path: str,
    metrics: HttpMetrics,
    method: str | None = None,
    *,
    long_polls: bool = False,
    guard: Guard | None = None,
) -> Handler:
    """``handler`` wrapped with the coordinator's edge: correlation id, authorization, JSON
    errors, 503 on Redis failures (:func:`shared.web.redis_refusal`) and request metrics
    (labelled ``path``, the route's canonical path, and ``method``, the route's method: the
    request's when None).

    ``guard``: the route's credential check for its declared scope (None: a public route); its
    principal is ``request[PRINCIPAL]`` when the handler runs, its 401 / 403 answered here.

    ``long_polls``: the route takes ``?wait=``; a request that waits is timed in the long-request
    histogram, not in the latency one (as WebSocket sessions are: :class:`HttpMetrics`).

    A wrapper per route rather than an aiohttp middleware: a middleware chain costs the hot path
    two more coroutine frames per request (the chain's own and aiohttp's current-app fix-up), and
    unmatched paths and methods reach the same wrapper through :func:`add_fallbacks`."""
    observe, observe_long = metrics.observe, metrics.observe_long

    async def edged(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get(X_REQUEST_ID)
        cid = incoming if incoming and _REQUEST_ID.match(incoming) else random_hex()
        # aiohttp runs each request in a task of its own (a copied context), so what one request
        # sets never reaches the next one on a keep-alive connection: nothing to clear here.
        CORRELATION_ID.set(cid)
        started = perf_counter()
        response: web.StreamResponse
        try:
            if guard is not None:
                request[PRINCIPAL] = guard(request)
            response = await handler(request)
        except asyncio.CancelledError:  # the client went away (a WebSocket session ends so)
            status = cancelled_status(request.headers)
            observe(method or request.method, path, status, perf_counter() - started)
            raise
        except Exception as exc:  # CancelledError is no Exception: it goes on up
            if isinstance(exc, RateLimited):
                request.app[RATE_METRICS].count(exc.route_class)
            response = exception_response(request, exc, path)
        response.headers[X_REQUEST_ID] = cid
        if long_polls and waiting(request):
            observe_long(method or request.method, path, response.status, perf_counter() - started)
        else:
            observe(method or request.method, path, response.status, perf_counter() - started)
        return response

    return edged


def rate_limited(handler: Handler, route_class: str) -> Handler:
    """``handler`` behind its subject's bucket of ``route_class`` (:mod:`shared.ratelimit`), for
    use inside :func:`edge`: the edge has authorized the caller already (401, 403 win over 429),
    this charges ``request[PRINCIPAL]`` one token by one ``ratelimit.lua`` call (429
    ``rate_limited`` with ``Retry-After`` through :func:`edge` when the bucket is empty), then
    the handler runs. Routes of a class without a bucket are not wrapped."""

    async def limited(request: web.Request) -> web.StreamResponse:
        async with redis_deadline(request):
            await request.app[LIMITER].check(request[PRINCIPAL].subject, route_class)
        return await handler(request)

    return limited


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def add_fallbacks(app: web.Application, metrics: HttpMetrics) -> None:
    """JSON 405s (with Allow) for undeclared methods of every route's path, and a JSON 404 for
    every other path, both through :func:`edge` (without a middleware aiohttp would answer them
    in plain text). Call after the routes; the fallbacks use the method ``*``."""
    for resource in list(app.router.resources()):
        assert isinstance(resource, web.Resource)  # add_routes makes plain and dynamic resources only
        allowed = {route.method for route in resource}

        async def not_allowed(request: web.Request, allowed: set[str] = allowed) -> web.StreamResponse:
            raise web.HTTPMethodNotAllowed(request.method, allowed)

        resource.add_route(hdrs.METH_ANY, edge(not_allowed, resource.canonical, metrics))
    app.router.add_route(hdrs.METH_ANY, "/{path:.*}", edge(_not_found, "unmatched", metrics))


def redis_deadline(request: web.Request) -> asyncio.Timeout:
    """A deadline for Redis work inside a handler, so an outage answers 503 within ~2 s
    (submissions get theirs from the SubmitBatcher: one timer per batch, not per request)."""
    return asyncio.timeout(request.app[SETTINGS].redis_timeout + 0.4)


__all__ = [
    "MAX_BODY_BYTES",
    "REDIS_DOWN",
    "AuthError",
    "add_fallbacks",
    "bearer_guard",
    "correlation_id",
    "edge",
    "error_response",
    "json_response",
    "metrics_guard",
    "parse_query",
    "pydantic_fields",
    "rate_limited",
    "read_body",
    "read_json",
    "redis_deadline",
    "websocket_guard",
]
