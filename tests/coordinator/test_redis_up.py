"""Each web app reports its own Redis reachability, ``opsdeck_redis_up{app}`` (issue 14 item 12):
1 while its probe's PING is answered, 0 while Redis is down, 1 again after a restart."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.app import create_app as coordinator_app
from dashboard.app import create_app as dashboard_app
from shared.devtools.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


async def _up(client: Any, name: str, headers: dict[str, str]) -> float | None:
    text = await (await client.get("/metrics", headers=headers)).text()
    match = re.search(rf'^opsdeck_redis_up\{{app="{name}"\}} (\S+)$', text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


async def _until(client: Any, name: str, headers: dict[str, str], value: float) -> None:
    seen = None
    for _ in range(200):  # bounded: the probe runs every 0.05 s here
        seen = await _up(client, name, headers)
        if seen == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}: opsdeck_redis_up stayed {seen}, expected {value}")


async def test_each_web_app_exports_its_own_redis_up(aiohttp_client, settings, own_redis, auth):
    from shared.web import REDIS_METRICS

    own = settings.model_copy(update={"redis_url": own_redis.url})
    admin = auth("admin")
    clients = {}
    for name, factory in (("coordinator", coordinator_app), ("dashboard", dashboard_app)):
        app = factory(own)
        app[REDIS_METRICS].probe_interval = 0.05
        clients[name] = await aiohttp_client(app)
    for name, client in clients.items():
        await _until(client, name, admin, 1.0)

    own_redis.stop()
    for name, client in clients.items():
        await _until(client, name, admin, 0.0)
        assert (await client.get("/metrics", headers=admin)).status == 200  # the exposition needs no Redis

    own_redis.start()
    for name, client in clients.items():
        await _until(client, name, admin, 1.0)
