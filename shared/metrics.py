"""Prometheus metrics shared by the web apps (one registry per app, so tests can build many)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from shared.redis import WaitingPool

#: Latency buckets (seconds) for HTTP handlers: fine below 50 ms, where the targets are.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NAME = "opsdeck_http_request_duration_seconds"
_HELP = "HTTP request duration by route, method and status (not WebSocket sessions or ?wait= long-polls)."
#: Buckets (seconds) for long-lived requests: WebSocket sessions and ``?wait=`` long-polls.
LONG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LONG_NAME = "opsdeck_http_long_request_duration_seconds"
_LONG_HELP = (
    "Duration of long-lived HTTP requests (WebSocket sessions, status 101, and ?wait= long-polls) "
    "by route, method and status; kept out of the latency histogram that alerts and SLOs read."
)
_LABELS = ["app", "route", "method", "status"]
#: Seconds between two probes of Redis (PING and INFO memory) by each web app.
PROBE_INTERVAL = 5.0
#: Status of a WebSocket upgrade: the request lasts as long as the session.
SWITCHING_PROTOCOLS = 101
#: Status recorded for a request whose client went away before it was answered (nginx's).
CLIENT_CLOSED = 499


def exposition_handler(
    registry: web.AppKey[CollectorRegistry],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``/metrics`` view of a web app: the Prometheus text of its ``registry``. Both apps
    declare the route in their route tables, whose edge checks ``METRICS_TOKEN`` or an admin
    token before this runs."""

    async def metrics(request: web.Request) -> web.Response:
        """Prometheus exposition (``METRICS_TOKEN`` as bearer, or an admin token)."""
        return web.Response(
            body=generate_latest(request.app[registry]), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return metrics


def cancelled_status(headers: Mapping[str, str]) -> int:
    """The status to record for a request whose handler was cancelled: aiohttp cancels a
    WebSocket handler when its client closes the connection, which ends a session answered 101;
    anything else was left unanswered (499), which is no server error."""
    return SWITCHING_PROTOCOLS if headers.get("Upgrade", "").lower() == "websocket" else CLIENT_CLOSED


class _Histogram:
    """One histogram's series: (method, route, status) → [per-bucket counts (last: above every
    bound), sum]."""

    __slots__ = ("buckets", "help", "le", "name", "series")

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        #: The ``le`` label of each bucket, as Prometheus writes bounds.
        self.le = (*(repr(bound) for bound in buckets), "+Inf")
        self.series: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self.series.get((method, route, status))
        if series is None:
            series = self.series[(method, route, status)] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect_left(self.buckets, seconds)] += 1  # le is inclusive: v <= bound
        series[1][0] += seconds

    def family(self, app: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.help, labels=_LABELS)
        for (method, route, status), (counts, total) in list(self.series.items()):
            running, buckets = 0, []
            for le, count in zip(self.le, counts, strict=True):
                running += count
                buckets.append((le, running))
            family.add_metric([app, route, method, str(status)], buckets, total[0])
        return family


class HttpMetrics(Collector):
    """Request duration histograms by route, method and status (their ``_count`` counts requests).

    Two histograms: ``opsdeck_http_request_duration_seconds`` for ordinary requests (the one the
    latency alert and SLOs read) and ``opsdeck_http_long_request_duration_seconds`` for requests
    that last as long as the client wants: WebSocket sessions (status 101, routed there by
    :meth:`observe` itself) and ``?wait=`` long-polls (:meth:`observe_long`).

    A custom collector rather than a ``prometheus_client.Histogram``: ``observe`` runs on every
    request of the event loop's thread and is two list/dict updates here, where a Histogram
    child takes a lock and several calls per observation. The exposition is the same
    (``_bucket`` with cumulative ``le`` counts, ``_count``, ``_sum``); scrapes run on the same
    event loop, so they never see half an update.
    """

    def __init__(self, registry: CollectorRegistry, app: str) -> None:
        self._app = app
        self._short = _Histogram(NAME, _HELP, HTTP_BUCKETS)
        self._long = _Histogram(LONG_NAME, _LONG_HELP, LONG_BUCKETS)
        self._series = self._short.series
        #: Record one long-lived request (a ``?wait=`` long-poll): (method, route, status, seconds).
        self.observe_long = self._long.observe
        registry.register(self)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request (a WebSocket session, status 101, goes to the long histogram)."""
        if status == SWITCHING_PROTOCOLS:
            self.observe_long(method, route, status, seconds)
            return
        # the short histogram's update inlined: this runs on every request
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = ([0] * (len(HTTP_BUCKETS) + 1), [0.0])
        series[0][bisect_left(HTTP_BUCKETS, seconds)] += 1  # le is inclusive: v <= bound
        series[1][0] += seconds

    def describe(self) -> list[HistogramMetricFamily]:
        """The metrics' names and types, without samples (for registration)."""
        return [HistogramMetricFamily(h.name, h.help, labels=_LABELS) for h in (self._short, self._long)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histograms' samples now."""
        yield self._short.family(self._app)
        yield self._long.family(self._app)


class RedisMetrics(Collector):
    """One web app's view of Redis: reachability (``opsdeck_redis_up``, set by a periodic probe),
    memory, the pool's waits and sheds, and the requests answered 503 for a Redis condition by
    error code (each code's series exists from the start, at 0)."""

    def __init__(self, registry: CollectorRegistry, app: str, codes: Iterable[str]) -> None:
        self._app = app
        #: Seconds between two probes (the probe task reads it before each sleep).
        self.probe_interval = PROBE_INTERVAL
        #: The app's pool (set once its client exists).
        self.pool: WaitingPool | None = None
        #: 1 when the last probe's PING was answered, 0 when it failed or before the first probe.
        self.up = 0
        #: INFO memory of the last probe that read it (bytes; maxmemory 0 = no limit).
        self.used_memory: int | None = None
        self.maxmemory: int | None = None
        #: Requests answered 503 for a Redis condition, by error code.
        self.errors: dict[str, int] = dict.fromkeys(codes, 0)
        registry.register(self)

    def count(self, code: str) -> None:
        """One more request answered with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def describe(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        """The metrics' names and types (for registration)."""
        return list(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The samples now."""
        yield from self._families()

    def _families(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        app, pool = [self._app], self.pool
        up = GaugeMetricFamily("opsdeck_redis_up", "1 when this process's last Redis probe (PING) succeeded.",
                               labels=["app"])  # fmt: skip
        up.add_metric(app, float(self.up))
        yield up
        waits = CounterMetricFamily(
            "opsdeck_redis_pool_waits",
            "Redis connection checkouts that found every pooled connection in use and waited.",
            labels=["app"],
        )
        sheds = CounterMetricFamily(
            "opsdeck_redis_pool_sheds",
            "Redis connection checkouts that waited REDIS_TIMEOUT in vain (request answered 503 overloaded).",
            labels=["app"],
        )
        in_use = GaugeMetricFamily("opsdeck_redis_pool_in_use", "Redis connections checked out now.",
                                   labels=["app"])  # fmt: skip
        size = GaugeMetricFamily("opsdeck_redis_pool_max", "Size of the Redis connection pool.",
                                 labels=["app"])  # fmt: skip
        if pool is not None:
            waits.add_metric(app, float(pool.waits))
            sheds.add_metric(app, float(pool.sheds))
            in_use.add_metric(app, float(pool.in_use))
            size.add_metric(app, float(pool.max_connections))
        yield from (waits, sheds, in_use, size)
        errors = CounterMetricFamily(
            "opsdeck_redis_errors",
            "Requests answered 503 for a Redis condition, by error code "
            "(unavailable, overloaded, redis_out_of_memory, redis_loading, ...).",
            labels=["app", "code"],
        )
        for code, count in list(self.errors.items()):
            errors.add_metric([self._app, code], float(count))
        yield errors
        used = GaugeMetricFamily("opsdeck_redis_memory_used_bytes", "Redis used_memory (INFO memory).",
                                 labels=["app"])  # fmt: skip
        limit = GaugeMetricFamily(
            "opsdeck_redis_memory_max_bytes", "Redis maxmemory (INFO memory; 0 = no limit).", labels=["app"]
        )
        if self.used_memory is not None and self.maxmemory is not None:
            used.add_metric(app, float(self.used_memory))
            limit.add_metric(app, float(self.maxmemory))
        yield from (used, limit)


class RateLimitMetrics(Collector):
    """``opsdeck_rate_limited_total{app, route_class}``: requests (and WebSocket messages) refused
    with 429 ``rate_limited``, each class's series there from the start at 0. A plain dict update
    per refusal, read at scrape (scrapes run on the same event loop)."""

    def __init__(self, registry: CollectorRegistry, app: str, classes: Iterable[str]) -> None:
        self._app = app
        #: Refusals by route class.
        self.refused: dict[str, int] = dict.fromkeys(classes, 0)
        registry.register(self)

    def count(self, route_class: str) -> None:
        """One more refusal of ``route_class``."""
        self.refused[route_class] = self.refused.get(route_class, 0) + 1

    def describe(self) -> list[CounterMetricFamily]:
        """The metric's name and type (for registration)."""
        return [self._family()]

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The samples now."""
        yield self._family()

    def _family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "opsdeck_rate_limited",
            "Requests and WebSocket messages refused 429 rate_limited (a token subject over its "
            "RATE_LIMIT_<CLASS> bucket), by route class.",
            labels=["app", "route_class"],
        )
        for route_class, count in list(self.refused.items()):
            family.add_metric([self._app, route_class], float(count))
        return family
