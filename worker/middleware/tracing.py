"""TaskTracing middleware: one OpenTelemetry CONSUMER span per attempt, child of the request's span.

There is no maintained Dramatiq instrumentation (open-telemetry/opentelemetry-python-contrib#1916;
the one on PyPI has known defects, pydantic/logfire#2250), and what is needed is small: the submit
script writes the request's W3C context into the message options (``traceparent``,
``tracestate``: :mod:`shared.tracing`), the same on both brokers, and this middleware continues it.
Retries keep the options, so every attempt is a span of its own in the request's trace.

It goes *before* the TaskLifecycle in the broker's list: Dramatiq runs ``before_*`` hooks in order
and ``after_*`` hooks in reverse, so the span covers the lifecycle's start and end scripts too.
Messages the worker enqueues itself while a span is current (a deploy's next step) get that span's
context, so they continue the trace; a message that has one keeps it (a retry stays a child of the
request, not of the failed attempt).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from opentelemetry import context as otel_context
from opentelemetry import trace

from shared import tracing
from shared.transport.redis_keys import canonical_queue


class TaskTracing(Middleware):
    """Opens a span per attempt in ``before_process_message``, ends it when the attempt ends."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_enqueue(self, broker: Broker, message: Any, delay: int) -> None:
        """Give a message enqueued inside a span (and without a context of its own) that span's."""
        if tracing.TRACEPARENT in message.options:
            return
        traceparent, tracestate = tracing.current_context()
        if traceparent:
            message.options[tracing.TRACEPARENT] = traceparent
            if tracestate:
                message.options[tracing.TRACESTATE] = tracestate

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Start the attempt's span (its parent: the message's context) and make it current."""
        options = message.options
        now_ms = time.time_ns() // 1_000_000
        # a retry or a deferred delivery was due at its eta; a first delivery from its submission
        enqueued = options.get("eta") or message.message_timestamp
        queue = canonical_queue(message.queue_name)
        span = tracing.TRACER.start_span(
            f"process {message.actor_name}",
            context=tracing.context_from(options),
            kind=tracing.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "dramatiq",
                "messaging.operation.type": "process",
                "messaging.destination.name": queue,
                "messaging.message.id": message.message_id,
                "opsdeck.task.id": message.message_id,
                "opsdeck.task.type": message.actor_name,
                "opsdeck.task.queue": queue,
                "opsdeck.task.priority": options.get("priority", ""),
                "opsdeck.task.attempt": int(options.get("retries", 0)) + 1,
                "opsdeck.task.queue_wait_ms": max(0, now_ms - int(enqueued)),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._local.current = (span, token)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """End the attempt's span: failed with the exception's type when the actor raised."""
        self._end(message, "failed" if exception is not None else "succeeded", exception)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """End the span of a delivery that did not run (canceled, ended, or running elsewhere)."""
        self._end(message, "skipped", None)

    def _end(self, message: MessageProxy, outcome: str, exception: BaseException | None) -> None:
        current = getattr(self._local, "current", None)
        self._local.current = None
        if current is None:
            return
        span, token = current
        span.set_attribute("opsdeck.task.outcome", outcome)
        if exception is not None:
            span.set_attribute("opsdeck.task.will_retry", not message.failed)
            tracing.record_error(span, exception)
        otel_context.detach(token)
        span.end()
