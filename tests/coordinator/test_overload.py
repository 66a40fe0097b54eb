"""A full Redis pool waits, and only a wait in vain is shed, as 503 ``overloaded`` (issue 14
item 3): not ``unavailable``, which says Redis is down. Real Redis; the pool is made full by
checking its connections out (what 64 slow requests would hold)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from coordinator.app import create_app as coordinator_app
from dashboard.app import create_app as dashboard_app
from shared.redis import PoolExhausted, WaitingPool, async_client
from shared.web import REDIS_METRICS, redis_refusal

TASK = {"type": "echo", "payload": {"n": 1}}
CHAT = {"session_id": "s1", "message": "hello", "user_id": "u1"}


def _sample(text: str, name: str, app: str) -> float:
    match = re.search(rf'^{name}\{{app="{app}"\}} (\S+)$', text, flags=re.MULTILINE)
    assert match, f"no {name} for {app}"
    return float(match.group(1))


async def test_a_full_pool_waits_for_a_connection_and_sheds_only_after_the_whole_wait(settings):
    client = async_client(settings.model_copy(update={"redis_timeout": 0.2}), max_connections=1)
    pool = client.connection_pool
    assert isinstance(pool, WaitingPool)
    try:
        held = await pool.get_connection()
        waiting = asyncio.ensure_future(client.set("k", "v"))
        for _ in range(10):  # a few turns of the loop: the set is waiting for the connection
            await asyncio.sleep(0)
        assert not waiting.done()
        await pool.release(held)  # freed: the waiting command gets it
        assert await waiting is True
        assert (pool.waits, pool.sheds) == (1, 0)

        held = await pool.get_connection()
        with pytest.raises(PoolExhausted) as caught:
            await client.get("k")  # nothing frees the connection: shed after 0.2 s
        assert (pool.waits, pool.sheds) == (2, 1)
        refusal = redis_refusal(caught.value)
        assert refusal is not None
        assert (refusal.status, refusal.code) == (503, "overloaded")
        await pool.release(held)
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


async def _hold_all(app: Any) -> list[Any]:
    pool = app[REDIS_METRICS].pool
    return [await pool.get_connection() for _ in range(pool.max_connections)]


async def test_a_pool_that_stays_full_answers_503_overloaded_on_both_apps(aiohttp_client, settings, auth):
    quick = settings.model_copy(update={"redis_timeout": 0.3})
    api, dash = await aiohttp_client(coordinator_app(quick)), await aiohttp_client(dashboard_app(quick))
    writer, viewer, admin = auth(), auth("viewer"), auth("admin")
    # one submission first: the batcher connects and Redis loads its script (through the pool)
    assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202
    held = {client: await _hold_all(client.app) for client in (api, dash)}
    try:
        for resp in (
            await api.get("/api/v1/tasks", headers=writer),
            await api.post("/api/v1/chat", json=CHAT, headers=writer),
            await dash.get("/api/tasks", headers=viewer),
        ):
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "overloaded"
            assert resp.headers["Retry-After"] == "1"
        # submissions have a connection of their own (the batcher's): still accepted
        assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202
    finally:
        for client, connections in held.items():
            for conn in connections:
                await client.app[REDIS_METRICS].pool.release(conn)
    assert (await api.get("/api/v1/tasks", headers=writer)).status == 200
    assert (await dash.get("/api/tasks", headers=viewer)).status == 200

    text = await (await api.get("/metrics", headers=admin)).text()
    assert _sample(text, "opsdeck_redis_pool_sheds_total", "coordinator") == 2
    assert _sample(text, "opsdeck_redis_pool_waits_total", "coordinator") >= 2
    assert _sample(text, "opsdeck_redis_pool_max", "coordinator") == 64
    assert 'opsdeck_redis_errors_total{app="coordinator",code="overloaded"} 2.0' in text
    assert 'opsdeck_redis_errors_total{app="coordinator",code="unavailable"} 0.0' in text
    text = await (await dash.get("/metrics", headers=admin)).text()
    assert _sample(text, "opsdeck_redis_pool_sheds_total", "dashboard") >= 1
    assert _sample(text, "opsdeck_redis_pool_max", "dashboard") == 32
