"""Dashboard fixtures: an in-process app on the test Redis, logged-in clients per role."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import create_app
from shared.devtools.embedded_redis import EmbeddedRedis
from shared.keys import Keys
from shared.stats import Heartbeat

KEYS = Keys()


def grab(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text`` (the test fails when it is missing)."""
    found = re.search(pattern, text)
    assert found, pattern
    return found.group(1)


def login_csrf(page: str) -> str:
    """The login form's CSRF token."""
    return grab(r'name="login_csrf" value="([^"]+)"', page)


async def login(client: Any, token: str) -> str:
    """Log ``client`` in with ``token`` through the login form; returns the page's CSRF token."""
    page = await (await client.get("/login")).text()
    resp = await client.post(
        "/login", data={"token": token, "login_csrf": login_csrf(page)}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    home = await (await client.get("/")).text()
    return grab(r'name="csrf-token" content="([^"]*)"', home)


@pytest.fixture
def dash_settings(settings):
    """Settings with a fast stream (the tests wait on behaviour, not on time)."""
    return settings.model_copy(update={"dashboard_stream_interval": 0.2, "dashboard_probe_interval": 0.05})


@pytest.fixture
async def dash(aiohttp_client, dash_settings):
    """A test client on a fresh dashboard app (not logged in)."""
    return await aiohttp_client(create_app(dash_settings))


@pytest.fixture
def as_role(aiohttp_client, dash_settings, token):
    """``client, csrf = await as_role("operator")``: a logged-in client of a fresh app."""

    async def make(scope: str = "admin", sub: str = "alice") -> tuple[Any, str]:
        client = await aiohttp_client(create_app(dash_settings))
        csrf = await login(client, token(scope, sub=sub))
        client.csrf = csrf
        return client, csrf

    return make


def fake_heartbeat(rclient, worker_id="w1", **fields) -> Heartbeat:
    """Write a heartbeat as an agent would (for tests that need no real agent)."""
    now = time.time()
    data = dict(
        id=worker_id, host="h", pid=1, state="running", version="0", started_at=now, sent_at=now,
        uptime_seconds=1, cpu_percent=12.5, rss_bytes=2**20, memory_percent=1, processes=1,
        processes_desired=1, threads=8, in_flight=0, processed=3, failed=0, queues=["default.p2"],
    )  # fmt: skip
    data.update(fields)
    beat = Heartbeat(**data)
    rclient.set(KEYS.worker(worker_id), beat.model_dump_json(), px=60_000)
    rclient.zadd(KEYS.workers, {worker_id: int(beat.sent_at * 1000)})
    return beat


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test alone (the outage tests freeze it with SIGSTOP), resumed
    before it is stopped."""
    server = EmbeddedRedis(tmp_path / "own-redis", aof=False)
    server.start()
    yield server
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()
