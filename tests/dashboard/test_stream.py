"""The live stream: snapshot then changes, one shared poller whatever the viewers, paused when idle,
latest-frame delivery to slow clients, GOING_AWAY on shutdown."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from aiohttp import WSCloseCode, WSMsgType

from dashboard.app import create_app
from dashboard.appkeys import POLLER
from dashboard.stream import Client, Poller, text_frame
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
        assert set(snap["data"]) == {"workers", "queues", "throughput", "alerts", "meta", "status"}
        assert snap["data"]["status"] == {"redis": "ok"}
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

    # Redis's counter, sampled as each read ends: a window from one tick's end to another's holds
    # whole ticks (sampling on a timer could catch a tick's first round trip without its end)
    at_tick_end: list[int] = []
    publish = poller._publish

    def counting_publish(state):
        at_tick_end.append(calls())
        publish(state)

    poller._publish = counting_publish

    async def cost_per_tick(viewers):
        sockets = [await client.ws_connect("/ws", headers=origin(client)) for _ in range(viewers)]
        for ws in sockets:
            await ws.receive_json()
        await asyncio.sleep(0.3)
        start = len(at_tick_end)
        for _ in range(200):
            if len(at_tick_end) > start + 10:
                break
            await asyncio.sleep(0.05)
        cost = (at_tick_end[start + 10] - at_tick_end[start]) / 10
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


async def test_one_heartbeat_one_frame_and_no_frame_for_the_clock_alone(as_role, rclient):
    """A heartbeat reaches the page as one frame; a tick that only moved ``meta.time`` (which no page
    reads) sends nothing, and the latest ``meta`` rides along with the next real change."""
    fake_heartbeat(rclient, "w1", cpu_percent=10.0)
    client, _ = await as_role("viewer")  # ticks every 0.2 s, probes every 0.05 s
    async with client.ws_connect("/ws", headers=origin(client)) as ws:
        snap = await ws.receive_json()
        assert snap["data"]["meta"]["time"] > 0
        poller = client.server.app[POLLER]
        ticks = poller.ticks
        with rclient.pipeline() as pipe:  # MULTI, as an agent writes it (SET and ZADD together)
            fake_heartbeat(pipe, "w1", cpu_percent=20.0)
            pipe.execute()
        frames = []
        while poller.ticks < ticks + 5:  # a second of ticks
            with contextlib.suppress(TimeoutError):
                frames.append(await asyncio.wait_for(ws.receive_json(), 0.05))
        assert [f for f in frames if set(f["data"]) == {"meta"}] == []
        beats = [f["data"] for f in frames if "workers" in f["data"]]
        assert len(beats) == 1, orjson.dumps(frames).decode()  # (a new minute may add throughput)
        assert beats[0]["workers"][0]["cpu_percent"] == 20.0
        assert beats[0]["meta"]["time"] > snap["data"]["meta"]["time"]


def unframe(wire: bytes) -> bytes:
    """The payload of one final, unmasked RFC 6455 text frame (what a server sends)."""
    assert wire[0] == 0x81
    n, start = wire[1], 2
    assert not n & 0x80
    if n == 126:
        n, start = int.from_bytes(wire[2:4], "big"), 4
    elif n == 127:
        n, start = int.from_bytes(wire[2:10], "big"), 10
    assert len(wire) == start + n
    return wire[start:]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_lengths(size):
    payload = b"x" * size
    assert unframe(text_frame(payload)) == payload


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeSocket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_frame(self, data, opcode):
        self.sent.append(data)


async def test_a_change_is_one_write_of_the_same_bytes_per_socket():
    """Fan-out: each change is serialised and framed once; every idle socket gets those very bytes
    written to its transport from the poller (no task wake-up, no JSON, no await per socket); a
    socket whose transport still holds unsent bytes gets it through its own sender instead."""
    poller = Poller(None, None, 1.0, 0.0)  # type: ignore[arg-type]
    idle = [FakeTransport() for _ in range(3)]
    slow_socket, slow = FakeSocket(), FakeTransport(buffered=10)
    clients = [Client(FakeSocket(), t) for t in idle] + [Client(slow_socket, slow)]  # type: ignore[arg-type]
    tasks = [asyncio.create_task(c.run(b"snapshot")) for c in clients]
    await asyncio.sleep(0)
    for c in clients:
        poller.add(c)
    poller._publish({"workers": [1], "meta": {"time": 1.0}})
    poller._publish({"workers": [1], "meta": {"time": 2.0}})  # only the clock moved: nothing
    writes = [t.writes for t in idle]
    assert all(len(w) == 1 for w in writes) and writes[0][0] is writes[1][0] is writes[2][0]
    assert orjson.loads(unframe(writes[0][0])) == {
        "type": "update",
        "data": {"workers": [1], "meta": {"time": 1.0}},
    }
    await asyncio.sleep(0)
    assert slow.writes == []
    assert slow_socket.sent[1:] == [unframe(writes[0][0])]  # the same payload, via send_frame
    for t in tasks:
        t.cancel()
