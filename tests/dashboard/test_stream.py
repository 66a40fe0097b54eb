"""The live stream: snapshot then changes, one shared poller whatever the viewers, paused when idle,
latest-frame delivery to slow clients, GOING_AWAY on shutdown."""

from __future__ import annotations

import asyncio

from aiohttp import WSCloseCode, WSMsgType

from dashboard.app import create_app
from dashboard.appkeys import POLLER
from dashboard.stream import Client
from tests.dashboard.conftest import KEYS, fake_heartbeat, login


def origin(client):
    return {"Origin": f"http://{client.host}:{client.port}"}


async def next_update(ws, state, predicate, frames=50):
    """Apply frames to ``state`` until ``predicate(state)`` holds; return the last frame."""
    for _ in range(frames):
        frame = await asyncio.wait_for(ws.receive_json(), 5)
        assert frame["type"] == "update"
        state.update(frame["data"])
        if predicate(state):
            return frame
    raise AssertionError("no matching frame")


async def test_snapshot_then_changes(as_role, rclient):
    fake_heartbeat(rclient, "w1", cpu_percent=10.0)
    client, _ = await as_role("viewer")
    async with client.ws_connect("/ws", headers=origin(client)) as ws:
        snap = await ws.receive_json()
        assert snap["type"] == "snapshot"
        state = dict(snap["data"])
        assert set(snap["data"]) == {"workers", "queues", "throughput", "alerts", "meta"}
        assert snap["data"]["workers"][0]["cpu_percent"] == 10.0
        fake_heartbeat(
            rclient,
            "w1",
            cpu_percent=95.0,
            procs=[{"pid": 7, "alive": True, "cpu_percent": 95.0, "started_at": 1}],
        )
        frame = await next_update(ws, state, lambda s: s["workers"][0]["cpu_percent"] == 95.0)
        assert "queues" not in frame["data"]  # only what changed
        assert state["workers"][0]["spark"]["cpu"] == [10.0, 95.0]
        assert [a["kind"] for a in state["alerts"]] == ["cpu"]
        rclient.delete(KEYS.worker("w1"))  # heartbeat expired: the worker is down
        await next_update(ws, state, lambda s: s["workers"][0]["state"] == "down")
        assert [a["kind"] for a in state["alerts"]] == ["worker_down"]


async def test_one_poller_constant_redis_cost_and_paused_when_idle(
    aiohttp_client, dash_settings, token, rclient
):
    fake_heartbeat(rclient, "w1")
    settings = dash_settings.model_copy(
        update={"dashboard_probe_interval": 0.0, "dashboard_stream_interval": 0.1}
    )
    client = await aiohttp_client(create_app(settings))
    await login(client, token("viewer"))
    poller = client.server.app[POLLER]

    def calls():
        stats = rclient.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))

    async def cost_per_tick(viewers):
        sockets = [await client.ws_connect("/ws", headers=origin(client)) for _ in range(viewers)]
        for ws in sockets:
            await ws.receive_json()
        await asyncio.sleep(0.3)
        before_calls, before_ticks = calls(), poller.ticks
        for _ in range(200):
            if poller.ticks >= before_ticks + 10:
                break
            await asyncio.sleep(0.05)
        cost = (calls() - before_calls) / (poller.ticks - before_ticks)
        assert len(poller.clients) == viewers
        for ws in sockets:
            await ws.close()
        return cost

    one, many = await cost_per_tick(1), await cost_per_tick(25)
    assert abs(one - many) <= 0.5, (one, many)  # the same commands per tick for 1 or 25 viewers
    assert poller.reader.round_trips <= 2 * poller.ticks + 1
    await asyncio.sleep(0.3)
    assert not poller.clients
    idle_ticks = poller.ticks
    await asyncio.sleep(0.5)
    assert poller.ticks == idle_ticks  # nobody connected: no polling


async def test_slow_client_gets_latest_state_not_a_backlog():
    sent: list[bytes] = []
    gate = asyncio.Event()

    class SlowSocket:
        closed = False

        async def send_frame(self, data, opcode):
            sent.append(data)
            await gate.wait()
            gate.clear()

    client = Client(SlowSocket())  # type: ignore[arg-type]
    task = asyncio.create_task(client.run(b"snapshot"))
    await asyncio.sleep(0)
    for i in range(50):  # 50 ticks while the socket is stuck on the snapshot
        client.offer({"meta": {"n": i}, **({"workers": [i]} if i == 3 else {})}, f"frame{i}".encode())
    gate.set()
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.sleep(0.01)
    assert len(sent) == 2  # the snapshot, then one merged frame with the latest of each section
    assert b'"n":49' in sent[1] and b'"workers":[3]' in sent[1]
    client.offer({"meta": {"n": 50}}, b"shared-bytes")
    gate.set()
    await asyncio.sleep(0.01)
    assert sent[2] == b"shared-bytes"  # an up-to-date client gets the pre-serialised frame
    task.cancel()


async def test_open_sockets_are_closed_going_away_on_shutdown(as_role):
    client, _ = await as_role("viewer")
    ws = await client.ws_connect("/ws", headers=origin(client))
    await ws.receive_json()
    await client.server.app.shutdown()
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            break
    assert ws.close_code == WSCloseCode.GOING_AWAY
