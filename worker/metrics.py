"""Worker metrics: task counters written by every Dramatiq process, served by the agent.

The agent points ``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own (emptied at start) before
it starts its processes, so their counters and histograms survive a process's death and restart
(prometheus-client multiprocess mode); its ``/metrics`` merges them with the agent's own gauges
(worker up, CPU, memory, utilization, queue depths). ``/metrics`` needs ``METRICS_TOKEN`` as a
bearer token, or an ``admin`` JWT.
"""

from __future__ import annotations

import hmac
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from shared.auth import Verifier
from shared.errors import AuthError
from shared.task_types import task_types

#: Environment variable prometheus-client reads (at import) to switch to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Task duration buckets (seconds).
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

TASKS_PROCESSED = Counter("opsdeck_tasks_processed", "Attempts that ended, whatever the outcome.", ["type"])
TASKS_FAILED = Counter("opsdeck_tasks_failed", "Attempts that ended in an error (retried or not).", ["type"])
TASKS_RETRIED = Counter("opsdeck_tasks_retried", "Attempts that failed and were scheduled again.", ["type"])
TASKS_DUPLICATED = Counter(
    "opsdeck_task_duplicate_executions",
    "Attempts that ran although another attempt of the task was current or it had ended (a process "
    "stalled past its lease); their end was not recorded.",
    ["type"],
)
TASK_DURATION = Histogram(
    "opsdeck_task_duration_seconds", "Duration of one attempt, by type.", ["type"], buckets=TASK_BUCKETS
)
DEPLOYS_ENDED = Counter(
    "opsdeck_deploys", "Deploys that ended, by service and final status.", ["service", "status"]
)
#: Window of ``coordinator_active_sessions`` (seconds).
ACTIVE_SESSION_WINDOW = 15 * 60


#: The child of each (task metric, task type) met so far: ``labels()`` takes a lock and builds
#: a key on every call, the children never change, and task types are an allow-list. A process
#: makes a child only when it first counts one; the agent's registry serves the others at 0
#: (:class:`ZeroFilled`).
_CHILDREN: dict[tuple[int, str], Any] = {}


def _child(metric: Any, task_type: str) -> Any:
    key = (id(metric), task_type)  # the metrics are module constants
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(task_type)
    return child


def record_attempt(task_type: str, status: str, seconds: float | None) -> None:
    """Count one ended attempt (called once per attempt by the task-store middleware):
    processed always, failed unless it succeeded, retried when it will run again."""
    _child(TASKS_PROCESSED, task_type).inc()
    if status != "succeeded":
        _child(TASKS_FAILED, task_type).inc()
    if status == "retrying":
        _child(TASKS_RETRIED, task_type).inc()
    if seconds is not None:
        _child(TASK_DURATION, task_type).observe(seconds)


def record_duplicate(task_type: str) -> None:
    """Count one duplicate execution (its end was noted on the timeline, not recorded)."""
    _child(TASKS_DUPLICATED, task_type).inc()


def prepare_multiproc_dir(path: Path) -> Path:
    """Empty (or create) the directory the agent's processes write their samples to."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


class AgentCollector:
    """Gauges from the agent's latest look at itself and at the queues."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges of the current snapshot."""
        snap = self._snapshot()
        worker = snap.get("worker", "")
        for name, doc, key in (
            ("opsdeck_worker_up", "1 while the agent runs and publishes heartbeats.", "up"),
            (
                "opsdeck_worker_cpu_percent",
                "CPU of the agent and its processes (% of one core).",
                "cpu_percent",
            ),
            (
                "opsdeck_worker_memory_percent",
                "RSS of the agent and its processes (% of RAM).",
                "memory_percent",
            ),
            ("opsdeck_worker_utilization", "In-flight tasks / (processes x threads).", "utilization"),
            ("opsdeck_worker_processes", "Dramatiq processes alive.", "processes"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["worker"])
            family.add_metric([worker], float(snap.get(key, 0)))
            yield family
        for name, doc, key in (
            ("opsdeck_queue_length", "Messages ready in a queue.", "ready"),
            ("opsdeck_queue_delayed", "Messages waiting in a queue's delay queue (retries).", "delayed"),
            ("opsdeck_queue_dead", "Dead-lettered messages of a queue.", "dead"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue, depths in snap.get("queues", {}).items():
                family.add_metric([queue], float(depths[key]))
            yield family
        redis_up = GaugeMetricFamily("opsdeck_redis_up", "1 when the agent's last Redis call succeeded.")
        redis_up.add_metric([], float(snap.get("redis_up", 0)))
        yield redis_up
        sessions = GaugeMetricFamily(
            "coordinator_active_sessions", "Chat sessions with a turn answered in the last 15 minutes."
        )
        sessions.add_metric([], float(snap.get("active_sessions", 0)))
        yield sessions
        # the shared bandit's rollbacks, counted in Redis by bandit_rollback.lua: automatic ones
        # happen in a worker process, manual ones in the coordinator, and both count here, with
        # the other bandit series (every agent serves the same deployment-wide count: use max());
        # absent until the first read, so a restarted agent does not show a jump from 0
        if "bandit_rollbacks" in snap:
            rollbacks = CounterMetricFamily(
                "coordinator_bandit_rollbacks",
                "Rollbacks of the shared bandit to a checkpoint, by trigger (auto|manual), deployment-wide.",
                labels=["trigger"],
            )
            for trigger in ("auto", "manual"):
                rollbacks.add_metric([trigger], float(snap["bandit_rollbacks"].get(trigger, 0)))
            yield rollbacks
        if "outbox" in snap:  # RabbitMQ as the broker
            outbox = GaugeMetricFamily(
                "opsdeck_outbox_entries",
                "Submissions recorded in Redis and not yet confirmed by RabbitMQ (the relays' backlog).",
            )
            outbox.add_metric([], float(snap["outbox"]))
            yield outbox


#: Per-type counters served for every registered task type, at 0 until a process counts one.
ZERO_FILLED = (TASKS_PROCESSED, TASKS_FAILED, TASKS_RETRIED, TASKS_DUPLICATED)


class ZeroFilled:
    """The processes' merged samples, plus a 0 sample of each :data:`ZERO_FILLED` counter for
    every registered task type no process has counted yet: a type that never failed still
    exports ``opsdeck_tasks_failed_total{type=...} 0``, so rates and failure ratios have a
    series from the start instead of appearing on the first failure."""

    def __init__(self, inner: Any, types: Callable[[], Iterable[str]] = task_types) -> None:
        self._inner = inner
        self._types = types

    def collect(self) -> Iterator[Metric]:
        """Yield the inner collector's metrics with the missing per-type zeros added."""
        wanted = {d.name: d.documentation for m in ZERO_FILLED for d in m.describe()}
        types = sorted(self._types())
        for metric in self._inner.collect():
            if metric.name in wanted:
                total = metric.name + "_total"
                seen = {s.labels.get("type") for s in metric.samples if s.name == total}
                for task_type in types:
                    if task_type not in seen:
                        metric.add_sample(total, {"type": task_type}, 0.0)
                del wanted[metric.name]
            yield metric
        for name, documentation in wanted.items():  # no process has written any sample yet
            family = CounterMetricFamily(name, documentation, labels=["type"])
            for task_type in types:
                family.add_metric([task_type], 0.0)
            yield family


def build_registry(multiproc_dir: Path, collector: AgentCollector) -> CollectorRegistry:
    """The agent's registry: every process's samples merged (per-type counters filled with
    zeros), plus its own gauges."""
    registry = CollectorRegistry()
    merged = multiprocess.MultiProcessCollector(None, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    registry.register(ZeroFilled(merged))
    registry.register(collector)
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, *, token: str | None, verifier: Verifier
) -> ThreadingWSGIServer:
    """Serve ``/metrics`` of ``registry`` from a daemon thread, behind bearer auth."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        allowed = bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
        if not allowed:
            try:
                allowed = verifier.from_header(header or None).has("admin")
            except AuthError:
                allowed = False
        if not allowed:
            start_response(
                "401 Unauthorized", [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")]
            )
            return [
                b'{"error": {"code": "unauthorized", "message": "METRICS_TOKEN or an admin token required"}}'
            ]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
