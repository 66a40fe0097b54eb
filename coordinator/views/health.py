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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from coordinator.appkeys import REDIS, RELAY, SETTINGS
from coordinator.http import REDIS_DOWN, json_response
from shared import __version__
from shared.redis import check_redis
from shared.transport.outbox import outbox_depth
from shared.web import redis_refusal


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
    fresh_after = (time.time() - 3 * settings.worker_poll_interval) * 1000
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.redis_timeout):
            count = await request.app[REDIS].zcount(keys.workers, fresh_after, "+inf")
    except REDIS_DOWN:
        return {"status": "down", "latency_ms": None, "detail": "cannot read heartbeats"}
    latency = round((time.perf_counter() - started) * 1000, 3)
    if count == 0:
        return {"status": "down", "latency_ms": latency, "detail": "no fresh worker heartbeat"}
    return {"status": "ok", "latency_ms": latency, "detail": f"{count} worker agent(s)"}


async def _check_broker(request: web.Request, redis_c: dict[str, Any]) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    if not settings.rabbitmq:
        return {"status": redis_c["status"], "transport": "redis", "detail": "the state store's Redis"}
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


async def live(request: web.Request) -> web.Response:
    """The process answers (no dependency is checked)."""
    return json_response({"status": "ok", "version": __version__, "components": {}})


async def ready(request: web.Request) -> web.Response:
    """200 when Redis answers and at least one worker heartbeat is fresh; else 503 naming the failure.
    A Redis out of memory still answers: the process stays ready (another one would fare no
    better) and tells each client itself (503 ``redis_out_of_memory``)."""
    redis_c = await _check_redis(request)
    workers = (
        await _check_workers(request)
        if redis_c["status"] != "down"
        else {"status": "down", "latency_ms": None, "detail": "redis down"}
    )
    ok = redis_c["status"] != "down" and workers["status"] == "ok"
    broker = await _check_broker(request, redis_c)
    body = {
        "status": "ready" if ok else "not_ready",
        "version": __version__,
        "components": {"redis": redis_c, "workers": workers, "broker": broker},
    }
    return json_response(body, status=200 if ok else 503)


async def health(request: web.Request) -> web.Response:
    """Every component with status and latency: unhealthy (503) when no task can be accepted
    (Redis down, or out of memory), degraded when no worker is up or the broker is down, else
    healthy."""
    components: dict[str, Any] = {}
    try:
        components["redis"] = await _check_redis(request)
        components["workers"] = (
            await _check_workers(request)
            if components["redis"]["status"] != "down"
            else {"status": "down", "latency_ms": None, "detail": "redis down"}
        )
        components["broker"] = await _check_broker(request, components["redis"])
    except Exception as exc:  # a failing check degrades the report, never the endpoint
        components.setdefault("redis", {"status": "down", "latency_ms": None, "detail": type(exc).__name__})
    if components["redis"]["status"] != "ok":
        overall, status = "unhealthy", 503
    elif any(components.get(c, {}).get("status") != "ok" for c in ("workers", "broker")):
        overall, status = "degraded", 200
    else:
        overall, status = "healthy", 200
    return json_response({"status": overall, "version": __version__, "components": components}, status=status)
