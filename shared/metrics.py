"""Prometheus metrics shared by the web apps (one registry per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Latency buckets (seconds) for HTTP handlers: fine below 50 ms, where the targets are.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Request duration histogram and count by route, method and status."""

    def __init__(self, registry: CollectorRegistry, app: str) -> None:
        self.duration = Histogram(
            "opsdeck_http_request_duration_seconds",
            "HTTP request duration by route, method and status.",
            ["app", "route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "opsdeck_http_requests",
            "HTTP requests by route, method and status.",
            ["app", "route", "method", "status"],
            registry=registry,
        )
        self._app = app
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request (label children are cached: this runs on every request)."""
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            labels = (self._app, route, method, str(status))
            pair = (self.duration.labels(*labels), self.requests.labels(*labels))
            self._children[key] = pair
        pair[0].observe(seconds)
        pair[1].inc()
