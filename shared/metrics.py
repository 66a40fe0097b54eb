"""Prometheus metrics shared by the web apps (one registry per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

#: Latency buckets (seconds) for HTTP handlers: fine below 50 ms, where the targets are.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Request duration histogram by route, method and status (its ``_count`` counts requests)."""

    def __init__(self, registry: CollectorRegistry, app: str) -> None:
        self.duration = Histogram(
            "opsdeck_http_request_duration_seconds",
            "HTTP request duration by route, method and status.",
            ["app", "route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self._app = app
        self._children: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request (label children are cached: this runs on every request)."""
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.duration.labels(self._app, route, method, str(status))
        child.observe(seconds)
