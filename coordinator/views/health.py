"""Health endpoints: liveness, readiness (Redis + a fresh worker heartbeat) and a full report.

The Redis component is ``down`` when Redis cannot be reached or refuses commands (LOADING after a
restart, BUSY with a script, MASTERDOWN), ``degraded`` when it answers but has reached its
``maxmemory`` (with noeviction every write is refused: no task can be accepted), else ``ok``; its
``used_memory_bytes`` and ``maxmemory_bytes`` come from INFO memory (0 = no limit).

The broker component: with the Redis broker it is the same Redis (``transport: redis``); with
RabbitMQ (``transport: rabbitmq``) it is ``ok`` when this process's outbox relay has, or can open
within ``REDIS_TIMEOUT``, a channel to one of the nodes, else ``down`` (submissions are still
accepted: they wait in the outbox, whose ``entries`` and ``pending`` it shows). A broker that is
down makes ``/health`` degraded, not unhealthy, and does not make ``/health/ready`` fail.

The workers component counts the agents whose heartbeat is fresh (within 3 × WORKER_POLL_INTERVAL)
and gives the freshest heartbeat's age; ``down`` when none is fresh. The disk component is the
free space of the filesystem holding OPSDECK_VAR_DIR (``shutil.disk_usage`` in a thread),
``degraded`` under HEALTH_DISK_MIN_FREE_MB. The llm component (only when LLM_BASE_URL is set)
shows each tier's breaker state and last outcome as the workers last wrote them into
``Keys.llm_tiers``; ``degraded`` while a tier's breaker is open or half-open.

Every component has ``status``, ``latency_ms`` and ``timestamp``; a check that fails makes its
own component ``down`` and the report degraded, never the endpoint fail, and no component's
status is set from another's (the Redis broker's is the state store's own Redis status).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.appkeys import REDIS, RELAY, SETTINGS
from coordinator.http import REDIS_DOWN, json_response
from shared import __version__
from shared.redis import check_redis
from shared.store import iso
from shared.transport.outbox import outbox_depth
from shared.web import redis_refusal

#: The LLM tiers a worker may report (worker.coach.llm.TIERS), most capable first.
_TIERS = ("creative", "balanced", "fast")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


async def _check_redis(request: web.Request) -> dict[str, Any]:
    found = await check_redis(request.app[REDIS], request.app[SETTINGS].redis_timeout)
    memory: dict[str, Any] = {}
    if found.maxmemory is not None:
        memory = {"used_memory_bytes": found.used_memory, "maxmemory_bytes": found.maxmemory}
    if found.error is not None:
        refusal = redis_refusal(found.error)
        if refusal is None or refusal.code == "unavailable":
            detail = f"redis unreachable ({type(found.error).__name__})"
        else:
            detail = f"redis refuses commands: {refusal.code} ({found.error})"
        return {"status": "down", "latency_ms": None, "detail": detail, **memory}
    latency = round(found.latency * 1000, 3)
    used, limit = found.used_memory or 0, found.maxmemory or 0
    if found.out_of_memory:
        detail = (
            f"out of memory: used {_mib(used)} of maxmemory {_mib(limit)}; "
            "writes are refused (redis_out_of_memory)"
        )
        return {"status": "degraded", "latency_ms": latency, "detail": detail, **memory}
    return {"status": "ok", "latency_ms": latency, **memory}


async def _check_workers(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    keys = settings.keys
    now = time.time()
    fresh_after = (now - 3 * settings.worker_poll_interval) * 1000
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.redis_timeout):
            pipe = request.app[REDIS].pipeline(transaction=False)
            pipe.zcount(keys.workers, fresh_after, "+inf")
            pipe.zrevrange(keys.workers, 0, 0, withscores=True)
            count, newest = await pipe.execute()
    except REDIS_DOWN:
        return {"status": "down", "latency_ms": None, "detail": "cannot read heartbeats"}
    latency = round((time.perf_counter() - started) * 1000, 3)
    age = round(max(0.0, now - float(newest[0][1]) / 1000), 3) if newest else None
    found = {"latency_ms": latency, "count": int(count), "freshest_heartbeat_age_s": age}
    if count == 0:
        detail = "no fresh worker heartbeat"
        if age is not None:
            detail += f" (the last is {age} s old)"
        return {"status": "down", "detail": detail, **found}
    return {"status": "ok", "detail": f"{count} worker agent(s)", **found}


def _disk_usage(var_dir: Path) -> Any:
    """``shutil.disk_usage`` of the data directory, or of its nearest existing parent (the
    filesystem it will be created on)."""
    path = var_dir.resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path)


async def _check_disk(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    minimum = settings.health_disk_min_free_mb * 2**20
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.redis_timeout):
            usage = await asyncio.to_thread(_disk_usage, settings.opsdeck_var_dir)
    except TimeoutError:
        return {"status": "down", "latency_ms": None, "detail": "disk usage did not answer in time"}
    except OSError as exc:
        return {"status": "down", "latency_ms": None, "detail": f"disk usage failed ({type(exc).__name__})"}
    found = {
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "min_free_bytes": minimum,
    }
    if usage.free < minimum:
        detail = f"{_mib(usage.free)} free under the data directory, below {_mib(minimum)}"
        return {"status": "degraded", "detail": detail, **found}
    return {"status": "ok", **found}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _tier_state(raw: Any) -> dict[str, Any]:
    """One tier's state as a worker wrote it (worker.coach.llm.RedisTierReport); unreadable = unknown."""
    try:
        state = json.loads(raw)
        at = int(state["at"])
    except (ValueError, TypeError, KeyError):
        return {"breaker": "unknown", "outcome": None, "detail": "unreadable tier state"}
    return {
        "breaker": str(state.get("breaker")),
        "outcome": state.get("outcome"),
        "detail": state.get("detail"),
        "at": iso(at),
        "age_s": round(max(0.0, time.time() - at / 1000), 3),
        "worker": state.get("worker"),
    }


async def _check_llm(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.redis_timeout):
            reported = await request.app[REDIS].hgetall(settings.keys.llm_tiers)
    except REDIS_DOWN:
        return {"status": "down", "latency_ms": None, "detail": "cannot read the tier states"}
    latency = round((time.perf_counter() - started) * 1000, 3)
    tiers: dict[str, Any] = {
        t: {"breaker": None, "outcome": None} for t in _TIERS if getattr(settings, f"llm_model_{t}")
    }
    for tier, raw in reported.items():
        tiers[_text(tier)] = _tier_state(raw)
    tripped = sorted(t for t, state in tiers.items() if state["breaker"] not in (None, "closed"))
    if tripped:
        detail = ", ".join(f"{t}: breaker {tiers[t]['breaker']}" for t in tripped)
        return {"status": "degraded", "latency_ms": latency, "detail": detail, "tiers": tiers}
    return {"status": "ok", "latency_ms": latency, "tiers": tiers}


async def _check_broker(request: web.Request, redis_c: dict[str, Any]) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    if not settings.rabbitmq:
        return {
            "status": redis_c["status"],
            "latency_ms": redis_c.get("latency_ms"),
            "transport": "redis",
            "detail": "the state store's Redis",
        }
    relay = request.app[RELAY]
    found: dict[str, Any] = {"transport": "rabbitmq", "nodes": relay.state.nodes}
    with contextlib.suppress(*REDIS_DOWN):
        async with asyncio.timeout(settings.redis_timeout):
            found["outbox"] = await outbox_depth(request.app[REDIS], settings.keys.outbox)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.redis_timeout):
            await relay.probe()
    except Exception as exc:
        detail = relay.state.last_error or f"{type(exc).__name__}: no node answered"
        return {"status": "down", "latency_ms": None, "detail": detail, **found}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 3), **found}


async def _checked(check: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one check: its exception becomes that component ``down`` (never the endpoint's
    failure); each gets ``latency_ms`` (None when it could not measure) and a ``timestamp``."""
    try:
        found = await check
    except Exception as exc:  # a failing check degrades the report, never the endpoint
        found = {"status": "down", "latency_ms": None, "detail": f"check failed ({type(exc).__name__})"}
    found.setdefault("latency_ms", None)
    found["timestamp"] = iso(int(time.time() * 1000))
    return found


async def _redis_down() -> dict[str, Any]:
    return {"status": "down", "latency_ms": None, "detail": "redis down"}


async def live(request: web.Request) -> web.Response:
    """The process answers (no dependency is checked)."""
    return json_response({"status": "ok", "version": __version__, "components": {}})


async def ready(request: web.Request) -> web.Response:
    """200 when Redis answers and at least one worker heartbeat is fresh; else 503 naming the failure.
    A Redis out of memory still answers: the process stays ready (another one would fare no
    better) and tells each client itself (503 ``redis_out_of_memory``)."""
    redis_c = await _checked(_check_redis(request))
    redis_up = redis_c["status"] != "down"
    workers, broker = await asyncio.gather(
        _checked(_check_workers(request) if redis_up else _redis_down()),
        _checked(_check_broker(request, redis_c)),
    )
    ok = redis_up and workers["status"] == "ok"
    body = {
        "status": "ready" if ok else "not_ready",
        "version": __version__,
        "components": {"redis": redis_c, "workers": workers, "broker": broker},
    }
    return json_response(body, status=200 if ok else 503)


async def health(request: web.Request) -> web.Response:
    """Every component (redis, broker, workers, disk, and llm when ``LLM_BASE_URL`` is set) with
    its own status, latency and timestamp: unhealthy (503) when no task can be accepted (Redis
    down, or out of memory), degraded when any other component is not ok, else healthy."""
    redis_c = await _checked(_check_redis(request))
    redis_up = redis_c["status"] != "down"
    checks: dict[str, Awaitable[dict[str, Any]]] = {
        "broker": _check_broker(request, redis_c),
        "workers": _check_workers(request) if redis_up else _redis_down(),
        "disk": _check_disk(request),
    }
    if request.app[SETTINGS].llm_base_url:
        checks["llm"] = _check_llm(request) if redis_up else _redis_down()
    found = await asyncio.gather(*(_checked(check) for check in checks.values()))
    components = {"redis": redis_c, **dict(zip(checks, found, strict=True))}
    if redis_c["status"] != "ok":
        overall, status = "unhealthy", 503
    elif any(c["status"] != "ok" for c in components.values()):
        overall, status = "degraded", 200
    else:
        overall, status = "healthy", 200
    return json_response({"status": overall, "version": __version__, "components": components}, status=status)
