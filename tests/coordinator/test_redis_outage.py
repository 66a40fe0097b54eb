"""Redis down: the coordinator answers 503 quickly (never 500, never a hang) and recovers by itself."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.app import create_app
from shared.devtools.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path):
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


async def test_503_while_redis_is_down_then_202_without_restart(aiohttp_client, settings, own_redis, auth):
    api = await aiohttp_client(create_app(settings.model_copy(update={"redis_url": own_redis.url})))
    body = {"type": "echo", "payload": {"n": 1}}
    assert (await api.post("/api/v1/tasks", json=body, headers=auth())).status == 202

    own_redis.stop()
    for path, method in [("/api/v1/tasks", "post"), ("/api/v1/tasks", "get"),
                         ("/api/v1/tasks/00000000-0000-0000-0000-000000000000", "get")]:  # fmt: skip
        started = time.monotonic()
        resp = await api.request(method, path, json=body if method == "post" else None, headers=auth())
        elapsed = time.monotonic() - started
        assert resp.status == 503, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "unavailable"
        assert resp.headers["Retry-After"]
        assert elapsed < 5  # generous bound for a noisy machine; the design target is 2 s
    ready = await api.get("/health/ready")
    assert ready.status == 503
    assert (await ready.json())["components"]["redis"]["status"] == "down"
    health = await api.get("/health")
    assert health.status == 503
    assert (await health.json())["status"] == "unhealthy"
    assert (await api.get("/health/live")).status == 200

    own_redis.start()
    for _ in range(50):
        resp = await api.post("/api/v1/tasks", json=body, headers=auth())
        if resp.status == 202:
            break
        await asyncio.sleep(0.1)
    assert resp.status == 202
    # Scripts were lost with the restart (no RDB/AOF of the script cache): they are reloaded.
    own_redis_client = __import__("redis").Redis.from_url(own_redis.url)
    own_redis_client.script_flush()
    assert (await api.post("/api/v1/tasks", json=body, headers=auth())).status == 202
