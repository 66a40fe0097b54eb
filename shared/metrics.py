"""Prometheus metrics shared by the web apps (one registry per app, so tests can build many)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

#: Latency buckets (seconds) for HTTP handlers: fine below 50 ms, where the targets are.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NAME = "opsdeck_http_request_duration_seconds"
_HELP = "HTTP request duration by route, method and status."
#: The ``le`` label of each bucket, as Prometheus writes bounds.
_LE = (*(repr(bound) for bound in HTTP_BUCKETS), "+Inf")


class HttpMetrics(Collector):
    """Request duration histogram by route, method and status (its ``_count`` counts requests).

    A custom collector rather than a ``prometheus_client.Histogram``: ``observe`` runs on every
    request of the event loop's thread and is two list/dict updates here, where a Histogram
    child takes a lock and several calls per observation. The exposition is the same
    (``_bucket`` with cumulative ``le`` counts, ``_count``, ``_sum``); scrapes run on the same
    event loop, so they never see half an update.
    """

    def __init__(self, registry: CollectorRegistry, app: str) -> None:
        self._app = app
        #: (method, route, status) → [per-bucket counts (last: above every bound), sum]
        self._series: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}
        registry.register(self)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request."""
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = ([0] * (len(HTTP_BUCKETS) + 1), [0.0])
        series[0][bisect_left(HTTP_BUCKETS, seconds)] += 1  # le is inclusive: v <= bound
        series[1][0] += seconds

    def describe(self) -> list[HistogramMetricFamily]:
        """The metric's name and type, without samples (for registration)."""
        return [self._family()]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histogram's samples now."""
        family = self._family()
        for (method, route, status), (counts, total) in list(self._series.items()):
            running, buckets = 0, []
            for le, count in zip(_LE, counts, strict=True):
                running += count
                buckets.append((le, running))
            family.add_metric([self._app, route, method, str(status)], buckets, total[0])
        yield family

    @staticmethod
    def _family() -> HistogramMetricFamily:
        labels = ["app", "route", "method", "status"]
        return HistogramMetricFamily(NAME, _HELP, labels=labels)
