"""HTTP edge helpers: JSON errors, body parsing, authorization, and the middleware tying them up."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sentry_sdk
from aiohttp import web
from pydantic import BaseModel, ValidationError

from coordinator.keys import CORRELATION_ID, HTTP_METRICS, SETTINGS, VERIFIER
from shared.auth import Principal
from shared.errors import AuthError, OpsdeckError, Unavailable, ValidationFailed
from shared.ids import random_hex
from shared.logging import bind_contextvars
from shared.web import (
    MAX_BODY_BYTES,
    REDIS_DOWN,
    error_response,
    json_response,
    parse_query,
    pydantic_fields,
)

log = logging.getLogger(__name__)

#: Accepted shape of an incoming X-Request-ID (anything else is replaced by a fresh id).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

JSON_TYPE = "application/json"
Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def read_json(request: web.Request, model: type[Model]) -> Model:
    """Parse and validate a JSON body in one pass (pydantic-core): 415, 413, 400 or 422 on bad
    input. The coordinator's hot path; :func:`shared.web.read_json` is the general form."""
    # the exact header is the common case: only parse it (parameters, case) when it differs
    exact = request.headers.get("Content-Type") == JSON_TYPE
    if not exact and request.content_type != JSON_TYPE:
        raise web.HTTPUnsupportedMediaType(reason="Content-Type must be application/json")
    body = await request.read()  # 413 beyond the app's client_max_size (MAX_BODY_BYTES)
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


def authorize(request: web.Request, scope: str | None) -> Principal:
    """The caller's principal; 401 without a valid token, 403 without ``scope``."""
    return request.app[VERIFIER].authorize(request.headers.get("Authorization"), scope)


def correlation_id(request: web.Request) -> str:
    """The request's correlation id (from X-Request-ID, or generated)."""
    return request[CORRELATION_ID]


class RateLimitedWarning:
    """Logs an outage once per ``interval`` seconds with a count, not once per request."""

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self.message = message
        self.interval = interval
        self._last = 0.0
        self._suppressed = 0

    def warn(self, detail: str) -> None:
        """Log now, or count the occurrence for the next line."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        log.warning("%s (%s; %d more since the last report)", self.message, detail, self._suppressed)
        self._last, self._suppressed = now, 0


_outage_log = RateLimitedWarning("redis unavailable: answering 503")

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}  # fmt: skip


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Correlation id, JSON errors, 503 on Redis outages and request metrics."""
    incoming = request.headers.get("X-Request-ID", "")
    cid = request[CORRELATION_ID] = incoming if incoming and _REQUEST_ID.match(incoming) else random_hex()
    # aiohttp runs each request in a task of its own (a copied context), so what one request
    # binds never reaches the next one on a keep-alive connection: nothing to clear here.
    bind_contextvars(correlation_id=cid)
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except OpsdeckError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.fields)
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = _HTTP_CODES.get(exc.status, "http_error")
            message = exc.reason if exc.status != 413 else f"body exceeds {MAX_BODY_BYTES} bytes"
            response = error_response(exc.status, code, message)
            if "Allow" in exc.headers:  # 405 must say what is allowed (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
        else:
            raise
    except REDIS_DOWN as exc:
        _outage_log.warn(type(exc).__name__)
        response = error_response(503, Unavailable.code, "Redis is unavailable; try again shortly")
        response.headers["Retry-After"] = "2"
    except asyncio.CancelledError:
        raise
    except Exception:
        route = request.match_info.route.resource
        bind_contextvars(route=route.canonical if route is not None else request.path)
        log.exception("unhandled error on %s %s", request.method, request.path)
        sentry_sdk.capture_exception()
        response = error_response(500, "internal_error", "internal error; see the server log")
    response.headers["X-Request-ID"] = request[CORRELATION_ID]
    route = request.match_info.route.resource
    path = route.canonical if route is not None else "unmatched"
    request.app[HTTP_METRICS].observe(request.method, path, response.status, time.perf_counter() - started)
    return response


def redis_deadline(request: web.Request) -> asyncio.Timeout:
    """A deadline for Redis work inside a handler, so an outage answers 503 within ~2 s
    (submissions get theirs from the SubmitBatcher: one timer per batch, not per request)."""
    return asyncio.timeout(request.app[SETTINGS].redis_timeout + 0.4)


__all__ = [
    "MAX_BODY_BYTES",
    "REDIS_DOWN",
    "AuthError",
    "authorize",
    "correlation_id",
    "edge_middleware",
    "error_response",
    "json_response",
    "parse_query",
    "pydantic_fields",
    "read_json",
    "redis_deadline",
]
