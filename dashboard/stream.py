"""``GET /ws``: one shared poller per dashboard process, fanned out to every open socket.

The :class:`Poller` reads Redis every ``DASHBOARD_STREAM_INTERVAL`` seconds (two pipelined round
trips, see :mod:`dashboard.snapshot`) and, between those ticks, probes the worker registry every
``DASHBOARD_PROBE_INTERVAL`` seconds (one ZRANGE) so a new heartbeat reaches the browser within
~0.1 s. It sleeps while nobody is connected. Each update is serialised and framed once, and
those bytes are written from the poller straight to every socket that keeps up (no task wake-up
or await per socket); a socket that does not keep up gets its pending sections merged and written
by its own sender, so a slow client receives the latest state, never a backlog.

Frames: ``{"type": "snapshot", "data": {section: value}}`` first, then
``{"type": "update", "data": {changed sections}}``. A read whose only change is ``meta`` (its
time) sends no frame: ``meta`` rides along with the next update that carries a change.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from dashboard.appkeys import KEYS, POLLER, QUEUES, REDIS, SETTINGS, SOCKETS
from dashboard.guard import same_origin
from dashboard.snapshot import SnapshotReader, alerts
from shared.aio import cancel_and_wait
from shared.web import RateLimitedWarning, redis_refusal

log = logging.getLogger("dashboard.stream")

#: Sections that change on every read (``meta.time``) but that no page acts on: a change to these
#: alone sends no frame; their latest value rides along with the next frame that carries news
#: (and is always in the snapshot).
QUIET = frozenset({"meta"})


def encode_frame(kind: str, data: dict[str, Any]) -> bytes:
    """One frame as JSON bytes."""
    return orjson.dumps({"type": kind, "data": data})


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked, uncompressed RFC 6455 text frame: the bytes aiohttp's
    writer would put on the wire for ``send_frame(payload, TEXT)`` on a ``compress=False`` socket,
    built once per update instead of once per socket."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Client:
    """One socket: written straight from the poller while it keeps up, else through a pending frame
    slot and a sender task.

    Fast path: an idle client (snapshot written, nothing pending, its transport's buffer empty) gets
    the update's pre-framed bytes written to its transport synchronously inside the poller's fan-out,
    no task wake-up and no await per socket. Otherwise the update goes to the pending slot (merged
    with what is already there) and the sender task writes it with aiohttp's flow control, so a slow
    client receives the latest state, never a backlog, and never holds up the others. Frames keep
    their order: the fast path is refused while the sender has anything to write.
    """

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None = None) -> None:
        self.ws = ws
        self._transport = transport
        self._sections: dict[str, Any] | None = None
        self._frame: bytes | None = None
        self._busy = True  # until the snapshot is written
        self._ready = asyncio.Event()

    def offer(self, sections: dict[str, Any], frame: bytes, wire: bytes | None = None) -> None:
        """Send an update (``wire``: ``frame`` already framed, shared by every socket); if it cannot
        be written now, queue it, merged with the pending one if that has not been written yet."""
        transport = self._transport
        if (
            wire is not None
            and transport is not None
            and self._sections is None
            and not self._busy
            and not transport.get_write_buffer_size()  # else the kernel is not taking its bytes
            and not transport.is_closing()
            and not self.ws.closed
        ):
            transport.write(wire)  # one send(2) of the bytes every socket shares
            return
        if self._sections is None:
            self._sections, self._frame = sections, frame
        else:
            self._sections = {**self._sections, **sections}
            self._frame = None
        self._ready.set()

    async def run(self, snapshot: bytes) -> None:
        """Write the snapshot, then pending frames until the socket closes."""
        await self.ws.send_frame(snapshot, WSMsgType.TEXT)
        while not self.ws.closed:
            sections, frame = self._sections, self._frame
            self._sections = self._frame = None
            if sections is None:
                self._ready.clear()
                self._busy = False
                await self._ready.wait()
                self._busy = True
                continue
            await self.ws.send_frame(frame or encode_frame("update", sections), WSMsgType.TEXT)


class Poller:
    """Reads the live state for every viewer of this process."""

    def __init__(self, client: Any, reader: SnapshotReader, interval: float, probe: float) -> None:
        self.redis = client
        self._outage_log = RateLimitedWarning("stream poller: redis cannot serve; retrying every tick")
        self.reader = reader
        self.interval = interval
        self.probe_interval = probe
        self.clients: set[Client] = set()
        self.state: dict[str, Any] = {}
        self.encoded: dict[str, bytes] = {}
        self.read_at = 0.0
        self.ticks = self.probes = 0
        self._registry: list[tuple[str, float]] = []
        self._snapshot: bytes | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def add(self, client: Client) -> None:
        """Start sending updates to ``client`` (after its snapshot)."""
        self.clients.add(client)
        self._wake.set()

    def remove(self, client: Client) -> None:
        """Stop sending to ``client``; the poller sleeps when the last one leaves."""
        self.clients.discard(client)
        if not self.clients:
            self._wake.clear()

    async def snapshot(self) -> bytes:
        """The whole state as a snapshot frame (read now if the last read is stale; viewers that
        connect together share one read and one encoding)."""
        if self._stale():
            async with self._lock:
                if self._stale():
                    await self._read()
        if self._snapshot is None:
            self._snapshot = encode_frame("snapshot", self.state)
        return self._snapshot

    def _stale(self) -> bool:
        return time.monotonic() - self.read_at > self.interval

    async def tick(self) -> None:
        """Read everything and broadcast what changed."""
        async with self._lock:
            await self._read()

    async def _read(self) -> None:
        state = await self.reader.read(self.redis)
        self.read_at = time.monotonic()
        self.ticks += 1
        self._registry = [(w["id"], w["last_seen"]) for w in state["workers"]]
        self._publish(state)

    async def probe(self) -> None:
        """Re-read the heartbeats only if the worker registry changed since the last read."""
        async with self._lock:
            raw = await self.redis.zrange(self.reader.keys.workers, 0, -1, withscores=True)
            self.probes += 1
            registry = [(m.decode(), score / 1000) for m, score in raw]
            if registry == self._registry or not self.state:
                return
            self._registry = registry
            workers = await self.reader.read_workers(self.redis, [(i, s * 1000) for i, s in registry])
            found = alerts(workers, self.state["queues"], self.state["throughput"])
            self._publish({**self.state, "workers": workers, "alerts": found})

    def _publish(self, state: dict[str, Any]) -> None:
        changed: dict[str, Any] = {}
        for name, value in state.items():
            encoded = orjson.dumps(value)
            if self.encoded.get(name) != encoded:
                changed[name] = (value, encoded)
        self.state = state
        if changed:
            self._snapshot = None
        if not changed.keys() - QUIET:  # only the clock moved: no page needs a frame for that
            return
        for name, (_, encoded) in changed.items():
            self.encoded[name] = encoded
        if self.clients:
            sections = {name: value for name, (value, _) in changed.items()}
            frame = encode_frame("update", sections)
            wire = text_frame(frame)
            for client in self.clients:
                client.offer(sections, frame, wire)

    async def run(self) -> None:
        """Tick while anyone is connected; survive Redis outages (retry next tick)."""
        while True:
            await self._wake.wait()
            next_tick = time.monotonic() + self.interval
            try:
                await self.tick()
                while self.probe_interval and self.clients:
                    left = next_tick - time.monotonic()
                    if left <= self.probe_interval:
                        break
                    await asyncio.sleep(self.probe_interval)
                    await self.probe()
            except Exception as exc:
                refusal = redis_refusal(exc)
                if refusal is None:
                    log.exception("stream poller: tick failed")
                else:  # an outage or a refusal (LOADING, BUSY, OOM, …): one line per interval
                    self._outage_log.warn(f"{refusal.code}: {type(exc).__name__}")
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: authenticated (guard) and same-origin only; snapshot, then updates."""
    if not same_origin(request, request.headers.get("Origin")):
        raise web.HTTPForbidden(reason="WebSocket upgrade needs a same-origin Origin header")
    ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=4096)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    poller = request.app[POLLER]
    client = Client(ws, request.transport)
    snapshot = await poller.snapshot()
    poller.add(client)  # no await since the snapshot was taken: no update can be missed
    sender = asyncio.create_task(client.run(snapshot))
    try:
        async for _ in ws:  # the browser sends nothing we act on; reading handles ping/close
            pass
    finally:
        poller.remove(client)
        await cancel_and_wait([sender])
    return ws


async def stream_stats(request: web.Request) -> web.Response:
    """``GET /api/stream/stats``: the poller's counters (used by the benchmark)."""
    poller = request.app[POLLER]
    return web.json_response(
        {
            "ticks": poller.ticks,
            "probes": poller.probes,
            "clients": len(poller.clients),
            "round_trips": poller.reader.round_trips + poller.probes,
        }
    )


async def poller_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the shared poller task."""
    settings = app[SETTINGS]
    app[POLLER] = poller = Poller(
        app[REDIS],
        SnapshotReader(app[KEYS], app[QUEUES]),
        settings.dashboard_stream_interval,
        settings.dashboard_probe_interval,
    )
    task = asyncio.create_task(poller.run())
    yield
    await cancel_and_wait([task])


async def close_sockets(app: web.Application) -> None:
    """``on_shutdown``: close every open socket with GOING_AWAY."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
