"""What the dashboard shows live, read from Redis in two pipelined round trips whatever the size.

Round trip 1 reads the worker registry, the paused-queue set, every queue's counters and the
last LIVE_MINUTES per-minute rollups; round trip 2 reads the heartbeats of the registered
workers (one MGET). :func:`alerts` turns the result into the overview's active alerts.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson

from dashboard.rollups import point, rollup_fields, sum_minutes
from shared.keys import Keys
from shared.transport.api import QueueAdmin
from shared.transport.queues import known_queues

#: Minutes of per-minute rollups in every live snapshot (throughput and error-rate charts).
LIVE_MINUTES = 15
#: Minutes the error-rate alert looks back over.
ERROR_WINDOW = 5
#: Fewest tasks ended (final outcomes) in the window before an error rate can raise an alert.
ERROR_MIN_TASKS = 5
#: Points kept per worker sparkline (one per heartbeat).
SPARK_POINTS = 60
#: Fields of every live minute (overall counters and latency histogram: a fixed number).
ROLLUP_FIELDS = rollup_fields()
#: Alert thresholds (DESIGN §6): queue backlog, CPU and memory percent, error-rate warn/critical.
QUEUE_DEPTH_MAX = 100
CPU_MAX = 80.0
MEMORY_MAX = 80.0
ERROR_WARN, ERROR_CRIT = 0.05, 0.10
#: Heartbeat fields carried to the browser (the per-process list is reduced to its essentials).
WORKER_FIELDS = (
    "id",
    "host",
    "pid",
    "state",
    "version",
    "started_at",
    "sent_at",
    "uptime_seconds",
    "cpu_percent",
    "rss_bytes",
    "memory_percent",
    "processes",
    "processes_desired",
    "threads",
    "in_flight",
    "processed",
    "failed",
    "queues",
)


def rollup_point(minute: int, raw: list[Any]) -> dict[str, Any]:
    """One chart point from an HMGET of ROLLUP_FIELDS."""
    return point(minute * 60, sum_minutes([raw]))


def shape_worker(raw: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat fields the UI shows, with a compact per-process list."""
    out = {f: raw.get(f) for f in WORKER_FIELDS}
    out["procs"] = [
        {
            k: p.get(k)
            for k in (
                "pid",
                "alive",
                "cpu_percent",
                "rss_bytes",
                "started_at",
                "restarts",
                "in_flight",
                "processed",
                "failed",
                "tasks",
            )
        }
        for p in raw.get("procs") or []
    ]
    return out


class SnapshotReader:
    """Reads the live state; remembers sparklines and the queues seen in heartbeats."""

    def __init__(self, keys: Keys, admin: QueueAdmin) -> None:
        self.keys = keys
        self.admin = admin
        self.sparks: dict[str, deque[tuple[float, float, float]]] = {}
        self._seen_queues: set[str] = set()
        self.round_trips = 0

    async def read(self, client: Any) -> dict[str, Any]:
        """Sections ``workers``, ``queues``, ``throughput``, ``alerts``, ``meta``."""
        keys = self.keys
        now = time.time()
        minute = int(now // 60)
        minutes = list(range(minute - LIVE_MINUTES + 1, minute + 1))
        queues = known_queues(self._seen_queues)
        async with client.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.workers, 0, -1, withscores=True)
            pipe.smembers(keys.paused_queues)
            stats_end = 2 + self.admin.stats_commands(pipe, queues)
            for m in minutes:
                pipe.hmget(keys.stats_minute(m), ROLLUP_FIELDS)
            replies = await pipe.execute()
        self.round_trips += 1
        registry = [(m.decode(), score) for m, score in replies[0]]
        paused = {q.decode() for q in replies[1]}
        queue_rows = await self.admin.stats_from(replies[2:stats_end], queues, paused)
        throughput = [rollup_point(m, r) for m, r in zip(minutes, replies[stats_end:], strict=True)]
        workers = await self.read_workers(client, registry)
        self._seen_queues = paused | {q for w in workers if w.get("queues") for q in w["queues"]}
        return {
            "workers": workers,
            "queues": queue_rows,
            "throughput": throughput,
            "alerts": alerts(workers, queue_rows, throughput),
            "meta": {"time": round(now, 3)},
        }

    async def read_workers(self, client: Any, registry: list[tuple[str, float]]) -> list[dict[str, Any]]:
        """Heartbeats of the registered workers (one MGET); missing ones are reported ``down``."""
        ids = [i for i, _ in registry]
        raws = await client.mget([self.keys.worker(i) for i in ids]) if ids else []
        if ids:
            self.round_trips += 1
        workers = []
        for (wid, score), raw in zip(registry, raws, strict=True):
            beat = orjson.loads(raw) if raw else None
            if beat is None:
                workers.append(
                    {"id": wid, "state": "down", "last_seen": score / 1000, "spark": self.spark(wid)}
                )
                continue
            worker = shape_worker(beat)
            # the registry's score, or the heartbeat's own time when it is newer (a beat written
            # between this read's two round trips): one frame for it, not a second one for the score
            worker["last_seen"] = max(score, int(beat["sent_at"] * 1000)) / 1000
            spark = self.sparks.setdefault(wid, deque(maxlen=SPARK_POINTS))
            if not spark or spark[-1][0] != beat["sent_at"]:
                spark.append((beat["sent_at"], beat["cpu_percent"], beat["memory_percent"]))
            worker["spark"] = self.spark(wid)
            workers.append(worker)
        for gone in set(self.sparks) - set(ids):
            del self.sparks[gone]
        return workers

    def spark(self, worker_id: str) -> dict[str, list[float]]:
        """A worker's recent CPU and memory percentages (oldest first)."""
        points = self.sparks.get(worker_id, ())
        return {"cpu": [p[1] for p in points], "mem": [p[2] for p in points]}


def stopped_alert(w: dict[str, Any]) -> dict[str, str] | None:
    """A worker that runs no Dramatiq process (stopped, or scaled to 0/0): its queues' tasks wait."""
    running, desired = w.get("processes") or 0, w.get("processes_desired") or 0
    if w["state"] != "stopped" and (running or desired):
        return None
    how = "is stopped" if w["state"] == "stopped" else "is scaled to 0 processes"
    return {
        "level": "warning",
        "kind": "worker_stopped",
        "subject": w["id"],
        "message": f"worker {w['id']} {how} ({running}/{desired} processes): it runs no task",
    }


def alerts(
    workers: list[dict[str, Any]], queues: list[dict[str, Any]], throughput: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Active alerts: worker down, CPU and memory > 80 %, queue backlog > 100, error rate over
    tasks > 5/10 %."""
    out: list[dict[str, str]] = []
    for w in workers:
        wid = w["id"]
        if w["state"] == "down":
            out.append(
                {
                    "level": "critical",
                    "kind": "worker_down",
                    "subject": wid,
                    "message": f"worker {wid} stopped sending heartbeats",
                }
            )
            continue
        if stopped := stopped_alert(w):
            out.append(stopped)
        busiest = max([p["cpu_percent"] or 0.0 for p in w["procs"]] or [0.0])
        if busiest > CPU_MAX:
            out.append(
                {
                    "level": "warning",
                    "kind": "cpu",
                    "subject": wid,
                    "message": f"a process of {wid} uses {busiest:.0f} % CPU",
                }
            )
        if (w["memory_percent"] or 0) > MEMORY_MAX:
            out.append(
                {
                    "level": "warning",
                    "kind": "memory",
                    "subject": wid,
                    "message": f"{wid} uses {w['memory_percent']:.0f} % of its host's memory",
                }
            )
    for q in queues:
        if q["ready"] > QUEUE_DEPTH_MAX:
            out.append(
                {
                    "level": "warning",
                    "kind": "queue_depth",
                    "subject": q["name"],
                    "message": f"queue {q['name']} has {q['ready']} ready messages",
                }
            )
    window = throughput[-ERROR_WINDOW:]
    tasks = sum(p["tasks"] for p in window)
    failed = sum(p["tasks_failed"] for p in window)
    # over tasks (final outcomes), as the chart: a task failing three attempts counts once
    if tasks >= ERROR_MIN_TASKS and failed / tasks > ERROR_WARN:
        rate = failed / tasks
        out.append(
            {
                "level": "critical" if rate > ERROR_CRIT else "warning",
                "kind": "error_rate",
                "subject": "tasks",
                "message": f"error rate {rate:.0%} of tasks ({failed} of {tasks} failed) "
                f"over the last {ERROR_WINDOW} minutes",
            }
        )
    return out
