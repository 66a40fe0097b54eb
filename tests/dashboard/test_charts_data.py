"""Rollups → chart data (issue 19, part 6): gaps for minutes without data, the error rate over
tasks (final outcomes) beside the one over attempts, latency percentiles from the per-minute
histogram, the per-type filter, and the alert on the same task-based rate. Real Redis."""

from __future__ import annotations

import re
import time

import pytest

from dashboard import rollups
from dashboard.latency_histogram import BUCKET_COUNT, BUCKETS_MS, bucket_fields, bucket_of, quantile
from dashboard.snapshot import ROLLUP_FIELDS, alerts, rollup_point
from tests.conftest import ROOT
from tests.dashboard.conftest import KEYS


def test_the_finish_script_buckets_as_the_dashboard_reads_them():
    lua = (ROOT / "shared" / "lua" / "finish.lua").read_text()
    bounds = re.search(r"local LAT_BOUNDS = \{([^}]*)\}", lua)
    assert bounds and tuple(int(b) for b in bounds.group(1).split(",")) == BUCKETS_MS
    assert [bucket_of(v) for v in (0, 5, 5.01, 60000, 60001)] == [0, 0, 1, 12, 13]
    assert bucket_fields("echo")[-1] == f"lat:echo:{BUCKET_COUNT - 1}"


def test_percentiles_from_the_histogram():
    counts = [0.0] * BUCKET_COUNT
    assert quantile(counts, 0.5) is None  # no attempts: no latency (a gap)
    counts[bucket_of(40)] = 50  # 50 attempts in (25, 50] ms
    counts[bucket_of(400)] = 50  # 50 in (250, 500]
    assert quantile(counts, 0.5) == 50.0  # rank 50: the top of the first filled bucket
    assert quantile(counts, 0.95) == 250 + 250 * 45 / 50  # linear inside (250, 500]
    counts[-1] = 100  # above 60 s: reported as the largest bound
    assert quantile(counts, 0.95) == 60000.0


def raw_minute(**fields: float) -> list[bytes | None]:
    """An HMGET reply of ROLLUP_FIELDS (missing fields None, as Redis answers)."""
    return [str(fields[f]).encode() if f in fields else None for f in ROLLUP_FIELDS]


def failing_minute() -> dict[str, float]:
    """6 tasks failing all 3 attempts (3 buckets of latency) and 30 succeeding first time."""
    return {"processed": 48, "failed": 18, "retried": 12, "tasks": 36, "tasks_failed": 6,
            "lat:2": 48, "duration_count": 48, "duration_ms_sum": 960}  # fmt: skip


def test_the_error_rate_counts_tasks_not_attempts_and_an_empty_minute_is_a_gap():
    p = rollup_point(100, raw_minute(**failing_minute()))
    assert p["error_rate"] == round(6 / 36, 4)  # the task rate: 16.7 %
    assert p["attempt_error_rate"] == round(18 / 48, 4)  # the attempt rate (second series): 37.5 %
    assert (p["tasks"], p["tasks_failed"], p["processed"], p["failed"]) == (36, 6, 48, 18)
    assert p["p50_ms"] == 17.5 and p["avg_ms"] == 20.0  # inside (10, 25]
    empty = rollup_point(101, raw_minute())
    assert empty == {"t": 6060, "processed": 0, "failed": 0, "retried": 0, "tasks": 0, "tasks_failed": 0,
                     "error_rate": None, "attempt_error_rate": None, "avg_ms": None,
                     "p50_ms": None, "p95_ms": None}  # fmt: skip


def test_the_alert_uses_the_task_rate():
    # 150 tasks succeed and 6 fail all three attempts: 3.8 % of tasks (no alert), though 10.7 %
    # of attempts failed (what made "CRITICAL" before)
    quiet = rollup_point(1, raw_minute(processed=168, failed=18, tasks=156, tasks_failed=6))
    assert quiet["attempt_error_rate"] > 0.10 and alerts([], [], [quiet]) == []
    loud = rollup_point(1, raw_minute(**failing_minute()))
    [alert] = alerts([], [], [loud])
    assert alert["level"] == "critical" and alert["kind"] == "error_rate"
    assert alert["message"] == "error rate 17% of tasks (6 of 36 failed) over the last 5 minutes"
    few = rollup_point(1, raw_minute(processed=12, failed=12, tasks=4, tasks_failed=4))
    assert alerts([], [], [few]) == []  # under 5 tasks: too few to alert on


def test_steps_sum_minutes_and_keep_gaps():
    replies = [raw_minute(), raw_minute(), raw_minute(processed=2, tasks=2, **{"lat:0": 2})]
    one, = rollups.points(10, replies, 3)  # fmt: skip
    assert one["tasks"] == 2 and one["error_rate"] == 0.0 and one["p95_ms"] == 4.8
    pts = rollups.points(10, replies, 1)
    assert [p["error_rate"] for p in pts] == [None, None, 0.0]
    assert [p["t"] for p in pts] == [600, 660, 720]


async def test_history_by_type_from_real_redis(as_role, rclient):
    minute = int(time.time() // 60)
    rclient.hset(KEYS.stats_minute(minute), mapping={
        "processed": 9, "failed": 3, "tasks": 7, "tasks_failed": 1, "retried": 2,
        "processed:fail": 3, "failed:fail": 3, "tasks:fail": 1, "tasks_failed:fail": 1,
        "processed:echo": 6, "tasks:echo": 6, "lat:echo:0": 6, "lat:fail:3": 3, "lat:0": 6, "lat:3": 3,
    })  # fmt: skip
    client, _ = await as_role("viewer")
    every = await (await client.get("/api/metrics/history?range=15m")).json()
    assert every["type"] is None and every["totals"]["error_rate"] == round(1 / 7, 4)
    assert every["totals"]["attempt_error_rate"] == round(3 / 9, 4)
    assert [p["error_rate"] for p in every["points"][-3:]] == [None, None, round(1 / 7, 4)]
    fail = await (await client.get("/api/metrics/history?range=1h&type=fail")).json()
    last = fail["points"][-1]
    assert (last["tasks"], last["tasks_failed"], last["processed"], last["error_rate"]) == (1, 1, 3, 1.0)
    assert last["p50_ms"] == 37.5 and last["retried"] is None  # (25, 50] ms; no per-type retries
    echo = await (await client.get("/api/metrics/history?range=24h&type=echo")).json()
    assert echo["totals"]["tasks"] == 6 and echo["totals"]["error_rate"] == 0.0
    assert echo["totals"]["p95_ms"] == pytest.approx(4.75, abs=0.06)  # 0.95 × 6 into (0, 5]
    bad = await client.get("/api/metrics/history?range=1h&type=nope")
    assert bad.status == 422
    body = await bad.json()
    assert "type" in str(body), body


@pytest.mark.parametrize("rng", ["15m", "7d"])
async def test_the_overview_offers_every_type_and_loads_the_chart_script(as_role, rng):
    client, _ = await as_role("viewer")
    html = await (await client.get("/")).text()
    assert '<option value="fail">fail</option>' in html and "charts.js" in html
    assert f'data-chart-range="{rng}"' in html
