"""The live stream is honest during a Redis outage (issue 19): with the test's own redis-server
frozen (SIGSTOP, so commands hang instead of failing) every socket is told its data is stale
before the poller starts a third tick, the alert list gains "Redis unreachable", and after
SIGCONT the next read says "ok" again and the alert goes."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from dashboard.app import create_app
from dashboard.appkeys import POLLER
from tests.dashboard.conftest import fake_heartbeat, login
from tests.dashboard.test_stream import origin


async def test_stale_within_two_ticks_of_a_frozen_redis_and_recovery(
    aiohttp_client, dash_settings, token, own_redis
):
    import redis as sync_redis

    rclient = sync_redis.Redis.from_url(own_redis.url)
    fake_heartbeat(rclient, "w1")
    settings = dash_settings.model_copy(update={"redis_url": own_redis.url})
    client = await aiohttp_client(create_app(settings))
    await login(client, token("viewer"))
    poller = client.server.app[POLLER]
    started: list[int] = []
    tick = poller.tick

    async def counted_tick() -> None:
        started.append(1)
        await tick()

    poller.tick = counted_tick
    overview = await client.ws_connect("/ws", headers=origin(client))
    task_page = await client.ws_connect("/ws?s=task:nope", headers=origin(client))
    snap = await overview.receive_json()
    assert snap["data"]["status"] == {"redis": "ok"}
    await task_page.receive_json()
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    stopped_at = len(started)
    state: dict[str, Any] = {}
    while state.get("status", {}).get("redis") != "unreachable":
        frame = await asyncio.wait_for(overview.receive_json(), 10)
        state.update(frame["data"])
    assert len(started) - stopped_at <= 2, "stale only after the third tick started"
    assert state["status"]["since"] > 0 and state["status"]["reason"]
    assert state["alerts"][0]["kind"] == "redis"
    assert state["alerts"][0]["message"].startswith("Redis unreachable")
    frame = await asyncio.wait_for(task_page.receive_json(), 10)  # a page without the alert list
    assert frame["data"]["status"]["redis"] == "unreachable" and "alerts" not in frame["data"]

    os.kill(own_redis.proc.pid, signal.SIGCONT)
    while state["status"].get("redis") != "ok":
        frame = await asyncio.wait_for(overview.receive_json(), 15)
        state.update(frame["data"])
    assert [a for a in state["alerts"] if a["kind"] == "redis"] == []
    frame = await asyncio.wait_for(task_page.receive_json(), 15)
    assert frame["data"]["status"] == {"redis": "ok"}
    await overview.close()
    await task_page.close()
    rclient.close()
