"""The per-minute latency histogram of task attempts, in the task rollups (``Keys.stats_minute``).

``finish.lua`` counts every ended attempt with a known duration in one fixed bucket, overall
(``lat:<i>``) and per task type (``lat:<type>:<i>``); bucket ``i`` holds durations up to
``BUCKETS_MS[i]`` (above the one before), the last index (``len(BUCKETS_MS)``) those above the
largest bound. The script keeps its own copy of the bounds (``LAT_BOUNDS``): a test checks both
lists are the same. The dashboard sums buckets over a chart step and estimates p50/p95 from them
(:func:`quantile`, linear inside a bucket, as Prometheus' ``histogram_quantile``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

#: Upper bounds (ms) of the buckets, then one bucket for everything above the last bound.
BUCKETS_MS: Final[tuple[int, ...]] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
#: Number of buckets (the bounded ones and the overflow).
BUCKET_COUNT: Final = len(BUCKETS_MS) + 1


def bucket_of(duration_ms: float) -> int:
    """The bucket index of one duration (what ``finish.lua`` computes)."""
    for i, bound in enumerate(BUCKETS_MS):
        if duration_ms <= bound:
            return i
    return len(BUCKETS_MS)


def bucket_fields(task_type: str | None = None) -> tuple[str, ...]:
    """The rollup fields of the histogram, overall or of one task type, bucket 0 first."""
    prefix = "lat:" if task_type is None else f"lat:{task_type}:"
    return tuple(f"{prefix}{i}" for i in range(BUCKET_COUNT))


def quantile(counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) in ms of a histogram's bucket counts; None when it is empty.

    Linear interpolation inside the bucket the rank falls in; a rank in the overflow bucket is
    reported as the largest bound (the histogram knows nothing above it)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(BUCKETS_MS):
                return float(BUCKETS_MS[-1])
            low = BUCKETS_MS[i - 1] if i else 0
            return round(low + (BUCKETS_MS[i] - low) * (rank - seen) / count, 1)
        seen += count
    return float(BUCKETS_MS[-1])
