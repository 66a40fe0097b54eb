"""Chart points from the per-minute task rollups (``Keys.stats_minute``, written by ``finish.lua``).

A point carries attempts (``processed``, ``failed``: every ended attempt, a task retried twice
counts three), task outcomes (``tasks``, ``tasks_failed``: final ends only) and the error rate
over each, and the attempt latency's p50/p95 from the minute histograms
(:mod:`dashboard.latency_histogram`). A step without data is a gap: its rates and latencies are
None, not 0. With a task type the point is that type's (its ``:<type>`` fields; the rollups keep
no per-type retries or duration sums, so those are None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dashboard.latency_histogram import BUCKET_COUNT, bucket_fields, quantile

#: Counters kept overall and per type, in this order first in every field list.
COUNTS = ("processed", "failed", "tasks", "tasks_failed")
#: Overall-only fields, after COUNTS.
OVERALL = ("retried", "duration_ms_sum", "duration_count")


def rollup_fields(task_type: str | None = None) -> tuple[str, ...]:
    """The fields one HMGET of a minute's rollup reads (overall or of one task type)."""
    if task_type is None:
        return (*COUNTS, *OVERALL, *bucket_fields())
    return (*(f"{c}:{task_type}" for c in COUNTS), *bucket_fields(task_type))


def sum_minutes(replies: Sequence[Sequence[Any]]) -> list[float]:
    """Field-wise sums of several minutes' HMGET replies (a missing field counts 0)."""
    width = len(replies[0]) if replies else 0
    sums = [0.0] * width
    for raw in replies:
        for j, v in enumerate(raw):
            if v is not None:
                sums[j] += float(v)
    return sums


def rate(part: float, whole: float) -> float | None:
    """``part / whole`` rounded, or None when there is nothing to divide (a gap)."""
    return round(part / whole, 4) if whole else None


def point(t: int, sums: Sequence[float], task_type: str | None = None) -> dict[str, Any]:
    """One chart point from :func:`sum_minutes` of :func:`rollup_fields` replies."""
    processed, failed, tasks, tasks_failed = sums[:4]
    if task_type is None:
        retried: float | None = sums[4]
        dur_sum, dur_count = sums[5], sums[6]
        buckets = sums[7 : 7 + BUCKET_COUNT]
    else:
        retried, dur_sum, dur_count = None, 0.0, 0.0
        buckets = sums[4 : 4 + BUCKET_COUNT]
    return {
        "t": t,
        "processed": int(processed),
        "failed": int(failed),
        "retried": None if retried is None else int(retried),
        "tasks": int(tasks),
        "tasks_failed": int(tasks_failed),
        "error_rate": rate(tasks_failed, tasks),
        "attempt_error_rate": rate(failed, processed),
        "avg_ms": round(dur_sum / dur_count, 1) if dur_count else None,
        "p50_ms": quantile(buckets, 0.5),
        "p95_ms": quantile(buckets, 0.95),
    }


def points(
    first_minute: int, replies: Sequence[Sequence[Any]], step: int, task_type: str | None = None
) -> list[dict[str, Any]]:
    """Points of ``step`` minutes each from consecutive minutes' replies (oldest first)."""
    return [
        point((first_minute + i) * 60, sum_minutes(replies[i : i + step]), task_type)
        for i in range(0, len(replies), step)
    ]


def totals(
    first_minute: int, replies: Sequence[Sequence[Any]], task_type: str | None = None
) -> dict[str, Any]:
    """The whole range as one point (its sums, rates and percentiles) without ``t``."""
    out = point(first_minute * 60, sum_minutes(replies), task_type)
    del out["t"]
    return out
