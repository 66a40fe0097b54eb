"""Logging with structlog: one JSON object per line in production, readable lines in development.

Every record — ours through structlog, and stdlib ones from aiohttp or Dramatiq — goes through the
same processors, so each line carries the process name and whatever is bound in the current
context (``correlation_id``, ``task_id``, ...) and, inside a sampled span, its ``trace_id`` and
``span_id``; values under secret-looking keys are redacted.

Tracebacks are plain text without local variables in every mode (never ``rich``'s, which shows
locals, whether or not it is installed) and at most :data:`MAX_TRACEBACK_LINES` lines. Task data
never reaches a line: a Dramatiq message in a record (Dramatiq logs "Failed to process message
<actor>(<args>) ...") is shown as its actor and message id, and the text of an exception raised
while a task runs (``fail`` raises its payload's message; a validation error quotes its input) is
left out — it is in the task record (``error``, ``traceback``), behind the API's auth.

The correlation id is one variable: :data:`CORRELATION_ID` is structlog's own ContextVar for the
``correlation_id`` key, got through its public ``bind_contextvars`` (the ``var`` of the Token it
returns), not a second ContextVar forged with structlog's key prefix beside it. The worker binds
it with ``bind_contextvars(correlation_id=...)``; the coordinator's edge sets it and its views
read it as the variable, because the public functions cost the hot path (issue 15, measured
2026-12-03 on the 2-vCPU dev VM): ``bind_contextvars`` at the edge and ``get_contextvars()`` in
the view took 2.97 µs a request against 0.23 µs for ``set`` and ``get`` on the variable (best of
5 × 200,000 in a request-like task context), about 3 % of the coordinator's 75-130 µs of server
CPU a request, so ~0.02-0.03 off ``scripts/bench/coordinator.py``'s ratio. That benchmark could
not resolve it on the loaded VM (load average 1-6; its rounds ranged 0.18-2.21); its ratios,
``--quick`` alternating: forged variable (before) 0.723 0.422 0.844 0.433 0.650 0.786 0.859 0.990
1.002 1.062 0.521 (median 0.786); public functions 0.618 0.522 1.068 0.949 1.082 0.691 (0.820);
this variable 0.683 0.967 0.611 1.175 0.750 1.157 (0.859); full runs (12 rounds) 0.718 0.707,
0.842 0.778, 0.657 0.740.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from contextvars import Context, ContextVar
from types import TracebackType
from typing import Any

import orjson
import structlog
from opentelemetry.trace import get_current_span
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars

#: Keys whose values never reach a log line.
SECRET_KEYS = frozenset(
    {"authorization", "token", "password", "secret", "jwt", "jwt_secret", "api_key", "cookie"}
)
REDACTED = "[redacted]"


def _structlog_variable(key: str) -> ContextVar[Any]:
    """structlog's own ContextVar behind ``key``: the ``var`` of the Token that
    ``bind_contextvars`` returns for it (bound in a throwaway Context, so nothing is bound here)."""
    return Context().run(bind_contextvars, **{key: None})[key].var


#: The correlation id: structlog's own variable for the ``correlation_id`` key (the one
#: ``bind_contextvars(correlation_id=...)`` sets, as the worker's middleware does), so
#: ``merge_contextvars`` (every log line), ``get_contextvars`` (Sentry's tags) and
#: ``clear_contextvars`` see it like any bound key. The coordinator's edge sets and its views
#: read it directly, one C call each (see the module docstring); unset, it holds ``...``.
CORRELATION_ID: ContextVar[str] = _structlog_variable("correlation_id")


def _redact(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
    return event


#: Longest traceback a log record carries (lines); the innermost frames are kept.
MAX_TRACEBACK_LINES = 50
#: Frames read per exception: two lines each with their source, room for the header and text.
_MAX_FRAMES = (MAX_TRACEBACK_LINES - 4) // 2
#: Longest exception text a record carries outside a task (characters).
MAX_EXCEPTION_TEXT = 500
#: What stands for the text of an exception raised while a task ran.
TEXT_NOT_LOGGED = "(text not logged: it may quote task data; see the task record)"
#: Attribute set on a stdlib record that was about a Dramatiq message.
_TASK_RECORD = "opsdeck_task_record"


def _is_message(value: Any) -> bool:
    # dramatiq.Message or dramatiq.broker.MessageProxy, without importing Dramatiq here
    return type(value).__module__.startswith("dramatiq") and hasattr(value, "actor_name")


def _message_ref(message: Any) -> str:
    return f"{message.actor_name}[message {message.message_id}]"


class MessageArgsFilter(logging.Filter):
    """Replaces every Dramatiq message among a record's arguments by its actor and message id:
    Dramatiq formats messages as ``actor(args..., kwargs...)``, task payloads included. Records
    so changed are marked as about a task (their exception's text is then left out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's arguments in place; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and any(_is_message(a) for a in args):
            record.args = tuple(_message_ref(a) if _is_message(a) else a for a in args)
            setattr(record, _TASK_RECORD, True)
        elif isinstance(args, dict) and any(_is_message(a) for a in args.values()):
            record.args = {k: _message_ref(v) if _is_message(v) else v for k, v in args.items()}
            setattr(record, _TASK_RECORD, True)
        return True


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_info(value: Any) -> _ExcInfo | None:
    if value is True:
        value = sys.exc_info()
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value
    return None


def _exception_line(exc: BaseException, with_text: bool) -> str:
    cls = type(exc)
    name = (
        cls.__qualname__
        if cls.__module__ in ("builtins", "__main__")
        else f"{cls.__module__}.{cls.__qualname__}"
    )
    if not with_text:
        return f"{name}: {TEXT_NOT_LOGGED}\n"
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break logging
        text = "<exception str() failed>"
    if len(text) > MAX_EXCEPTION_TEXT:
        text = text[:MAX_EXCEPTION_TEXT] + f"... ({len(text) - MAX_EXCEPTION_TEXT} more characters)"
    return f"{name}: {text}\n" if text else f"{name}\n"


def format_traceback(exc: BaseException, *, with_text: bool = True) -> str:
    """A plain traceback of ``exc`` and its chain, like the interpreter's but never with local
    variables, without the exceptions' text unless ``with_text``, and at most
    :data:`MAX_TRACEBACK_LINES` lines (repeated frames collapsed, the innermost kept)."""
    parts: list[str] = []
    seen: set[int] = set()

    def walk(e: BaseException) -> None:
        seen.add(id(e))
        if e.__cause__ is not None and id(e.__cause__) not in seen:
            walk(e.__cause__)
            parts.append("\nThe above exception was the direct cause of the following exception:\n\n")
        elif e.__context__ is not None and not e.__suppress_context__ and id(e.__context__) not in seen:
            walk(e.__context__)
            parts.append("\nDuring handling of the above exception, another exception occurred:\n\n")
        if e.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            frames = sum(1 for _ in traceback.walk_tb(e.__traceback__))
            if frames > _MAX_FRAMES:  # only the innermost are read (a RecursionError has ~1000)
                parts.append(f"  ... {frames - _MAX_FRAMES} outer frames omitted ...\n")
            stack = traceback.StackSummary.extract(
                traceback.walk_tb(e.__traceback__), limit=-_MAX_FRAMES, capture_locals=False
            )
            parts.extend(stack.format())
        parts.append(_exception_line(e, with_text))

    walk(exc)
    lines = "".join(parts).rstrip("\n").splitlines()
    if len(lines) > MAX_TRACEBACK_LINES:
        keep = MAX_TRACEBACK_LINES - 2
        omitted = len(lines) - keep - 1
        lines = [lines[0], f"  ... {omitted} lines omitted ...", *lines[-keep:]]
    return "\n".join(lines)


def _render_exception(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``exc_info`` → a plain ``exception`` string (see :func:`format_traceback`); the text is
    left out for a record about a task (a Dramatiq message in it, or a task id bound)."""
    info = _exc_info(event.pop("exc_info", None))
    if info is not None:
        in_task = "task_id" in event or getattr(event.get("_record"), _TASK_RECORD, False)
        event["exception"] = format_traceback(info[1], with_text=not in_task)
    return event


def _add_trace(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``trace_id`` and ``span_id`` of the current span, when one is sampled (shared.tracing):
    a line written inside a request's or a task's span names the trace to open."""
    ctx = get_current_span().get_span_context()
    if ctx.trace_flags.sampled:
        event.setdefault("trace_id", f"{ctx.trace_id:032x}")
        event.setdefault("span_id", f"{ctx.span_id:016x}")
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
        _add_trace,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
        if json
        # _render_exception has made the traceback already; plain, should anything be left
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    final: list[Any] = [_render_exception, structlog.stdlib.ProcessorFormatter.remove_processors_meta]
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
    handler.addFilter(MessageArgsFilter())
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


__all__ = [
    "CORRELATION_ID",
    "MessageArgsFilter",
    "bind_contextvars",
    "clear_contextvars",
    "format_traceback",
    "get_logger",
    "setup_logging",
]
