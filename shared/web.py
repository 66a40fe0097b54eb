"""aiohttp helpers shared by the web apps: JSON answers, the error shape, body and query parsing,
and the one mapping of Redis failures onto HTTP answers.

Errors are JSON ``{"error": {"code", "message", "fields": [...]}}`` (the coordinator's shape);
:func:`error_middleware` maps the Opsdeck error tree, HTTP errors and Redis failures onto it, and
:func:`json_parser_errors` gives aiohttp's own answers to requests it cannot parse (an oversize
header, a malformed request line) the same shape.

Redis failures are never a 500 (:func:`redis_refusal`, used by both apps' edges): an outage is
503 ``unavailable``, a full connection pool that stayed full for the whole wait 503
``overloaded``, and Redis's own refusals — ``OOM``, ``LOADING``, ``BUSY``, ``READONLY``,
``MASTERDOWN`` — 503 with a code of their own; every one of them carries ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import orjson
import redis.asyncio as aioredis
import redis.exceptions
import sentry_sdk
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from shared.aio import cancel_and_wait
from shared.errors import OpsdeckError, ValidationFailed, pydantic_fields
from shared.jsondepth import check_depth
from shared.logging import bind_contextvars
from shared.metrics import RedisMetrics
from shared.redis import PoolExhausted, async_client, check_redis
from shared.settings import Settings

log = logging.getLogger(__name__)

#: Largest accepted JSON request body.
MAX_BODY_BYTES = 64 * 1024
#: The one content type of a JSON request body (and of every JSON answer).
JSON_TYPE = "application/json"
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


async def read_body(request: web.Request) -> bytes:
    """The raw body of a JSON request: 415 unless it is ``application/json``, 413 beyond
    MAX_BODY_BYTES. A body the parser already holds whole (any small request) is taken as it
    is, without aiohttp's read loop (the coordinator's ``POST /api/v1/tasks`` reads it so)."""
    # the exact header is the common case: only parse it (parameters, case) when it differs
    if request.headers.get("Content-Type") != JSON_TYPE and request.content_type != JSON_TYPE:
        raise web.HTTPUnsupportedMediaType(reason="Content-Type must be application/json")
    content = request.content
    if content.is_eof():
        body = content.read_nowait()
    else:  # aiohttp's read loop refuses (413) past the app's client_max_size already
        body = await request.read()
    if len(body) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(body))
    return body


async def read_json(request: web.Request, model: type[Model], *, empty_ok: bool = False) -> Model:
    """Parse and validate a JSON body (both apps): 415, 413 (:func:`read_body`), 422 past
    MAX_JSON_DEPTH, 400 for malformed JSON, 422 naming the field otherwise; with ``empty_ok`` a
    request without a body (or with an empty one) reads as ``{}``.

    The JSON is orjson's (RFC 8259: no ``NaN`` or ``Infinity``; ``POST /api/v1/tasks`` reads it
    so too), then validated from the Python objects. Not pydantic's single pass
    (``model_validate_json``, ~1 µs faster on a chat body): its parser puts ``NaN``, ``Infinity``
    and integers orjson cannot encode again into an open field (the dashboard's edited payload,
    which would be stored as ``null`` or fail with a 500)."""
    if empty_ok and not request.can_read_body:
        return model.model_validate({})
    body = await read_body(request)
    if empty_ok and not body:
        return model.model_validate({})
    check_depth(body)  # 422 past MAX_JSON_DEPTH, before pydantic or an encoder (shared.jsondepth)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(reason=f"malformed JSON: {exc}") from None
    if type(data) is not dict:
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


class Refusal(NamedTuple):
    """How the edge answers a Redis failure."""

    status: int
    code: str
    message: str
    #: Seconds a client should wait before trying again (the ``Retry-After`` header).
    retry_after: int


#: Redis cannot be reached in time (refused, reset, timed out).
UNAVAILABLE = Refusal(503, "unavailable", "Redis is unavailable; try again shortly", 2)
#: Every pooled Redis connection stayed in use for the whole wait: this process sheds load.
OVERLOADED = Refusal(503, "overloaded", "the service is overloaded; try again shortly", 1)
#: Redis's own refusals, by the error reply's code (its first word).
REDIS_REPLIES: dict[str, Refusal] = {
    "OOM": Refusal(503, "redis_out_of_memory",
                   "Redis is out of memory (maxmemory reached) and refuses writes; try again later", 10),
    "LOADING": Refusal(503, "redis_loading",
                       "Redis is loading its dataset after a restart; try again shortly", 2),
    "BUSY": Refusal(503, "redis_busy", "Redis is busy running a script; try again shortly", 1),
    "READONLY": Refusal(503, "redis_readonly",
                        "Redis is a read-only replica (a fail-over is under way); try again shortly", 2),
    "MASTERDOWN": Refusal(503, "redis_master_down",
                          "Redis has lost its primary (a fail-over is under way); try again shortly", 2),
}  # fmt: skip
#: Every code a Redis failure is answered with.
REDIS_ERROR_CODES = (UNAVAILABLE.code, OVERLOADED.code, *(r.code for r in REDIS_REPLIES.values()))
#: A web app's Redis metrics (:func:`setup_redis_metrics`); the edges count refusals there.
REDIS_METRICS = web.AppKey("redis_metrics", RedisMetrics)


#: The code of an error reply redis-py did not classify (BUSY): its first word, also behind the
#: prefix redis-py puts on an error of a pipeline's command.
_REPLY_CODE = re.compile(r"(?:Command # \d+ \(.*?\) of pipeline caused error: \W*)?([A-Z]+)\b", re.DOTALL)


def redis_refusal(exc: BaseException) -> Refusal | None:
    """How to answer ``exc`` if it is a Redis failure (None: it is not one, e.g. WRONGTYPE, a bug).

    Error replies arrive two ways: parsed by redis-py (OutOfMemoryError, BusyLoadingError,
    ReadOnlyError, MasterDownError with the reply's code in ``status_code``; BUSY as a plain
    ResponseError) and raw from the submit batcher's hiredis reader (a ResponseError whose text
    starts with the code): both are read by the code."""
    if isinstance(exc, redis.exceptions.RedisError):
        if isinstance(exc, (PoolExhausted, redis.exceptions.MaxConnectionsError)):
            return OVERLOADED
        reply = getattr(exc, "status_code", None)
        if reply is None and isinstance(exc, redis.exceptions.ResponseError):
            found = _REPLY_CODE.match(str(exc))
            reply = found.group(1) if found else None
        refusal = REDIS_REPLIES.get(reply) if reply else None
        if refusal is not None:
            return refusal
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return UNAVAILABLE
        return None
    if isinstance(exc, (TimeoutError, OSError)):
        return UNAVAILABLE
    return None


class RateLimitedWarning:
    """Logs a recurring condition once per ``interval`` seconds with a count, not once per request."""

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


_refusal_logs: dict[str, RateLimitedWarning] = {}


def redis_error_response(request: web.Request, exc: BaseException) -> web.Response | None:
    """The answer to a Redis failure (503, its code, ``Retry-After``), logged at most once per 10 s
    per code and counted in the app's ``opsdeck_redis_errors_total``; None when ``exc`` is not one."""
    refusal = redis_refusal(exc)
    if refusal is None:
        return None
    warning = _refusal_logs.get(refusal.code)
    if warning is None:
        warning = _refusal_logs[refusal.code] = RateLimitedWarning(f"redis: answering 503 {refusal.code}")
    warning.warn(type(exc).__name__)
    metrics = request.app.get(REDIS_METRICS)
    if metrics is not None:
        metrics.count(refusal.code)
    response = error_response(refusal.status, refusal.code, refusal.message)
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response


def opsdeck_error_response(exc: OpsdeckError) -> web.Response:
    """The answer to an Opsdeck error (a 503 or a 429 says when to try again)."""
    response = error_response(exc.status, exc.code, exc.message, exc.fields)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    elif exc.status == 503:
        response.headers["Retry-After"] = str(UNAVAILABLE.retry_after)
    return response


def exception_response(request: web.Request, exc: Exception, route: str) -> web.Response:
    """The one mapping of an exception to an answer, for both apps' edges: the Opsdeck error tree
    (its status and code; ``Retry-After`` on a 503 or a 429), HTTP errors (their code; 405 with
    ``Allow``), Redis failures (:func:`redis_error_response`), and anything else a 500 that is
    logged with its traceback and sent to Sentry, tagged with ``route``. An HTTP answer below 400
    (a redirect) is raised again for aiohttp to send."""
    if isinstance(exc, OpsdeckError):
        return opsdeck_error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else f"body exceeds {MAX_BODY_BYTES} bytes"
        response = error_response(exc.status, code, message)
        if "Allow" in exc.headers:  # 405 must say what is allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    answer = redis_error_response(request, exc)
    if answer is not None:
        return answer
    bind_contextvars(route=route)
    log.exception("unhandled error on %s %s", request.method, request.path)
    sentry_sdk.capture_exception()
    return error_response(500, "internal_error", "internal error; see the server log")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The dashboard's edge: :func:`exception_response` for whatever its handlers raise."""
    try:
        return await handler(request)
    except Exception as exc:  # CancelledError is no Exception: it goes on up
        route = request.match_info.route.resource
        return exception_response(request, exc, route.canonical if route is not None else "unmatched")


# -- Redis metrics and probe -------------------------------------------------------------------
def setup_redis_metrics(
    app: web.Application, registry: CollectorRegistry, name: str, settings: Settings
) -> RedisMetrics:
    """Register the app's Redis metrics (``app[REDIS_METRICS]``) and its probe: a task that PINGs
    Redis and reads INFO memory every ``metrics.probe_interval`` seconds on a connection of its
    own (so it measures Redis, not the app's pool), for ``opsdeck_redis_up`` and the memory gauges."""
    metrics = app[REDIS_METRICS] = RedisMetrics(registry, name, REDIS_ERROR_CODES)

    async def probe_ctx(app: web.Application) -> AsyncIterator[None]:
        client = async_client(settings, max_connections=1)
        task = asyncio.get_running_loop().create_task(
            _probe(client, metrics, settings.redis_timeout), name="redis-probe"
        )
        yield
        await cancel_and_wait([task])
        await client.aclose()

    app.cleanup_ctx.append(probe_ctx)
    return metrics


async def _probe(client: aioredis.Redis, metrics: RedisMetrics, deadline: float) -> None:
    while True:
        status = await check_redis(client, deadline)
        metrics.up = int(status.error is None)
        if status.maxmemory is not None:
            metrics.used_memory, metrics.maxmemory = status.used_memory, status.maxmemory
        await asyncio.sleep(metrics.probe_interval)


# -- aiohttp's own error answers ----------------------------------------------------------------
#: Set on an app by :func:`json_parser_errors`.
JSON_PARSER_ERRORS = web.AppKey("json_parser_errors", bool)


def json_parser_errors(app: web.Application) -> None:
    """Answer in the JSON error shape what aiohttp answers itself, before any handler or middleware
    runs: requests its parser refuses (a header beyond 8,190 bytes, too many headers, a malformed
    request line: 400) and its last-resort 500.

    aiohttp renders those in ``RequestHandler.handle_error`` as plain text and offers no hook, so
    the method is wrapped once per process; the wrapper re-renders the answer only for the
    connections of apps marked here (any other aiohttp server keeps aiohttp's)."""
    app[JSON_PARSER_ERRORS] = True
    if getattr(RequestHandler.handle_error, "_opsdeck_json", False):
        return
    plain = RequestHandler.handle_error

    def handle_error(
        self: RequestHandler,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = plain(self, request, status, exc, message)  # logs, refuses once a response began
        factory = getattr(getattr(self, "_manager", None), "request_factory", None)
        owner = getattr(factory, "__self__", None)  # the Application whose _make_request it is
        if not isinstance(owner, web.Application) or not owner.get(JSON_PARSER_ERRORS):
            return response
        if status >= 500:
            code, text = "internal_error", "internal error; see the server log"
        else:
            code, text = _HTTP_CODES.get(status, "http_error"), message or "the request could not be parsed"
        answer = error_response(status, code, text)
        answer.force_close()
        return answer

    handle_error._opsdeck_json = True  # type: ignore[attr-defined]
    RequestHandler.handle_error = handle_error  # type: ignore[method-assign]
