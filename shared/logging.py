"""Logging with structlog: one JSON object per line in production, readable lines in development.

Every record — ours through structlog, and stdlib ones from aiohttp or Dramatiq — goes through the
same processors, so each line carries the process name and whatever is bound in the current
context (``correlation_id``, ``task_id``, ...), and values under secret-looking keys are redacted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from structlog.contextvars import STRUCTLOG_KEY_PREFIX, bind_contextvars, clear_contextvars, merge_contextvars

#: Keys whose values never reach a log line.
SECRET_KEYS = frozenset(
    {"authorization", "token", "password", "secret", "jwt", "jwt_secret", "api_key", "cookie"}
)
REDACTED = "[redacted]"

#: The correlation id in structlog's context: a ContextVar named with structlog's key prefix, which
#: ``merge_contextvars`` (every log line) and ``get_contextvars`` (Sentry's tags) read like any
#: bound key, and ``clear_contextvars`` clears. The coordinator's edge sets it once per request,
#: one C call where ``bind_contextvars`` runs a Python loop.
CORRELATION_ID: ContextVar[str] = ContextVar(f"{STRUCTLOG_KEY_PREFIX}correlation_id")


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
    return event


def _json_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def setup_logging(level: str = "INFO", *, json: bool = False, process: str = "opsdeck") -> None:
    """Configure structlog and the stdlib root logger once for this process."""

    def _add_process(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("process", process)
        return event

    shared: list[Any] = [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[*final, renderer])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger named ``name``."""
    return structlog.get_logger(name)


__all__ = ["CORRELATION_ID", "bind_contextvars", "clear_contextvars", "get_logger", "setup_logging"]
