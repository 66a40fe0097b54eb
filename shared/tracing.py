"""OpenTelemetry tracing: one owner for the tracer, its set-up and the W3C context Opsdeck carries.

Configured only by the standard ``OTEL_*`` variables (read by :class:`shared.settings.Settings`,
documented in docs/configuration.md) and off unless an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
``OTEL_SDK_DISABLED`` is not true. :func:`configure` installs the SDK's tracer provider once per
process (service name ``opsdeck-coordinator``, ``opsdeck-worker`` or ``opsdeck-dashboard`` unless
``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` names one; the sampler of
``OTEL_TRACES_SAMPLER``/``_ARG``, parent-based always-on by default; batches exported over
OTLP/HTTP protobuf, or gRPC when ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` and its exporter is
installed).

Where the spans are:

- a SERVER span per request of the coordinator (:func:`coordinator.http.edge`) and the dashboard
  (:func:`server_middleware`): it continues an incoming ``traceparent``/``tracestate`` and the
  response carries ``traceparent`` (:func:`traceparent_of`) so a client can find its trace;
- the submit path writes the context of the current span into the Dramatiq message's options
  (``traceparent``, ``tracestate``: ``shared/lua/submit.lua``, one round trip per batch as
  before) and, when sampled, the trace id into the task record (``trace_id``);
- the worker's :class:`worker.middleware.tracing.TaskTracing` opens a CONSUMER span per attempt,
  child of the request's span; the coaching nodes, bandit scripts, LLM calls, deploy provider
  calls and gates, and control commands open child spans with :data:`TRACER`.

The hot paths decide once, when they are built, whether to trace (:func:`enabled`): with tracing
off the coordinator's edge and the submit path run exactly the code they ran before. Spans carry
names, ids, counts and outcomes, never payloads, messages or tokens; an exception is recorded by
its type only (its text may quote task data, as :mod:`shared.logging` explains).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from shared.settings import Settings

log = logging.getLogger(__name__)

#: Every Opsdeck span comes from this tracer (OpenTelemetry's proxy: it records once a provider is
#: installed, and costs a no-op span before).
TRACER = trace.get_tracer("opsdeck")
#: The W3C Trace Context propagator (``traceparent`` and ``tracestate``).
PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_state: dict[str, Any] = {"enabled": False, "provider": None, "root_bound": None}
#: The low 64 bits of a trace id: what the SDK's TraceIdRatioBased compares with its bound.
_LOW64 = (1 << 64) - 1
#: A trace id drawn at the edge for the root span about to start (:class:`_EdgeIds` hands it to
#: the SDK, whose sampler then decides on it exactly as the edge did).
_NEXT_TRACE_ID: ContextVar[int] = ContextVar("opsdeck_next_trace_id", default=0)
#: Set while a request the edge decided not to sample runs (no span made): the messages it
#: submits carry :data:`UNSAMPLED_TRACEPARENT`, so the worker keeps the decision.
_UNSAMPLED: ContextVar[bool] = ContextVar("opsdeck_unsampled", default=False)
#: The context every unsampled root request of this process hands on: flags 00 is all a
#: parent-based sampler reads, and nothing of an unsampled trace is ever recorded, so one random
#: id per process does (formatting one per request cost more than the rest of the path).
UNSAMPLED_TRACEPARENT = f"00-{random.getrandbits(128) | 1:032x}-{random.getrandbits(64) | 1:016x}-00"

__all__ = [
    "PROPAGATOR",
    "TRACEPARENT",
    "TRACER",
    "SpanKind",
    "configure",
    "context_from",
    "current_context",
    "enabled",
    "record_error",
    "span",
    "traceparent_of",
]


def enabled() -> bool:
    """True once :func:`configure` (or a test's :func:`use_provider`) installed a provider."""
    return bool(_state["enabled"])


def configure(settings: Settings, service: str) -> bool:
    """Install the SDK's tracer provider for this process when tracing is configured (see the
    module docstring); True when spans are recorded. Idempotent: the first call wins."""
    if _state["provider"] is not None:
        return True
    if not settings.tracing_enabled:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = settings.otel_service_name or "service.name=" in (settings.otel_resource_attributes or "")
    # Resource.create reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES itself; what is passed
    # here wins over them, so the default name is passed only when neither names the service.
    resource = Resource.create({} if named else {SERVICE_NAME: service})
    provider = TracerProvider(resource=resource, sampler=_sampler(settings), id_generator=_edge_ids())
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    use_provider(provider, root_bound=_root_bound(settings))
    log.info("tracing on: %s to %s", resource.attributes.get(SERVICE_NAME), settings.otel_traces_endpoint)
    return True


def _sampler(settings: Settings) -> Any:
    """The sampler ``OTEL_TRACES_SAMPLER``/``_ARG`` name (the SDK's names and meanings)."""
    from opentelemetry.sdk.trace import sampling

    ratio, name = settings.otel_traces_sampler_arg, settings.otel_traces_sampler
    root: sampling.Sampler = sampling.ALWAYS_ON
    if name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    elif name.endswith("traceidratio"):
        root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _exporter(settings: Settings) -> Any:
    endpoint = settings.otel_traces_endpoint
    if settings.otel_exporter_otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def use_provider(provider: TracerProvider | None, *, root_bound: int | None = None) -> None:
    """Make ``provider`` the process's (OpenTelemetry allows one global provider: set once, later
    calls only switch :func:`enabled`), or turn tracing off with None (tests). ``root_bound``:
    the edge decides itself whether a request without ``traceparent`` is sampled
    (:func:`serve`), by the rule of the SDK's ratio sampler (None: the SDK decides every one;
    the provider must then have an :func:`_edge_ids` id generator)."""
    if provider is not None and _state["provider"] is None:
        trace.set_tracer_provider(provider)
        _state["provider"] = provider
    _state["enabled"] = provider is not None
    _state["root_bound"] = root_bound if provider is not None else None


def _root_bound(settings: Settings) -> int | None:
    """The bound the SDK's ratio sampler compares a root's trace id with (the low 64 bits), when
    roots are sampled by ratio or never; None when every root is (nothing to decide early)."""
    from opentelemetry.sdk.trace import sampling

    name = settings.otel_traces_sampler
    if name.endswith("always_on"):
        return None
    if name.endswith("always_off"):
        return 0
    return int(sampling.TraceIdRatioBased.get_bound_for_rate(settings.otel_traces_sampler_arg))


def _edge_ids() -> Any:
    """The SDK's random id generator, but a root span's trace id is the one the edge drew for
    its decision when there is one (:data:`_NEXT_TRACE_ID`)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class EdgeIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            drawn = _NEXT_TRACE_ID.get()
            if drawn:
                _NEXT_TRACE_ID.set(0)
                return drawn
            return super().generate_trace_id()

    return EdgeIds()


def traceparent_of(ctx: SpanContext) -> str:
    """The W3C ``traceparent`` header value of a span context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_context() -> tuple[str, str]:
    """``(traceparent, tracestate)`` of the current span, ``("", "")`` when there is none: what
    a message carries to the worker (an unsampled context too, so the worker keeps the decision)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return (UNSAMPLED_TRACEPARENT, "") if _UNSAMPLED.get() else ("", "")
    return traceparent_of(ctx), ctx.trace_state.to_header() if ctx.trace_state else ""


def context_from(carrier: Mapping[str, Any]) -> otel_context.Context | None:
    """The remote parent in ``carrier`` (request headers or message options), or None."""
    if not carrier.get(TRACEPARENT):
        return None
    parent = PROPAGATOR.extract(carrier)
    ctx = trace.get_current_span(parent).get_span_context()
    return parent if ctx.is_valid else None


def record_error(target: Span, exc: BaseException) -> None:
    """Mark ``target`` failed by ``exc``'s type: an exception event without its text or
    traceback's locals (the text may quote task data or a provider's answer)."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    target.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    target.add_event("exception", {"exception.type": name, "exception.escaped": True})


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    """A child span of the current one around the block; an exception leaving the block marks it
    failed (:func:`record_error`) and goes on. Cheap when nothing records: no span is made when
    the current one is not recording (unsampled, or tracing off)."""
    if not trace.get_current_span().is_recording():
        yield trace.INVALID_SPAN
        return
    with TRACER.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            record_error(current, exc)
            raise


def span_until(future: asyncio.Future[Any], name: str, attributes: dict[str, Any]) -> None:
    """A CLIENT span, child of the current one, from now until ``future`` is done (a request's
    share of a batched Redis call); nothing when the current span is not recording."""
    if not trace.get_current_span().is_recording():
        return
    started = TRACER.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    def done(finished: asyncio.Future[Any]) -> None:
        exc = None if finished.cancelled() else finished.exception()
        if exc is not None:
            record_error(started, exc)
        started.end()

    future.add_done_callback(done)


#: Routes served without a span: probes and scrapes would bury the traces of real requests.
UNTRACED_ROUTES = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def server_handler(handler: _Handler, route: str, method: str | None = None) -> _Handler:
    """``handler`` (an aiohttp handler) served by :func:`serve` as ``route`` (``method``: the
    route's method, the request's when None)."""

    getrandbits = random.getrandbits

    async def traced(request: web.Request) -> web.StreamResponse:
        bound = _state["root_bound"]
        if bound is not None and TRACEPARENT not in request.headers:
            # serve()'s root decision inlined: the 99 % unsampled at 1 % skip two coroutine
            # frames and the context reset (aiohttp runs each request in a task of its own, so
            # the flag goes with the request's context, as coordinator.http.edge's ids do).
            low = getrandbits(64)
            if low >= bound:
                _UNSAMPLED.set(True)
                return await handler(request)
            _NEXT_TRACE_ID.set(getrandbits(64) << 64 | low or 1)
        return await _serve_span(request, handler, route, method)

    return traced


@web.middleware
async def server_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """The same as an aiohttp middleware (the dashboard's), named by the matched resource."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    if route in UNTRACED_ROUTES:
        return await handler(request)
    return await serve(request, handler, route)


async def serve(
    request: web.Request, handler: _Handler, route: str, method: str | None = None
) -> web.StreamResponse:
    """Answer ``request`` with ``handler`` inside a SERVER span named ``"<method> <route>"`` that
    continues the request's ``traceparent``/``tracestate``; the response carries ``traceparent``
    so a client can find its trace. 5xx answers and exceptions mark the span failed (4xx are the
    client's, as the HTTP semantic conventions say for servers)."""
    bound = _state["root_bound"]
    if bound is not None and TRACEPARENT not in request.headers:
        # A root: decide here by the SDK's own rule on a trace id drawn here. Unsampled (99 % at
        # 1 %), no span is made at all; sampled, the SDK gets this id and decides the same.
        drawn = random.getrandbits(128) or 1
        if drawn & _LOW64 >= bound:
            return await _serve_unsampled(request, handler)
        _NEXT_TRACE_ID.set(drawn)
    return await _serve_span(request, handler, route, method)


async def _serve_span(
    request: web.Request, handler: _Handler, route: str, method: str | None
) -> web.StreamResponse:
    """:func:`serve` once the request is known to be traced (sampled, or a remote parent's)."""
    headers = request.headers
    verb = method or request.method
    current = TRACER.start_span(
        f"{verb} {route}",
        context=context_from(headers) if TRACEPARENT in headers else None,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": verb, "http.route": route, "url.path": request.path},
    )
    token = otel_context.attach(trace.set_span_in_context(current))
    try:
        response = await handler(request)
        status = response.status
        if status >= 500 and current.is_recording():
            current.set_status(Status(StatusCode.ERROR))
            current.set_attribute("error.type", str(status))
        current.set_attribute("http.response.status_code", status)
    except asyncio.CancelledError:
        current.set_attribute("opsdeck.cancelled", True)  # the client went away
        raise
    except BaseException as exc:
        record_error(current, exc)
        raise
    finally:
        otel_context.detach(token)
        current.end()
    if not response.prepared:
        response.headers[TRACEPARENT] = traceparent_of(current.get_span_context())
    return response


async def _serve_unsampled(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A root request the edge decided not to sample: no span and no ``traceparent`` answer
    (there is no trace to find), but its submissions carry :data:`UNSAMPLED_TRACEPARENT`.

    Why not the SDK's own non-recording span: the 5 % budget of the coordinator's ~100 µs request
    is ~5 µs. Measured 2026-12-03 on the 2-vCPU VM (``serve`` around a handler that asks
    :func:`current_context` as the submit path does, 3 × 200,000 calls, parentbased_traceidratio
    0.01, the 1 % sampled spans included): +4.3-4.9 µs a request with a per-request unsampled id
    and answer header, +13.3-17.5 µs through the SDK's non-recording span; this form (one id per
    process, no header): +0.6-0.7 µs."""
    token = _UNSAMPLED.set(True)
    try:
        return await handler(request)
    finally:
        _UNSAMPLED.reset(token)


def edge_unsampled() -> bool:
    """True inside a request the edge decided not to sample (the submit path's fast check)."""
    return _UNSAMPLED.get()
