"""Health endpoints: liveness, readiness (Redis + a fresh worker heartbeat) and a full report."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from coordinator.http import REDIS_DOWN, json_response
from coordinator.keys import REDIS, SETTINGS
from shared import __version__
from shared.keys import Keys


async def _check_redis(request: web.Request) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(request.app[SETTINGS].redis_timeout):
            await request.app[REDIS].ping()
    except REDIS_DOWN as exc:
        return {"status": "down", "latency_ms": None, "detail": f"redis unreachable ({type(exc).__name__})"}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 3)}


async def _check_workers(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
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


async def live(request: web.Request) -> web.Response:
    """The process answers (no dependency is checked)."""
    return json_response({"status": "ok", "version": __version__, "components": {}})


async def ready(request: web.Request) -> web.Response:
    """200 when Redis answers and at least one worker heartbeat is fresh; else 503 naming the failure."""
    redis_c = await _check_redis(request)
    workers = (
        await _check_workers(request)
        if redis_c["status"] == "ok"
        else {"status": "down", "latency_ms": None, "detail": "redis down"}
    )
    ok = redis_c["status"] == "ok" and workers["status"] == "ok"
    body = {
        "status": "ready" if ok else "not_ready",
        "version": __version__,
        "components": {"redis": redis_c, "workers": workers},
    }
    return json_response(body, status=200 if ok else 503)


async def health(request: web.Request) -> web.Response:
    """Every component with status and latency; healthy, degraded (no worker) or unhealthy (no Redis)."""
    components: dict[str, Any] = {}
    try:
        components["redis"] = await _check_redis(request)
        components["workers"] = (
            await _check_workers(request)
            if components["redis"]["status"] == "ok"
            else {"status": "down", "latency_ms": None, "detail": "redis down"}
        )
    except Exception as exc:  # a failing check degrades the report, never the endpoint
        components.setdefault("redis", {"status": "down", "latency_ms": None, "detail": type(exc).__name__})
    if components["redis"]["status"] != "ok":
        overall, status = "unhealthy", 503
    elif components.get("workers", {}).get("status") != "ok":
        overall, status = "degraded", 200
    else:
        overall, status = "healthy", 200
    return json_response({"status": overall, "version": __version__, "components": components}, status=status)
