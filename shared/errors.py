"""The one error tree of Opsdeck; mapped to HTTP only at the edge.

OpsdeckError
├── ConfigError           settings are missing or invalid; the process refuses to start
├── AuthError             no, malformed, expired or badly signed token          → 401
│   └── ScopeError        valid token without the scope the route needs         → 403
├── BadRequest            a request body is not JSON at all                      → 400
├── ValidationFailed      a request body or query failed validation              → 422
├── NotFound              the named thing does not exist (or has expired)        → 404
├── Conflict              the request clashes with the thing's current state     → 409
│   └── Unsupported       the configured broker cannot do what was asked          → 409
└── Unavailable           Redis (or another dependency) cannot be reached        → 503

Redis failures raised by redis-py or the submit batcher are not wrapped in this tree: the edges
map them with :func:`shared.web.redis_refusal` to 503 and a code of their own (``unavailable``,
``overloaded``, ``redis_out_of_memory``, ``redis_loading``, ``redis_busy``, ``redis_readonly``,
``redis_master_down``), each with ``Retry-After``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class OpsdeckError(Exception):
    """Root of every error Opsdeck raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class ConfigError(OpsdeckError):
    """Settings are missing or invalid; the process refuses to start."""

    code = "config_error"


class AuthError(OpsdeckError):
    """No, malformed, expired or badly signed credentials."""

    status = 401
    code = "unauthorized"


class ScopeError(AuthError):
    """A valid token that lacks the scope the operation needs."""

    status = 403
    code = "forbidden"


class BadRequest(OpsdeckError):
    """A request body that cannot be parsed at all (malformed JSON)."""

    status = 400
    code = "bad_request"


class ValidationFailed(OpsdeckError):
    """A request body or query parameter failed validation."""

    status = 422
    code = "validation_error"


class NotFound(OpsdeckError):
    """The named thing does not exist or has expired."""

    status = 404
    code = "not_found"


class Conflict(OpsdeckError):
    """The request clashes with the current state of the thing it names."""

    status = 409
    code = "conflict"


class Unsupported(Conflict):
    """The configured broker (e.g. RabbitMQ, whose queues cannot be browsed) cannot do this."""

    code = "unsupported"


class Unavailable(OpsdeckError):
    """A dependency (Redis) cannot be reached in time."""

    status = 503
    code = "unavailable"


def pydantic_fields(exc: ValidationError, root: str) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{"loc": [root, ...], "msg"}]`` (the ``fields`` of ValidationFailed)."""
    return [{"loc": [root, *e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)]
