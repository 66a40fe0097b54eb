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

from dashboard.appkeys import KEYS, POLLER, QUEUES, REDIS, SETTINGS, SOCKETS, STORE
from dashboard.guard import same_origin
from dashboard.live_sections import MAX_KEY, Kind, LiveContext, Section, kind_of, parse_key
from dashboard.snapshot import SnapshotReader, alerts
from shared.aio import cancel_and_wait
from shared.errors import NotFound, ValidationFailed
from shared.web import RateLimitedWarning, redis_refusal

log = logging.getLogger("dashboard.stream")

#: Sections that change on every read (``meta.time``) but that no page acts on: a change to these
#: alone sends no frame; their latest value rides along with the next frame that carries news
#: (and is always in the snapshot).
QUIET = frozenset({"meta"})
#: Sections every socket receives, whatever it subscribed to: the clock and the stream's health
#: (``{"redis": "ok"}``, or ``{"redis": "unreachable", "reason", "since"}`` during an outage).
ALWAYS = frozenset({"meta", "status"})
#: The overview's sections (one read of :class:`~dashboard.snapshot.SnapshotReader`); a socket
#: that names no section receives these.
BASE = frozenset({"workers", "queues", "throughput", "alerts"})
STATUS_OK: dict[str, Any] = {"redis": "ok"}
#: Sections one socket may subscribe to, and distinct page sections one process reads per tick.
MAX_KEYS_PER_SOCKET = 8
MAX_LIVE_SECTIONS = 200


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

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
        wants: frozenset[str] = BASE | ALWAYS,
    ) -> None:
        self.ws = ws
        self.wants = wants
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
    """Reads the live state for every viewer of this process: the overview's sections when some
    socket shows one of them, and each distinct page section key once per tick, whatever the
    number of sockets that subscribe to it; a key nobody subscribes to any more is not read."""

    def __init__(
        self,
        client: Any,
        reader: SnapshotReader,
        interval: float,
        probe: float,
        ctx: LiveContext | None = None,
    ) -> None:
        self.redis = client
        self._outage_log = RateLimitedWarning("stream poller: redis cannot serve; retrying every tick")
        self._section_log = RateLimitedWarning("stream poller: a live section could not be read")
        self.reader = reader
        self.ctx = ctx
        self.interval = interval
        self.probe_interval = probe
        self.clients: set[Client] = set()
        #: Sockets by the set of sections they receive (sockets of one page share its frames).
        self.groups: dict[frozenset[str], set[Client]] = {}
        #: The page sections read every tick (key -> reader) and how many sockets show each.
        self.sections: dict[str, Section] = {}
        self.labels: dict[str, str] = {}
        self._refs: dict[str, int] = {}
        self.state: dict[str, Any] = {"status": STATUS_OK}
        self.encoded: dict[str, bytes] = {"status": orjson.dumps(STATUS_OK)}
        self.read_at = 0.0
        self.last_ok = 0.0  # wall-clock time of the last complete read (what the data is as of)
        self.ok = True
        self.ticks = self.probes = self.section_reads = 0
        self._registry: list[tuple[str, float]] = []
        self._snapshots: dict[frozenset[str], bytes] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- subscriptions ---------------------------------------------------------------------------

    def accept(self, keys: list[str]) -> tuple[frozenset[str], dict[str, str]]:
        """The sections a socket asking for ``keys`` receives (the overview's when it names none)
        and the keys refused, with why (unknown, malformed, too many)."""
        if not keys:
            return BASE | ALWAYS, {}
        keys = list(dict.fromkeys(keys))  # a key named twice is one subscription (one reference)
        wants, refused = set(ALWAYS), {}
        for key in keys[:MAX_KEYS_PER_SOCKET]:
            if key in BASE:
                wants.add(key)
                continue
            try:
                kind, section = parse_key(key)
            except ValueError as exc:
                refused[key[:MAX_KEY]] = str(exc)
                continue
            if key not in self.sections:
                full = self._full(kind, kind_of(key))
                if full:
                    refused[key] = full
                    continue
                self.sections[key], self.labels[key], self._refs[key] = section, kind.label, 0
            self._refs[key] += 1  # held until remove(): kept while the socket takes its snapshot
            wants.add(key)
        for key in keys[MAX_KEYS_PER_SOCKET : 2 * MAX_KEYS_PER_SOCKET]:  # named, up to a bound
            refused[key[:MAX_KEY]] = f"at most {MAX_KEYS_PER_SOCKET} sections per socket"
        return frozenset(wants), refused

    def _full(self, kind: Kind, name: str) -> str:
        """Why a new key of ``kind`` cannot be read (too many distinct ones), or ""."""
        if len(self.sections) >= MAX_LIVE_SECTIONS:
            return "too many distinct live sections on this dashboard process"
        if kind.most is not None and sum(kind_of(k) == name for k in self.sections) >= kind.most:
            return f"too many distinct live {name!r} sections on this dashboard process (at most {kind.most})"
        return ""

    def add(self, client: Client) -> None:
        """Start sending updates to ``client`` (after its snapshot)."""
        self.clients.add(client)
        self.groups.setdefault(client.wants, set()).add(client)
        self._wake.set()

    def remove(self, client: Client) -> None:
        """Stop sending to ``client`` (once per :meth:`accept`); a section nobody shows is dropped
        (not read again); the poller sleeps when the last socket leaves."""
        self.clients.discard(client)
        group = self.groups.get(client.wants)
        if group is not None:
            group.discard(client)
            if not group:
                del self.groups[client.wants]
        for key in client.wants:
            if key in self._refs:
                self._refs[key] -= 1
        self._drop_unused()
        if not self.clients:
            self._wake.clear()

    def _drop_unused(self) -> None:
        for key in [k for k, n in self._refs.items() if n <= 0]:
            for table in (self.sections, self.labels, self._refs, self.state, self.encoded):
                table.pop(key, None)
        if not any(w & BASE for w in self.groups):
            for name in BASE:  # read afresh when a socket shows them again
                self.state.pop(name, None)
                self.encoded.pop(name, None)

    def _wanted_base(self) -> bool:
        return any(w & BASE for w in self.groups)

    # -- reads -----------------------------------------------------------------------------------

    async def snapshot(self, wants: frozenset[str] = BASE | ALWAYS) -> bytes:
        """The state a socket receiving ``wants`` starts from, as a snapshot frame (read now when
        the last read is stale or a section is new; viewers that connect together share one read
        and one encoding)."""
        if self._stale() or self._missing(wants):
            async with self._lock:
                if self._stale() or self._missing(wants) & BASE:
                    await self._read(base=self._wanted_base() or bool(wants & BASE))
                elif self._missing(wants):
                    await self._read_missing(wants)
        frame = self._snapshots.get(wants)
        if frame is None:
            data = {k: self.state[k] for k in wants if k in self.state}
            frame = self._snapshots[wants] = encode_frame("snapshot", data)
        return frame

    def _missing(self, wants: frozenset[str]) -> set[str]:
        return {k for k in wants if k not in self.state}

    def _stale(self) -> bool:
        return time.monotonic() - self.read_at > self.interval

    async def tick(self) -> None:
        """Read everything shown and broadcast what changed."""
        async with self._lock:
            await self._read(base=self._wanted_base())

    async def _read(self, *, base: bool) -> None:
        state: dict[str, Any] = {}
        if base:
            state = await self.reader.read(self.redis)
            self._registry = [(w["id"], w["last_seen"]) for w in state["workers"]]
        for key, section in list(self.sections.items()):
            state[key] = await self._read_section(key, section)
        self.read_at, self.last_ok = time.monotonic(), time.time()
        self.ticks += 1
        self.ok = True
        state["status"] = STATUS_OK
        state.setdefault("meta", {"time": round(self.last_ok, 3)})
        self._publish(state)

    async def _read_missing(self, wants: frozenset[str]) -> None:
        state: dict[str, Any] = {}
        for key in self._missing(wants):
            if key in self.sections:
                state[key] = await self._read_section(key, self.sections[key])
        self._publish(self._with_outage(state))

    async def _read_section(self, key: str, section: Section) -> Any:
        """One page section's value; what the page cannot have (NotFound, ...) or a defect is
        ``{"error": ...}`` for that section alone; Redis failures propagate (the outage)."""
        assert self.ctx is not None, "page sections need a LiveContext"
        self.section_reads += 1
        try:
            return await section.read(self.ctx)
        except (NotFound, ValidationFailed) as exc:
            return {"error": str(exc)}
        except Exception as exc:
            if redis_refusal(exc) is not None:
                raise
            self._section_log.warn(f"{kind_of(key)}: {type(exc).__name__}")
            return {"error": "this section could not be read"}

    async def probe(self) -> None:
        """Re-read the heartbeats only if the worker registry changed since the last read."""
        async with self._lock:
            raw = await self.redis.zrange(self.reader.keys.workers, 0, -1, withscores=True)
            self.probes += 1
            registry = [(m.decode(), score / 1000) for m, score in raw]
            if registry == self._registry or "workers" not in self.state:
                return
            self._registry = registry
            workers = await self.reader.read_workers(self.redis, [(i, s * 1000) for i, s in registry])
            found = alerts(workers, self.state["queues"], self.state["throughput"])
            self._publish(self._with_outage({"workers": workers, "alerts": found}))

    # -- outage ----------------------------------------------------------------------------------

    def failed(self, reason: str) -> None:
        """Redis did not answer (``reason``): every socket is told its data is stale, as of the
        last complete read, and the alert list gains "Redis unreachable"."""
        if not self.ok:
            return
        self.ok = False
        state: dict[str, Any] = {
            "status": {"redis": "unreachable", "reason": reason, "since": round(self.last_ok, 3)}
        }
        if "alerts" in self.state:
            state["alerts"] = self.state["alerts"]
        self._publish(self._with_outage(state))

    def _with_outage(self, state: dict[str, Any]) -> dict[str, Any]:
        if self.ok or "alerts" not in state:
            return state
        found = [a for a in state["alerts"] if a.get("kind") != "redis"]
        return {**state, "alerts": [redis_alert(self.last_ok), *found]}

    async def watch(self) -> None:
        """Declare the data stale when no read has completed for 2 ticks (a Redis that hangs, e.g.
        SIGSTOPped, fails no command until its timeout; the ticks just stop ending)."""
        while True:
            await asyncio.sleep(self.interval / 4)
            if (
                self.clients
                and self.ok
                and self.read_at
                and time.monotonic() - self.read_at > 2 * self.interval
            ):
                self.failed("no answer from Redis")

    # -- fan-out ---------------------------------------------------------------------------------

    def _publish(self, state: dict[str, Any]) -> None:
        changed: dict[str, tuple[Any, bytes]] = {}
        for name, value in state.items():
            encoded = orjson.dumps(value)
            if self.encoded.get(name) != encoded:
                changed[name] = (value, encoded)
        self.state.update(state)
        if not changed:
            return
        self._snapshots.clear()
        news = changed.keys() - QUIET
        for name in news:
            self.encoded[name] = changed[name][1]
        if not news:  # only the clock moved: no page needs a frame for that
            return
        for name in changed.keys() & QUIET:
            self.encoded[name] = changed[name][1]
        frames: dict[tuple[str, ...], tuple[dict[str, Any], bytes, bytes]] = {}
        for wants, clients in self.groups.items():
            mine = tuple(n for n in changed if n in wants)
            if not news.intersection(mine):
                continue
            built = frames.get(mine)
            if built is None:
                sections = {n: changed[n][0] for n in mine}
                frame = _update_frame([(n, changed[n][1]) for n in mine])
                built = frames[mine] = (sections, frame, text_frame(frame))
            sections, frame, wire = built
            for client in clients:
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
                    if any("workers" in w for w in self.groups):
                        await self.probe()
            except Exception as exc:
                refusal = redis_refusal(exc)
                if refusal is None:
                    log.exception("stream poller: tick failed")
                else:  # an outage or a refusal (LOADING, BUSY, OOM, …): one line per interval
                    self._outage_log.warn(f"{refusal.code}: {type(exc).__name__}")
                    self.failed(refusal.code)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))


def _update_frame(sections: list[tuple[str, bytes]]) -> bytes:
    """An update frame from sections already encoded (each value serialised once per change)."""
    body = b",".join(orjson.dumps(name) + b":" + encoded for name, encoded in sections)
    return b'{"type":"update","data":{' + body + b"}}"


def redis_alert(since: float) -> dict[str, str]:
    """The alert shown while the poller cannot read Redis."""
    when = time.strftime("%H:%M:%S", time.gmtime(since)) if since else "the start"
    return {
        "level": "critical",
        "kind": "redis",
        "subject": "redis",
        "message": f"Redis unreachable: live data is stale (as of {when} UTC)",
    }


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws?s=<section key>&s=…``: authenticated (guard) and same-origin only; a snapshot of
    the sections named (the overview's when none), then their updates."""
    if not same_origin(request, request.headers.get("Origin")):
        raise web.HTTPForbidden(reason="WebSocket upgrade needs a same-origin Origin header")
    poller = request.app[POLLER]
    ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=4096)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    wants, refused = poller.accept(request.query.getall("s", []))
    client = Client(ws, request.transport, wants)
    sender = None
    try:
        try:
            snapshot = await poller.snapshot(wants)
        except Exception as exc:
            if redis_refusal(exc) is None:
                raise
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"redis unavailable")
            return ws
        if refused or any(k in poller.labels for k in wants):
            labels = {k: poller.labels[k] for k in sorted(wants) if k in poller.labels}
            snapshot = snapshot[:-1] + b"," + orjson.dumps({"live": labels, "refused": refused})[1:]
        poller.add(client)  # no await since the snapshot was taken: no update can be missed
        sender = asyncio.create_task(client.run(snapshot))
        async for _ in ws:  # the browser sends nothing we act on; reading handles ping/close
            pass
    finally:
        poller.remove(client)  # and the sections only this socket showed
        if sender is not None:
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
            "sections": len(poller.sections),
            "section_reads": poller.section_reads,
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
        LiveContext(app[REDIS], app[KEYS], app[QUEUES], app[STORE]),
    )
    tasks = [asyncio.create_task(poller.run()), asyncio.create_task(poller.watch())]
    yield
    await cancel_and_wait(tasks)


async def close_sockets(app: web.Application) -> None:
    """``on_shutdown``: close every open socket with GOING_AWAY."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
