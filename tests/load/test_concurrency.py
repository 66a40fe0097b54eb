"""Overload is not an outage: 500 concurrent requests over chat, the task list and the dashboard's
task list, on the dev stack (a real coordinator process, a real dashboard process, a real
Redis), all answer without an error — no 5xx, no 429 (issue 14 item 3).

Loopback only, one wave of requests, no time assertion. The apps' Redis pools (64 and 32
connections) are far smaller than the wave, so requests must wait for a connection rather than
fail: they used to answer 503 "Redis is unavailable" at once. The apps' metrics show that the
wave did wait (``opsdeck_redis_pool_waits_total`` > 0) and that nothing was shed.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.devtools.embedded_redis import free_port
from tests.helpers import Processes, read_log, wait_for

#: Requests fired at once, split over the three kinds.
CONCURRENT = 500
#: Tasks in Redis before the wave, so each list request reads a full page.
SEEDED = 60
#: Each app's pool (coordinator.app and dashboard.app).
POOLS = {"coordinator": 64, "dashboard": 32}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # the test's loopback URL
            return bool(resp.status == 200)
    except OSError:
        return False


def _sample(text: str, name: str, app: str) -> float:
    match = re.search(rf'^{name}\{{app="{app}"\}} (\S+)$', text, flags=re.MULTILINE)
    assert match, f"no {name} for {app} in\n{text}"
    return float(match.group(1))


async def test_500_concurrent_chat_list_and_dashboard_list_answer_without_error(
    procs: Processes, env_factory: Callable[..., dict[str, str]], auth: Any, tmp_path: Path
) -> None:
    ports = {"coordinator": free_port(), "dashboard": free_port()}
    env = env_factory(COORDINATOR_PORT=ports["coordinator"], DASHBOARD_PORT=ports["dashboard"])
    for name in ports:
        procs.start(name, env, tmp_path / f"{name}.log")
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for name, url in base.items():

        def up(url: str = url) -> bool:
            return _ready(f"{url}/health/live")

        wait_for(up, what=f"{name} up\n{read_log(tmp_path / f'{name}.log')}")

    writer, viewer, admin = auth("tasks:write", "tasks:read"), auth("viewer"), auth("admin")
    # no connection limit on the client side: all 500 requests reach the servers at once
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        for n in range(SEEDED):
            resp = await http.post(
                f"{base['coordinator']}/api/v1/tasks",
                json={"type": "echo", "payload": {"n": n}},
                headers=writer,
            )
            assert resp.status == 202, await resp.text()

        async def one(i: int) -> tuple[str, int, str]:
            kind = ("chat", "list", "dashboard")[i % 3]
            if kind == "chat":
                body = {"session_id": f"s{i}", "message": "How do I open the call?", "user_id": f"u{i}"}
                resp = await http.post(f"{base['coordinator']}/api/v1/chat", json=body, headers=writer)
            elif kind == "list":
                resp = await http.get(f"{base['coordinator']}/api/v1/tasks?limit=50", headers=writer)
            else:
                resp = await http.get(f"{base['dashboard']}/api/tasks?limit=50", headers=viewer)
            text = await resp.text()
            return kind, resp.status, text if resp.status >= 400 else ""

        results = await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
        metrics = {
            name: await (await http.get(f"{url}/metrics", headers=admin)).text() for name, url in base.items()
        }

    statuses = Counter((kind, status) for kind, status, _ in results)
    errors = [(kind, status, text[:200]) for kind, status, text in results if status >= 400]
    assert not errors, f"{len(errors)} errors of {CONCURRENT}: {statuses}; first: {errors[:3]}"
    assert statuses == {
        ("chat", 202): len(range(0, CONCURRENT, 3)),
        ("list", 200): len(range(1, CONCURRENT, 3)),
        ("dashboard", 200): len(range(2, CONCURRENT, 3)),
    }
    # the wave did exceed the pools (requests waited for a connection) and none was shed
    for name, size in POOLS.items():
        assert _sample(metrics[name], "opsdeck_redis_pool_max", name) == size
        assert _sample(metrics[name], "opsdeck_redis_pool_waits_total", name) > 0
        assert _sample(metrics[name], "opsdeck_redis_pool_sheds_total", name) == 0
