"""Long-lived requests stay out of the latency histogram that alerts and SLOs read (issue 14 item
11): a WebSocket session (status 101, as long as the client stays) and a ``?wait=`` long-poll
are timed in ``opsdeck_http_long_request_duration_seconds`` instead, on both apps."""

from __future__ import annotations

import asyncio
import re

from coordinator.app import create_app as coordinator_app
from dashboard.app import create_app as dashboard_app

SHORT = "opsdeck_http_request_duration_seconds"
LONG = "opsdeck_http_long_request_duration_seconds"
CHAT = {"session_id": "s1", "message": "How do I open the call?", "user_id": "u1"}


def _counts(text: str, name: str) -> dict[tuple[str, str, str], float]:
    """(route, method, status) → the ``_count`` of histogram ``name``."""
    out = {}
    for labels, value in re.findall(rf"^{name}_count\{{(.*)\}} (\S+)$", text, flags=re.MULTILINE):
        got = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out[(got["route"], got["method"], got["status"])] = float(value)
    return out


async def test_coordinator_times_websocket_sessions_and_long_polls_apart(
    aiohttp_client, settings, auth, token
):
    api = await aiohttp_client(coordinator_app(settings))
    writer = auth()
    assert (await api.post("/api/v1/chat", json=CHAT, headers=writer)).status == 202
    assert (await api.post("/api/v1/chat?wait=0", json=CHAT, headers=writer)).status == 202
    # no worker runs: the long-poll waits its 0.2 s and answers 202
    assert (await api.post("/api/v1/chat?wait=0.2", json=CHAT, headers=writer)).status == 202
    ws = await api.ws_connect(f"/ws/chat?token={token('tasks:write')}")
    await ws.close()

    for _ in range(100):  # the server ends the session (and times it) once it has seen the close
        text = await (await api.get("/metrics", headers=auth("admin"))).text()
        short, long = _counts(text, SHORT), _counts(text, LONG)
        if ("/ws/chat", "GET", "101") in long:
            break
        await asyncio.sleep(0.05)
    assert short[("/api/v1/chat", "POST", "202")] == 2  # without wait and with wait=0
    assert long[("/api/v1/chat", "POST", "202")] == 1
    assert long[("/ws/chat", "GET", "101")] == 1
    assert not [key for key in short if key[2] == "101"]
    assert not [key for key in short if key[0] == "/ws/chat"]
    # the long histogram's buckets reach far beyond the request ones
    assert (
        f'{LONG}_bucket{{app="coordinator",le="3600.0",method="GET",route="/ws/chat",status="101"}} 1.0'
        in text
    )


async def test_dashboard_times_websocket_sessions_apart(aiohttp_client, settings, auth):
    client = await aiohttp_client(dashboard_app(settings))
    admin = auth("admin")
    origin = str(client.make_url("/")).rstrip("/")
    ws = await client.ws_connect("/ws", headers={**admin, "Origin": origin})
    await ws.receive()  # the first snapshot
    await ws.close()
    assert (await client.get("/api/tasks", headers=admin)).status == 200

    for _ in range(100):  # the server ends the session (and times it) once it has seen the close
        text = await (await client.get("/metrics", headers=admin)).text()
        short, long = _counts(text, SHORT), _counts(text, LONG)
        if long:
            break
        await asyncio.sleep(0.05)
    assert long[("/ws", "GET", "101")] == 1
    assert ("/ws", "GET", "101") not in short
    assert short[("/api/tasks", "GET", "200")] == 1
