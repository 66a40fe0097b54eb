"""The per-minute rollups count task outcomes and attempt latency (issue 19, part 6), written by a
real worker agent: 6 ``fail`` tasks of 3 attempts each and 6 that succeed. The dashboard's history
and alert read the error rate over tasks (6 of 12) beside the one over attempts (18 of 24), and
p50/p95 from the latency histogram (the sleeps' 300 ms bucket)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from dashboard.history import read_history
from dashboard.latency_histogram import bucket_fields, bucket_of
from dashboard.snapshot import alerts
from tests.worker.test_end_to_end import KEYS, start_agent, wait_running, wait_status

pytestmark = pytest.mark.slow
FAST_RETRIES = {"TASK_MAX_RETRIES": 2, "RETRY_MIN_BACKOFF": 0.05, "RETRY_MAX_BACKOFF": 0.1}


def rollup_totals(rclient) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key in rclient.keys(KEYS.stats_minute_prefix + "*"):
        for field, value in rclient.hgetall(key).items():
            totals[field.decode()] = totals.get(field.decode(), 0) + float(value)
    return totals


async def test_rollups_count_final_outcomes_and_latency_buckets(
    procs, env_factory, tmp_path, rclient, redis_url, api, auth
):
    start_agent(procs, env_factory, tmp_path, **FAST_RETRIES)
    wait_running(rclient, "agent")
    bodies = [{"type": "fail", "payload": {"message": "diagnostic"}}] * 6
    bodies += [{"type": "echo", "payload": {"n": 1}}] * 3 + [
        {"type": "sleep", "payload": {"seconds": 0.3}}
    ] * 3
    ids = []
    for body in bodies:
        reply = await api.post("/api/v1/tasks", json=body, headers=auth())
        assert reply.status == 202, await reply.text()
        ids.append((await reply.json())["id"])
    for task_id in ids:
        await asyncio.to_thread(wait_status, rclient, task_id, "succeeded", "dead")

    t = rollup_totals(rclient)
    assert (t["processed"], t["failed"], t["retried"]) == (24, 18, 12)  # attempts, as before
    assert (t["tasks"], t["tasks_failed"]) == (12, 6)  # final outcomes: a task counts once
    assert (t["tasks:fail"], t["tasks_failed:fail"], t["tasks:sleep"]) == (6, 6, 3)
    assert "tasks_failed:echo" not in t
    assert sum(t.get(f, 0) for f in bucket_fields()) == t["duration_count"] == 24
    assert sum(t.get(f, 0) for f in bucket_fields("fail")) == 18
    assert t[f"lat:sleep:{bucket_of(300)}"] + t.get(f"lat:sleep:{bucket_of(300) + 1}", 0) == 3

    client = aioredis.Redis.from_url(redis_url)
    try:
        every = await read_history(client, KEYS, "1h")
        assert every["totals"]["error_rate"] == 0.5 and every["totals"]["attempt_error_rate"] == 0.75
        sleep = await read_history(client, KEYS, "1h", task_type="sleep")
        assert (
            250 <= sleep["totals"]["p50_ms"] <= 1000
            and sleep["totals"]["p95_ms"] >= sleep["totals"]["p50_ms"]
        )
        assert sleep["totals"]["error_rate"] == 0.0
        fail = await read_history(client, KEYS, "15m", task_type="fail")
        assert fail["totals"]["error_rate"] == 1.0 and fail["totals"]["processed"] == 18
        minutes = [p for p in every["points"] if p["tasks"]]
        [alert] = alerts([], [], minutes)
        assert "(6 of 12 failed)" in alert["message"]
    finally:
        await client.aclose()
