"""Per-model LLM health (issue 18, part 2): workers record per tier breaker state, last success and
failure and p50/p95 latency of the last N calls (one atomic script), probe a tier idle for
LLM_PROBE_INTERVAL (one probe per tier per interval across workers: a SET NX EX lease), and
``GET /health/llm?model=`` on the coordinator judges them: 200 healthy, 503 naming the unhealthy
tiers, 404 for an unknown tier, ``disabled`` without an LLM, 503 when Redis is down. Real Redis,
real HTTP to the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis

from coordinator.app import create_app
from shared.settings import Settings
from tests.fake_llm import BUILTIN, MODELS, FakeLLM
from worker.coach.breaker import BreakerState
from worker.coach.llm import GuardedLLM, OpenAIClient, RedisTierReport
from worker.coach.probe import LLMProbes, TierProber


def llm_settings(settings: Settings, fake: FakeLLM, **update: Any) -> Settings:
    models = {f"llm_model_{t}": m for t, m in MODELS.items()}
    return settings.model_copy(update={"llm_base_url": fake.url, **models, **update})


def guarded(fake: FakeLLM, rclient: redis.Redis, settings: Settings, worker: str = "w1/1") -> GuardedLLM:
    report = RedisTierReport(rclient, settings.keys, worker, window=settings.llm_health_window)
    return GuardedLLM(
        OpenAIClient(fake.url, None, 2.0), MODELS, report=report, backoff=0.0001, max_backoff=0.001
    )


def records(rclient: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    return {k.decode(): json.loads(v) for k, v in rclient.hgetall(settings.keys.llm_tiers).items()}


async def health(client: Any, model: str | None, expected: int) -> dict[str, Any]:
    reply = await client.get("/health/llm", params={"model": model} if model else None)
    body: dict[str, Any] = await reply.json()
    assert reply.status == expected, body
    return body


def test_each_call_updates_its_tiers_record_with_latency_percentiles(fake, rclient, settings):
    settings = llm_settings(settings, fake, llm_health_window=5)
    llm = guarded(fake, rclient, settings)
    for i in range(8):
        assert llm.generate(BUILTIN, f"m{i}", "{}").source == "llm"  # no draw: creative
    creative = records(rclient, settings)["creative"]
    assert creative["outcome"] == "ok" and creative["breaker"] == "closed" and creative["probe"] is False
    assert creative["calls"] == 5 and rclient.llen(settings.keys.llm_latency("creative")) == 5  # the window
    assert 0 < creative["p50_ms"] <= creative["p95_ms"] < 2000
    samples = sorted(float(x) for x in rclient.lrange(settings.keys.llm_latency("creative"), 0, -1))
    assert (creative["p50_ms"], creative["p95_ms"]) == (samples[2], samples[4])  # nearest rank of 5
    assert creative["last_failure"] is None and creative["last_success"] == creative["at"]
    success_at = creative["last_success"]

    fake.failing = {"model-creative"}
    time.sleep(0.002)
    llm.generate(BUILTIN, "fails on creative", "{}")  # creative 500, then balanced answers
    state = records(rclient, settings)
    creative, balanced = state["creative"], state["balanced"]
    assert creative["outcome"] == "error" and creative["detail"] == "server error (500)"
    assert creative["last_success"] == success_at and creative["last_failure"] > success_at
    assert creative["last_error"] == "server error (500)" and creative["calls"] == 5
    assert balanced["outcome"] == "ok" and balanced["calls"] == 1


async def test_health_llm_answers_per_tier(aiohttp_client, fake, rclient, settings):
    settings = llm_settings(settings, fake)
    client = await aiohttp_client(create_app(settings))
    body = await health(client, None, 503)  # nothing reported yet: nobody vouches for any tier
    assert body["unhealthy"] == ["creative", "balanced", "fast"]
    assert body["tiers"]["fast"]["reason"] == "no worker has reported a call to this tier yet"

    llm = guarded(fake, rclient, settings)
    for tier in MODELS:
        llm.probe(tier)
    body = await health(client, "all", 200)
    assert body["status"] == "healthy" and body["unhealthy"] == [] and set(body["tiers"]) == set(MODELS)
    fast = body["tiers"]["fast"]
    assert fast["healthy"] is True and fast["model"] == "model-fast" and fast["probe"] is True
    assert fast["breaker"] == "closed" and fast["outcome"] == "ok" and fast["calls"] == 1
    assert fast["p50_ms"] > 0 and fast["last_success"].endswith("Z") and fast["last_failure"] is None

    fake.failing = {"model-creative"}
    assert llm.probe("creative") == "error"
    body = await health(client, "all", 503)
    assert body["status"] == "unhealthy" and body["unhealthy"] == ["creative"]
    assert body["tiers"]["creative"]["reason"] == "last call failed: server error (500)"
    assert (await health(client, "fast", 200))["tiers"].keys() == {"fast"}  # only the asked tier
    assert (await health(client, "creative", 503))["unhealthy"] == ["creative"]

    write = RedisTierReport(rclient, settings.keys, "w2/9")
    write("balanced", "ok", None, BreakerState.OPEN)  # a process whose breaker is open
    assert (await health(client, "balanced", 503))["tiers"]["balanced"]["reason"] == "breaker open"
    write("balanced", "ok", None, BreakerState.CLOSED)
    old = json.loads(rclient.hget(settings.keys.llm_tiers, "balanced"))
    old["at"] -= int((2 * settings.llm_probe_interval + settings.llm_timeout + 5) * 1000)
    rclient.hset(settings.keys.llm_tiers, "balanced", json.dumps(old))
    stale = await health(client, "balanced", 503)
    assert stale["tiers"]["balanced"]["reason"].startswith("stale: last call 6")


async def test_unknown_tier_is_404_naming_model_and_no_llm_is_disabled(aiohttp_client, fake, settings):
    client = await aiohttp_client(create_app(llm_settings(settings, fake, llm_model_balanced=None)))
    for model, message in (
        ("turbo", "unknown model tier 'turbo'"),
        ("balanced", "LLM_MODEL_BALANCED is unset"),
    ):
        reply = await client.get("/health/llm", params={"model": model})
        error = (await reply.json())["error"]
        assert reply.status == 404 and error["code"] == "not_found" and message in error["message"]
        assert error["fields"][0]["loc"] == ["query", "model"]
    reply = await client.get("/health/llm", params={"tier": "fast"})
    assert reply.status == 422 and (await reply.json())["error"]["fields"][0]["loc"] == ["query", "tier"]
    plain = await aiohttp_client(create_app(settings))  # no LLM_BASE_URL
    assert await health(plain, "all", 200) == {"status": "disabled"}
    assert await health(plain, "turbo", 200) == {"status": "disabled"}


async def test_redis_down_is_503_not_500(aiohttp_client, fake, settings):
    down = llm_settings(settings, fake, redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5)
    client = await aiohttp_client(create_app(down))
    reply = await client.get("/health/llm")
    assert reply.status == 503
    assert (await reply.json())["error"]["code"] == "unavailable"


def test_one_probe_per_idle_tier_per_interval_across_workers(fake, rclient, settings):
    settings = llm_settings(settings, fake, llm_probe_interval=1.0)
    probers = [
        TierProber(guarded(fake, rclient, settings, f"w{i}/1"), rclient, settings.keys, 1.0, f"w{i}/1")
        for i in range(4)
    ]
    guarded(fake, rclient, settings).generate(BUILTIN, "busy", "{}")  # creative just answered a turn

    def rounds() -> list[dict[str, str]]:
        results: list[dict[str, str]] = [{} for _ in probers]
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, probers[i].run_once()))
            for i in range(len(probers))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        return results

    fake.requests.clear()
    first = rounds()
    probed = sorted(tier for r in first for tier in r)
    assert probed == ["balanced", "fast"]  # idle (never called); creative is busy; once each
    assert sorted(fake.models_called()) == ["model-balanced", "model-fast"]
    assert json.loads(rclient.hget(settings.keys.llm_tiers, "fast"))["probe"] is True
    assert rclient.get(settings.keys.llm_probe("fast")) is not None  # the lease
    assert all(not r for r in rounds())  # fresh records: nothing to probe
    time.sleep(1.1)  # an interval later every tier is idle again: still one probe each
    assert sorted(tier for r in rounds() for tier in r) == ["balanced", "creative", "fast"]
    assert len(fake.requests) == 5


def test_the_middleware_runs_the_prober_thread(fake, rclient, settings):
    settings = llm_settings(settings, fake)
    prober = TierProber(guarded(fake, rclient, settings), rclient, settings.keys, 2.0, "w1/1")
    assert prober.check_every == 1.0
    probes = LLMProbes(prober)
    probes.after_worker_boot(None, None)
    deadline = time.monotonic() + 10
    while len(records(rclient, settings)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    probes.before_worker_shutdown(None, None)
    assert {t: r["probe"] for t, r in records(rclient, settings).items()} == dict.fromkeys(MODELS, True)
    assert prober._thread is None
