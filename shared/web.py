"""aiohttp helpers shared by the web apps: JSON answers, the error shape, body and query parsing.

Errors are JSON ``{"error": {"code", "message", "fields": [...]}}`` (the coordinator's shape);
:func:`error_middleware` maps the Opsdeck error tree, HTTP errors and Redis outages onto it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.exceptions
from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import OpsdeckError, ValidationFailed, pydantic_fields

log = logging.getLogger(__name__)

#: Largest accepted JSON request body.
MAX_BODY_BYTES = 64 * 1024
#: Errors that mean Redis could not be reached in time.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError, OSError)

Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, code: str, message: str, fields: list[dict[str, Any]] | None = None
) -> web.Response:
    """The one error shape: ``{"error": {"code", "message", "fields"}}``."""
    body = {"error": {"code": code, "message": message, "fields": fields or []}}
    headers = {"WWW-Authenticate": 'Bearer realm="opsdeck"'} if status == 401 else None
    return json_response(body, status=status, headers=headers)


async def read_json(request: web.Request, model: type[Model], *, empty_ok: bool = False) -> Model:
    """Parse and validate a JSON body: 415, 413, 400 or 422 on bad input (``{}`` when empty_ok)."""
    if empty_ok and not request.can_read_body:
        return model.model_validate({})
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="Content-Type must be application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(body))
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(reason=f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed(
            "body must be a JSON object", fields=[{"loc": ["body"], "msg": "expected an object"}]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("request body is invalid", fields=pydantic_fields(exc, "body")) from None


def parse_query(request: web.Request, model: type[Model]) -> Model:
    """Validate query parameters with ``model`` (422 naming the parameter)."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise ValidationFailed("query is invalid", fields=pydantic_fields(exc, "query")) from None


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters with a note of how much was dropped."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n… [{len(text) - limit} more characters truncated]"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for the Opsdeck error tree, HTTP errors and Redis outages (503)."""
    try:
        return await handler(request)
    except OpsdeckError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.fields)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
        if "Allow" in exc.headers:  # 405 must say what is allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except REDIS_DOWN as exc:
        log.warning("redis unavailable: answering 503 (%s)", type(exc).__name__)
        return error_response(503, "unavailable", "Redis is unavailable; try again shortly", None)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")
