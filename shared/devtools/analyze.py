"""``opsdeck analyze``: a production-readiness report read from Redis and the settings.

Four areas, each scored 0–100 by subtracting the weight of its findings: **queues** (pending,
processing, dead, age of the oldest ready message), **bottlenecks** (stats read latency, slow
task types by p95, retry storms), **resources** (idle or saturated workers → suggested number
of processes) and **security** (Redis without TLS, weak or default secrets, dashboard without a
password or bound publicly, debug logging in production). The overall score is their mean.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
import redis

from shared.keys import Keys
from shared.settings import MIN_SECRET_BYTES, Settings
from shared.stats import Heartbeat
from shared.task_types import all_queues

Severity = Literal["info", "warning", "critical"]
#: Points a finding takes off its area's score.
WEIGHT: dict[Severity, int] = {"info": 0, "warning": 15, "critical": 40}
#: Recent finished tasks sampled for per-type latency.
LATENCY_SAMPLE = 500


@dataclass
class Finding:
    """One observation with why it matters and what to do."""

    area: str
    severity: Severity
    title: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    """Findings, sub-scores and the overall score."""

    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, area: str, severity: Severity, title: str, detail: str, fix: str = "") -> None:
        """Record a finding."""
        self.findings.append(Finding(area, severity, title, detail, fix))

    def scores(self) -> dict[str, int]:
        """0–100 per area."""
        out = {}
        for area in ("queues", "bottlenecks", "resources", "security"):
            lost = sum(WEIGHT[f.severity] for f in self.findings if f.area == area)
            out[area] = max(0, 100 - lost)
        return out

    def overall(self) -> int:
        """Mean of the area scores."""
        s = self.scores()
        return round(sum(s.values()) / len(s))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "score": self.overall(),
            "scores": self.scores(),
            "findings": [asdict(f) for f in self.findings],
            "facts": self.facts,
        }


def analyze(settings: Settings, client: redis.Redis) -> Report:
    """Read everything needed in a few round trips and judge it."""
    report = Report()
    keys = settings.keys
    check_security(settings, report)
    started = time.perf_counter()
    try:
        beats = read_heartbeats(client, keys, settings)
        queues = read_queues(client, keys)
    except redis.RedisError as exc:
        report.add(
            "queues", "critical", "Redis unreachable", f"{type(exc).__name__}: {exc}", "check REDIS_URL"
        )
        return report
    read_ms = (time.perf_counter() - started) * 1000
    report.facts.update(stats_read_ms=round(read_ms, 2), workers=len(beats), queues=queues)
    check_queues(queues, beats, report)
    check_bottlenecks(client, keys, read_ms, report)
    check_resources(beats, queues, report)
    return report


def read_heartbeats(client: redis.Redis, keys: Keys, settings: Settings) -> list[Heartbeat]:
    """Fresh heartbeats of every worker agent."""
    fresh_after = (time.time() - 3 * settings.worker_poll_interval) * 1000
    ids = [i.decode() for i in client.zrangebyscore(keys.workers, fresh_after, "+inf")]
    raws = client.mget([keys.worker(i) for i in ids]) if ids else []
    return [Heartbeat.model_validate_json(r) for r in raws if r]


def read_queues(client: redis.Redis, keys: Keys) -> dict[str, dict[str, float]]:
    """Ready, delayed and dead counts of each queue, and the age (s) of its oldest ready message."""
    names = all_queues()
    with client.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.llen(keys.queue(q))
            pipe.llen(keys.delay_queue(q))
            pipe.zcard(keys.dead_letters(q))
            pipe.lindex(keys.queue(q), 0)
        replies = pipe.execute()
    out: dict[str, dict[str, float]] = {}
    oldest_ids = {}
    for i, q in enumerate(names):
        ready, delayed, dead, first = replies[4 * i : 4 * i + 4]
        out[q] = {"ready": ready, "delayed": delayed, "dead": dead, "oldest_age_s": 0.0}
        if first:
            oldest_ids[q] = first
    if oldest_ids:
        with client.pipeline(transaction=False) as pipe:
            for q, mid in oldest_ids.items():
                pipe.hget(keys.queue_messages(q), mid)
            for q, raw in zip(oldest_ids, pipe.execute(), strict=True):
                if raw:
                    ts = orjson.loads(raw).get("message_timestamp", time.time() * 1000)
                    out[q]["oldest_age_s"] = round(max(0.0, time.time() - ts / 1000), 1)
    return out


def check_queues(queues: dict[str, dict[str, float]], beats: list[Heartbeat], report: Report) -> None:
    """Backlog, dead letters, stale messages, and whether anyone consumes at all."""
    pending = sum(q["ready"] for q in queues.values())
    dead = sum(q["dead"] for q in queues.values())
    processing = sum(b.in_flight for b in beats)
    report.facts.update(pending=pending, dead=dead, processing=processing)
    if not beats:
        report.add(
            "queues", "critical", "No live worker", "no fresh worker heartbeat", "start `python -m worker`"
        )
    if pending > 100:
        report.add(
            "queues",
            "warning",
            "Queue backlog",
            f"{pending:.0f} messages ready (alert above 100)",
            "add worker processes or agents; see docs/runbook.md#queue-backlog",
        )
    if dead:
        report.add(
            "queues",
            "warning",
            "Dead letters",
            f"{dead:.0f} dead-lettered messages",
            "inspect GET /api/v1/tasks?status=dead, fix the cause, retry them",
        )
    for name, q in queues.items():
        if q["oldest_age_s"] > 300:
            report.add(
                "queues",
                "critical" if name.endswith(".p0") else "warning",
                f"Stale messages in {name}",
                f"oldest ready message waited {q['oldest_age_s']:.0f}s",
                "check the workers consume it",
            )


def check_bottlenecks(client: redis.Redis, keys: Keys, read_ms: float, report: Report) -> None:
    """Slow stats reads, slow task types (p95 of recent tasks) and retry storms (last 15 min)."""
    if read_ms > 100:
        report.add(
            "bottlenecks",
            "warning",
            "Slow Redis",
            f"reading the stats took {read_ms:.0f} ms",
            "check Redis latency and load",
        )
    ids = [i.decode() for i in client.zrevrange(keys.tasks_by_status("succeeded"), 0, LATENCY_SAMPLE - 1)]
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(keys.task(task_id), "type", "started_at", "finished_at")
        rows = pipe.execute() if ids else []
    by_type: dict[str, list[float]] = {}
    for kind, start, end in rows:
        if kind and start and end:
            by_type.setdefault(kind.decode(), []).append((int(end) - int(start)) / 1000)
    p95 = {k: percentile(v, 95) for k, v in by_type.items()}
    report.facts["p95_seconds_by_type"] = {k: round(v, 3) for k, v in p95.items()}
    for kind, value in p95.items():
        if value > 10 and kind not in ("sleep", "deploy"):
            report.add(
                "bottlenecks",
                "warning",
                f"Slow task type {kind}",
                f"p95 {value:.1f}s over the last {len(by_type[kind])} runs",
                "profile it or give it its own queue group",
            )
    minute = int(time.time() // 60)
    with client.pipeline(transaction=False) as pipe:
        for m in range(minute - 14, minute + 1):
            pipe.hmget(keys.stats_minute(m), "processed", "retried")
        totals = [(int(p or 0), int(r or 0)) for p, r in pipe.execute()]
    processed, retried = sum(p for p, _ in totals), sum(r for _, r in totals)
    report.facts.update(processed_15m=processed, retried_15m=retried)
    if processed >= 20 and retried / processed > 0.2:
        report.add(
            "bottlenecks",
            "critical",
            "Retry storm",
            f"{retried} of {processed} attempts retried in 15 min",
            "find the failing dependency; see docs/runbook.md#high-error-rate",
        )


def check_resources(beats: list[Heartbeat], queues: dict[str, dict[str, float]], report: Report) -> None:
    """Idle or saturated workers, and the number of processes the load suggests."""
    capacity = sum(b.processes * b.threads for b in beats)
    busy = sum(b.in_flight for b in beats)
    pending = sum(q["ready"] for q in queues.values())
    utilization = busy / capacity if capacity else 0.0
    processes = sum(b.processes for b in beats)
    threads = beats[0].threads if beats else 8
    wanted = max(1, math.ceil((busy + min(pending, capacity or threads)) / (0.7 * threads)))
    report.facts.update(utilization=round(utilization, 3), processes=processes, suggested_processes=wanted)
    for beat in beats:
        if beat.cpu_percent > 80 * max(1, beat.processes):
            report.add(
                "resources",
                "warning",
                f"Saturated worker {beat.id}",
                f"CPU {beat.cpu_percent:.0f}%",
                "add an agent on another machine",
            )
        if beat.memory_percent > 80:
            report.add(
                "resources",
                "critical",
                f"Memory pressure on {beat.id}",
                f"{beat.memory_percent:.0f}% of RAM",
                "look for memory growth; see docs/runbook.md#memory-growth",
            )
    if beats and utilization > 0.9 and pending > 0:
        report.add(
            "resources",
            "warning",
            "Workers saturated",
            f"{utilization:.0%} busy with {pending:.0f} waiting",
            f"run about {wanted} processes (now {processes})",
        )
    elif beats and utilization < 0.1 and pending == 0 and processes > 1:
        report.add(
            "resources",
            "info",
            "Workers mostly idle",
            f"{utilization:.0%} busy",
            f"{wanted} process(es) would do (now {processes})",
        )


def check_security(settings: Settings, report: Report) -> None:
    """Settings that are unsafe in production (development gets informational notes)."""
    severity: Severity = "critical" if settings.production else "info"
    url = settings.effective_redis_url
    host = url.split("@")[-1].split("//")[-1].split(":")[0].split("/")[0]
    if url.startswith("redis://") and host not in ("127.0.0.1", "localhost", "::1"):
        report.add(
            "security",
            severity,
            "Redis without TLS",
            f"REDIS_URL uses redis:// to {host}",
            "use rediss:// (or a private network only)",
        )
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if not secret:
        report.add(
            "security",
            severity,
            "No JWT_SECRET",
            "tokens are signed with the development secret",
            "set JWT_SECRET (32+ random bytes)",
        )
    elif len(secret) < MIN_SECRET_BYTES or len(set(secret)) < 8 or secret.lower() in ("secret", "changeme"):
        report.add(
            "security",
            "critical",
            "Weak JWT_SECRET",
            "too short or too repetitive",
            "generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
        )
    password = getattr(settings, "dashboard_password", None)
    public = settings.dashboard_host not in ("127.0.0.1", "localhost", "::1")
    if public and not password:
        report.add(
            "security",
            "critical",
            "Dashboard public without password",
            f"DASHBOARD_HOST={settings.dashboard_host}",
            "set DASHBOARD_PASSWORD",
        )
    if settings.production and settings.log_level.upper() == "DEBUG":
        report.add("security", "warning", "Debug logging in production", "LOG_LEVEL=DEBUG", "use INFO")
    if settings.production and settings.metrics_token is None:
        report.add(
            "security",
            "info",
            "No METRICS_TOKEN",
            "Prometheus needs an admin JWT to scrape",
            "set METRICS_TOKEN",
        )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def render_text(report: Report) -> str:
    """The human form of a report."""
    lines = [f"Opsdeck readiness: {report.overall()}/100"]
    lines += [f"  {area:<12} {score:>3}" for area, score in report.scores().items()]
    for f in sorted(report.findings, key=lambda f: -WEIGHT[f.severity]):
        lines.append(f"- [{f.severity}] {f.area}: {f.title}: {f.detail}" + (f" → {f.fix}" if f.fix else ""))
    if not report.findings:
        lines.append("- no findings")
    return "\n".join(lines)
