"""``opsdeck analyze`` against a real Redis: queue health, bottlenecks, resources, security."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from pydantic import SecretStr

from shared.devtools.analyze import analyze
from shared.keys import Keys
from shared.redis import sync_client
from shared.stats import Heartbeat
from tests.conftest import ROOT, SECRET

KEYS = Keys()


def beat(worker: str, **over):
    now = time.time()
    fields = dict(
        id=worker,
        host="h",
        pid=1,
        state="running",
        version="0",
        started_at=now,
        sent_at=now,
        uptime_seconds=1,
        cpu_percent=10,
        rss_bytes=1,
        memory_percent=5,
        processes=2,
        processes_desired=2,
        threads=8,
        in_flight=0,
        processed=0,
        failed=0,
        queues=[],
    )
    return Heartbeat(**{**fields, **over})


def put_beat(rclient, b):
    rclient.set(KEYS.worker(b.id), b.model_dump_json())
    rclient.zadd(KEYS.workers, {b.id: int(time.time() * 1000)})


def titles(report):
    return {f.title for f in report.findings}


async def test_healthy_system_scores_high(settings, rclient, api, auth):
    put_beat(rclient, beat("w1", in_flight=4))
    report = analyze(settings, sync_client(settings))
    assert report.scores()["queues"] == 100
    assert report.overall() >= 90
    assert report.facts["workers"] == 1
    assert report.facts["processing"] == 4


async def test_backlog_dead_letters_stale_messages_and_no_worker(settings, rclient, api, auth):
    for _ in range(120):
        await api.post("/api/v1/tasks", json={"type": "echo"}, headers=auth())
    await api.post("/api/v1/tasks", json={"type": "echo", "priority": "P0"}, headers=auth())
    # Age the P0 message as if it had waited ten minutes.
    mid = rclient.lindex(KEYS.queue("default.p0"), 0)
    msg = json.loads(rclient.hget(KEYS.queue_messages("default.p0"), mid))
    msg["message_timestamp"] -= 600_000
    rclient.hset(KEYS.queue_messages("default.p0"), mid, json.dumps(msg))
    rclient.zadd(KEYS.dead_letters("default.p2"), {"m1": 1})
    report = analyze(settings, sync_client(settings))
    found = titles(report)
    assert {"No live worker", "Queue backlog", "Dead letters", "Stale messages in default.p0"} <= found
    assert report.scores()["queues"] == 0
    assert report.facts["pending"] == 121
    assert report.facts["queues"]["default.p0"]["oldest_age_s"] >= 600


def test_retry_storm_and_saturation(settings, rclient):
    minute = int(time.time() // 60)
    rclient.hset(KEYS.stats_minute(minute), mapping={"processed": 100, "retried": 40})
    put_beat(rclient, beat("w1", in_flight=16, cpu_percent=190, processes=2))
    rclient.rpush(KEYS.queue("default.p2"), *[f"m{i}" for i in range(50)])
    report = analyze(settings, sync_client(settings))
    found = titles(report)
    assert "Retry storm" in found
    assert "Workers saturated" in found
    assert "Saturated worker w1" in found
    assert report.facts["suggested_processes"] > 2


def test_security_findings_in_production(settings):
    unsafe = settings.model_copy(
        update={
            "opsdeck_env": "production",
            "redis_url": "redis://cache.example.internal:6379/0",
            "jwt_secret": SecretStr("a" * 40),
            "dashboard_host": "0.0.0.0",
            "log_level": "DEBUG",
        }
    )
    from shared.devtools.analyze import Report, check_security

    report = Report()
    check_security(unsafe, report)
    found = titles(report)
    assert {
        "Redis without TLS",
        "Weak JWT_SECRET",
        "Dashboard public without password",
        "Debug logging in production",
    } <= found
    assert report.scores()["security"] == 0


def test_cli_json_and_min_score_exit_code(redis_url, tmp_path, rclient):
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "JWT_SECRET": SECRET,
        "OPSDECK_VAR_DIR": str(tmp_path),
    }
    ok = subprocess.run(
        [sys.executable, "-m", "shared.devtools.cli", "analyze", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert set(doc["scores"]) == {"queues", "bottlenecks", "resources", "security"}
    assert 0 <= doc["score"] <= 100
    assert any(f["title"] == "No live worker" for f in doc["findings"])
    strict = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze_worker_optimization.py"), "--min-score", "101"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert strict.returncode == 1
    assert "Opsdeck readiness:" in strict.stdout
    assert "below --min-score 101" in strict.stderr
