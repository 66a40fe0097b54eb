"""``/health`` reports redis, broker, workers, disk and (with an LLM configured) llm, each with its
own status, ``latency_ms`` and ``timestamp``: the workers' fresh count and freshest heartbeat age,
the data directory's free space against HEALTH_DISK_MIN_FREE_MB, each LLM tier's breaker state and
last outcome as a worker wrote them into Redis. Only Redis makes the report unhealthy (503)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
import redis

from coordinator.app import create_app
from coordinator.views import health as health_view
from shared.settings import Settings
from worker.coach.breaker import BreakerState
from worker.coach.llm import RedisTierReport

LLM = {"llm_base_url": "http://127.0.0.1:1/v1", "llm_model_fast": "m-fast", "llm_model_creative": "m-big"}


async def _client(aiohttp_client: Any, settings: Settings, **update: Any) -> Any:
    return await aiohttp_client(create_app(settings.model_copy(update=update)))


async def _report(client: Any, expected_status: int) -> dict[str, Any]:
    reply = await client.get("/health")
    body: dict[str, Any] = await reply.json()
    assert reply.status == expected_status, body
    return body


def _beat(rclient: redis.Redis, settings: Settings, worker: str, age_s: float) -> None:
    rclient.zadd(settings.keys.workers, {worker: int((time.time() - age_s) * 1000)})


def _assert_shape(report: dict[str, Any]) -> None:
    for name, component in report["components"].items():
        assert {"status", "latency_ms", "timestamp"} <= set(component), name
        assert component["status"] in ("ok", "degraded", "down"), name
        assert component["latency_ms"] is None or component["latency_ms"] >= 0, name
        assert datetime.fromisoformat(component["timestamp"].replace("Z", "+00:00")), name
    json.dumps(report)


async def test_everything_ok_is_healthy_without_an_llm_component(aiohttp_client, settings, rclient):
    _beat(rclient, settings, "w1", 0.2)
    _beat(rclient, settings, "w2", 0.1)
    _beat(rclient, settings, "gone", 60)  # stale: not counted
    report = await _report(await _client(aiohttp_client, settings), 200)
    assert report["status"] == "healthy", report
    _assert_shape(report)
    components = report["components"]
    assert set(components) == {"redis", "broker", "workers", "disk"}  # no LLM_BASE_URL: no llm
    workers = components["workers"]
    assert workers["status"] == "ok" and workers["count"] == 2
    assert 0 <= workers["freshest_heartbeat_age_s"] < 5
    disk = components["disk"]
    assert disk["status"] == "ok"
    assert disk["free_bytes"] > 0 and disk["total_bytes"] >= disk["free_bytes"]
    assert disk["min_free_bytes"] == 1024 * 2**20


async def test_a_stale_heartbeat_only_is_degraded_with_its_age(aiohttp_client, settings, rclient):
    _beat(rclient, settings, "w1", 30)
    report = await _report(await _client(aiohttp_client, settings), 200)
    assert report["status"] == "degraded"
    workers = report["components"]["workers"]
    assert workers["status"] == "down" and workers["count"] == 0
    assert 29 <= workers["freshest_heartbeat_age_s"] < 40
    assert workers["detail"].startswith("no fresh worker heartbeat (the last is ")
    assert report["components"]["redis"]["status"] == "ok"  # its own severity, not the workers'
    rclient.delete(settings.keys.workers)
    workers = (await _report(await _client(aiohttp_client, settings), 200))["components"]["workers"]
    assert workers["count"] == 0 and workers["freshest_heartbeat_age_s"] is None


async def test_a_huge_disk_threshold_is_degraded(aiohttp_client, settings, rclient):
    _beat(rclient, settings, "w1", 0)
    client = await _client(aiohttp_client, settings, health_disk_min_free_mb=2**40)  # 1 EiB
    report = await _report(client, 200)
    assert report["status"] == "degraded"
    disk = report["components"]["disk"]
    assert disk["status"] == "degraded" and "below" in disk["detail"]
    assert disk["min_free_bytes"] == 2**60 and disk["free_bytes"] < disk["min_free_bytes"]
    assert {c: report["components"][c]["status"] for c in ("redis", "broker", "workers")} == {
        "redis": "ok", "broker": "ok", "workers": "ok",
    }  # fmt: skip
    assert (await client.get("/health/ready")).status == 200  # readiness: Redis + a fresh worker only


async def test_a_data_directory_not_created_yet_is_measured_on_its_parent(
    aiohttp_client, settings, rclient, tmp_path
):
    _beat(rclient, settings, "w1", 0)
    client = await _client(aiohttp_client, settings, opsdeck_var_dir=tmp_path / "not" / "yet")
    report = await _report(client, 200)
    assert report["components"]["disk"]["status"] == "ok", report


async def test_a_failing_check_is_its_own_component_down(aiohttp_client, settings, rclient, monkeypatch):
    _beat(rclient, settings, "w1", 0)

    def broken(_path: Any) -> Any:
        raise PermissionError("no")

    monkeypatch.setattr(health_view, "_disk_usage", broken)

    async def crash(_request: Any) -> dict[str, Any]:
        raise RuntimeError("bug in a check")

    monkeypatch.setattr(health_view, "_check_workers", crash)
    report = await _report(await _client(aiohttp_client, settings), 200)
    assert report["status"] == "degraded"
    _assert_shape(report)
    components = report["components"]
    assert components["disk"]["status"] == "down" and "PermissionError" in components["disk"]["detail"]
    assert components["workers"] == {**components["workers"], "status": "down", "latency_ms": None}
    assert "RuntimeError" in components["workers"]["detail"]
    assert components["redis"]["status"] == "ok" and components["broker"]["status"] == "ok"


async def test_llm_tiers_as_the_worker_reports_them(aiohttp_client, settings, rclient):
    _beat(rclient, settings, "w1", 0)
    client = await _client(aiohttp_client, settings, **LLM)
    report = await _report(client, 200)
    assert report["status"] == "healthy", report
    llm = report["components"]["llm"]
    assert llm["status"] == "ok"
    assert llm["tiers"] == {  # configured, no call reported yet
        "creative": {"breaker": None, "outcome": None},
        "fast": {"breaker": None, "outcome": None},
    }

    write = RedisTierReport(rclient, settings.keys, "w1/123")
    write("creative", "ok", None, BreakerState.CLOSED)
    report = await _report(client, 200)
    creative = report["components"]["llm"]["tiers"]["creative"]
    assert report["status"] == "healthy"
    assert creative["breaker"] == "closed" and creative["outcome"] == "ok" and creative["worker"] == "w1/123"
    assert 0 <= creative["age_s"] < 5 and creative["at"].endswith("Z")

    write("creative", "error", "timeout after 10.0s", BreakerState.OPEN)
    report = await _report(client, 200)  # degraded, never unhealthy: the built-in answer still works
    assert report["status"] == "degraded"
    llm = report["components"]["llm"]
    assert llm["status"] == "degraded" and llm["detail"] == "creative: breaker open"
    assert llm["tiers"]["creative"]["detail"] == "timeout after 10.0s"
    assert llm["tiers"]["fast"] == {"breaker": None, "outcome": None}
    assert report["components"]["redis"]["status"] == "ok"
    _assert_shape(report)

    write("fast", "ok", None, BreakerState.HALF_OPEN)
    write("creative", "ok", None, BreakerState.CLOSED)
    llm = (await _report(client, 200))["components"]["llm"]
    assert llm["status"] == "degraded" and llm["detail"] == "fast: breaker half_open"

    rclient.hset(settings.keys.llm_tiers, "fast", "not json")
    llm = (await _report(client, 200))["components"]["llm"]
    assert llm["tiers"]["fast"]["breaker"] == "unknown" and llm["status"] == "degraded"


def test_the_guarded_llm_writes_each_calls_tier_state(settings, rclient):
    """The worker side: GuardedLLM reports through RedisTierReport after each call."""
    from worker.coach.engine import Suggestion
    from worker.coach.llm import GuardedLLM, LLMError

    class Client:
        def __init__(self) -> None:
            self.answers: list[Exception | str] = [
                LLMError("server error (502)"),
                '{"suggestion": "Try this."}',
            ]

        def complete(self, model: str, messages: Any) -> str:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    report = RedisTierReport(rclient, settings.keys, "w1/7")
    llm = GuardedLLM(Client(), {"creative": "m-big", "fast": "m-fast"}, report=report, backoff=0.001)
    builtin = Suggestion(text="builtin", arm="tools", entry_id="e1", title="t")
    assert llm.generate(builtin, "hello", "{}").source == "llm"
    states = {k.decode(): json.loads(v) for k, v in rclient.hgetall(settings.keys.llm_tiers).items()}
    assert states["creative"]["outcome"] == "error" and states["creative"]["detail"] == "server error (502)"
    assert states["fast"]["outcome"] == "ok" and states["fast"]["breaker"] == "closed"  # downshifted
    assert states["fast"]["worker"] == "w1/7"


async def test_redis_down_is_unhealthy_and_every_other_component_keeps_its_own(aiohttp_client, settings):
    client = await _client(
        aiohttp_client, settings, redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5, **LLM
    )
    report = await _report(client, 503)
    assert report["status"] == "unhealthy"
    _assert_shape(report)
    components = report["components"]
    assert components["redis"]["status"] == "down"
    assert components["workers"]["status"] == "down" and components["llm"]["status"] == "down"
    assert components["disk"]["status"] == "ok"  # not overwritten by Redis's severity
    assert (await client.get("/health/ready")).status == 503
    assert (await client.get("/health/live")).status == 200


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
async def test_ready_keeps_its_components(aiohttp_client, settings, rclient, path):
    _beat(rclient, settings, "w1", 0)
    reply = await (await _client(aiohttp_client, settings)).get(path)
    assert reply.status == 200
    components = (await reply.json())["components"]
    expected = {"redis", "workers", "broker"} | ({"disk"} if path == "/health" else set())
    assert set(components) == expected
