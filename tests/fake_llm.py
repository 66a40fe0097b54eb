"""A small OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1 for the coaching tests.

Each request answers by, in order: the next item of ``script`` ("ok", "malformed" — content is not
JSON, "badschema" — JSON without ``suggestion``, "500", "429", "401", "timeout" — answers after
the client gave up); a 500 when its model is in ``failing``; ``respond(body)`` when set (a
content string: the fake obeys whatever it is told, as a weak model would); else "ok".
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from shared.devtools.embedded_redis import free_port
from worker.coach.engine import Suggestion

#: A model per tier, as the tests configure them (most capable first).
MODELS = {"creative": "model-creative", "balanced": "model-balanced", "fast": "model-fast"}
#: The built-in suggestion a test's turn falls back to.
BUILTIN = Suggestion("Pricing: three plans.", "knowledge", "pricing-tiers", "Pricing")


class Clock:
    """A clock a test moves by hand (``clock.now += 30``), for breakers and caches."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLLM:
    """The server (module docstring); ``requests`` keeps each call's model, auth and messages."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.failing: set[str] = set()
        self.respond: Callable[[dict[str, Any]], str] | None = None
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(
            {"model": body["model"], "auth": request.headers.get("Authorization"), "body": body}
        )
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "timeout":
            await asyncio.sleep(1.0)
        if mode == "500" or body["model"] in self.failing:
            return web.json_response({"error": "boom"}, status=500)
        if mode == "429":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0"})
        if mode == "401":
            return web.json_response({"error": "bad key"}, status=401)
        if mode == "ok" and self.respond is not None:
            content = self.respond(body)
        else:
            content = {
                "ok": json.dumps({"suggestion": f"LLM says hi via {body['model']}"}),
                "malformed": "Sure! Here is your suggestion: {not json",
                "badschema": json.dumps({"advice": "wrong key"}),
                "timeout": json.dumps({"suggestion": "too late"}),
            }[mode]
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": content}}]})

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def models_called(self) -> list[str]:
        return [r["model"] for r in self.requests]


@contextmanager
def running_fake_llm() -> Iterator[FakeLLM]:
    """Start a :class:`FakeLLM` in its own thread; stopped on exit."""
    server = FakeLLM()
    server.thread.start()
    assert server.ready.wait(5)
    try:
        yield server
    finally:
        server.loop.call_soon_threadsafe(server.loop.stop)
        server.thread.join(5)
