"""A real OTLP/HTTP trace receiver for tests and benchmarks: ``POST /v1/traces`` with the protobuf
``ExportTraceServiceRequest`` the SDK's exporter sends, decoded with ``opentelemetry-proto``.

It runs in a thread of its own (a ``ThreadingHTTPServer`` on 127.0.0.1, a free port), so a test's
event loop, an in-process app's and the exporting processes never wait on one another. Spans are
kept flattened (:class:`ReceivedSpan`): hex ids, the service name of their resource, attributes
as plain values.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

#: OTLP's span kinds by number (opentelemetry.proto.trace.v1.Span.SpanKind).
KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
#: Status codes by number (opentelemetry.proto.trace.v1.Status.StatusCode).
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver got it."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    status: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0


def _flatten(service: str, span: Span) -> ReceivedSpan:
    return ReceivedSpan(
        service=service,
        name=span.name,
        kind=KINDS[span.kind],
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        status=STATUS[span.status.code],
        attributes={kv.key: _value(kv.value) for kv in span.attributes},
        events=[(e.name, {kv.key: _value(kv.value) for kv in e.attributes}) for e in span.events],
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


class OTLPReceiver:
    """``with OTLPReceiver() as receiver:`` — ``receiver.endpoint`` is the base URL to export to."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def _take(self, request: ExportTraceServiceRequest) -> None:
        got: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            attrs = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                got.extend(_flatten(service, span) for span in scope_spans.spans)
        with self._lock:
            self.requests += 1
            self.spans.extend(got)

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- reading ---------------------------------------------------------------------------------
    def snapshot(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self.spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace received so far."""
        return [s for s in self.snapshot() if s.trace_id == trace_id]

    def wait(
        self, predicate: Callable[[list[ReceivedSpan]], Any], timeout: float = 20.0, what: str = "spans"
    ) -> Any:
        """Poll until ``predicate(spans)`` is truthy (returns it); AssertionError naming ``what``
        and what arrived, after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            result = predicate(spans)
            if result:
                return result
            if time.monotonic() > deadline:
                names = sorted({f"{s.service}:{s.name}" for s in spans})
                raise AssertionError(f"timed out waiting for {what}; received {len(spans)} spans: {names}")
            time.sleep(0.05)
