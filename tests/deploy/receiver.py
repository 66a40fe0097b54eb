"""A notification receiver on 127.0.0.1 in a thread: a Slack-compatible incoming webhook (``/slack``)
and a generic JSON webhook (``/generic``), each recording what it got. Scriptable: ``fail`` answers
that many requests 500 first; ``hang`` holds every request until ``release`` is set (a dead
receiver), counting them in ``held``."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes


@dataclass
class Receiver:
    """The receiver's state."""

    url: str = ""
    fail: int = 0
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0
    answered: int = 0
    accepted: list[Received] = field(default_factory=list)
    failed: list[Received] = field(default_factory=list)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """Bodies of the requests to ``path`` answered 200, in order."""
        return [r.body for r in self.accepted if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        got = Received(request.path, dict(request.headers), await request.json(), raw)
        if self.hang:
            self.held += 1
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 120)
        if self.fail > 0:
            self.fail -= 1
            self.failed.append(got)
            return web.json_response({"error": "down"}, status=500)
        self.accepted.append(got)
        self.answered += 1
        return web.Response(text="ok")


class ReceiverServer:
    """Runs a :class:`Receiver` on a free port of 127.0.0.1 in a daemon thread."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/slack", self.receiver.handle)
        app.router.add_post("/generic", self.receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def start(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self.receiver

    def stop(self) -> None:
        self.receiver.release.set()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
