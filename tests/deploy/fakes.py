"""Fake Render, Vercel, webhook, smoke and Prometheus endpoints on 127.0.0.1, in a thread.

They speak the real request and response shapes (Render ``/v1/services/{id}/deploys`` deploy
objects with ``status``; Vercel ``/v13/deployments`` with ``readyState``; Prometheus instant
vectors) and are scriptable through attributes: fail builds, fail a gate at a weight, answer
429 with Retry-After, hang, or reject the credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RENDER_KEY = "render-test-key"
VERCEL_TOKEN = "vercel-test-token"
WEBHOOK_SECRET = "webhook-test-secret"
RENDER_STATES = ["created", "build_in_progress", "update_in_progress", "live"]
VERCEL_STATES = ["QUEUED", "BUILDING", "INITIALIZING", "READY"]


@dataclass
class Script:
    """What the fakes should do; tests change these fields."""

    fail_build: bool = False
    throttle: int = 0  # answer this many provider calls with 429 first
    retry_after: str = "0"
    reject_auth: bool = False
    smoke_fail_at_weight: int | None = None  # webhook weight at which /health answers 500
    smoke_fail: bool = False
    error_rate: float = 0.0
    hang_seconds: float = 0.0


@dataclass
class Fakes:
    """The fake servers' state: every call they received."""

    script: Script = field(default_factory=Script)
    render_deploys: dict[str, dict[str, Any]] = field(default_factory=dict)
    render_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    vercel_deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    vercel_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    webhook_calls: list[dict[str, Any]] = field(default_factory=list)
    smoke_calls: int = 0
    weight: int = 0
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- helpers ----------------------------------------------------------------------------
    def deploy_calls(self, provider: str) -> list[tuple[str, str, Any]]:
        """Provider calls that started a deployment."""
        if provider == "render":
            return [c for c in self.render_calls if c[0] == "POST" and c[1].endswith("/deploys")]
        return [c for c in self.vercel_calls if c[0] == "POST" and c[1] == "/v13/deployments"]

    async def _gate(self, request: web.Request, token: str, calls: list[Any]) -> web.Response | None:
        body = await request.json() if request.can_read_body else None
        calls.append((request.method, request.path, body))
        if self.script.hang_seconds:
            await asyncio.sleep(self.script.hang_seconds)
        if self.script.reject_auth or request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"message": "invalid API key"}, status=401)
        if self.script.throttle > 0:
            self.script.throttle -= 1
            return web.json_response(
                {"message": "rate limited"}, status=429, headers={"Retry-After": self.script.retry_after}
            )
        return None

    # -- Render -----------------------------------------------------------------------------
    async def render_trigger(self, request: web.Request) -> web.Response:
        if (bad := await self._gate(request, RENDER_KEY, self.render_calls)) is not None:
            return bad
        body = self.render_calls[-1][2] or {}
        dep: dict[str, Any] = {"id": f"dep-{next(self._ids)}", "status": "created", "trigger": "api",
                               "_polls": 0, "commit": {"id": body.get("commitId") or "head"},
                               "createdAt": time.time()}  # fmt: skip
        self.render_deploys[dep["id"]] = dep
        return web.json_response({k: v for k, v in dep.items() if not k.startswith("_")}, status=201)

    async def render_get(self, request: web.Request) -> web.Response:
        if (bad := await self._gate(request, RENDER_KEY, self.render_calls)) is not None:
            return bad
        dep = self.render_deploys.get(request.match_info["deploy_id"])
        if dep is None:
            return web.json_response({"message": "not found"}, status=404)
        if dep["status"] not in ("live", "build_failed"):
            dep["_polls"] += 1
            if self.script.fail_build and dep["_polls"] >= 2:
                dep["status"] = "build_failed"
            else:
                dep["status"] = RENDER_STATES[min(dep["_polls"], len(RENDER_STATES) - 1)]
        return web.json_response({k: v for k, v in dep.items() if not k.startswith("_")})

    async def render_rollback(self, request: web.Request) -> web.Response:
        if (bad := await self._gate(request, RENDER_KEY, self.render_calls)) is not None:
            return bad
        target = (self.render_calls[-1][2] or {}).get("deployId")
        if target not in self.render_deploys:
            return web.json_response({"message": "deploy not found"}, status=400)
        dep = {"id": f"dep-{next(self._ids)}", "status": "live", "trigger": "rollback", "_polls": 0,
               "commit": self.render_deploys[target]["commit"]}  # fmt: skip
        self.render_deploys[dep["id"]] = dep
        return web.json_response({k: v for k, v in dep.items() if not k.startswith("_")}, status=201)

    # -- Vercel -----------------------------------------------------------------------------
    async def vercel_create(self, request: web.Request) -> web.Response:
        if (bad := await self._gate(request, VERCEL_TOKEN, self.vercel_calls)) is not None:
            return bad
        body = self.vercel_calls[-1][2] or {}
        if "name" not in body:
            return web.json_response(
                {"error": {"code": "bad_request", "message": "name is required"}}, status=400
            )
        sha = (body.get("gitSource") or {}).get("sha")
        dpl: dict[str, Any] = {"id": f"dpl_{next(self._ids)}", "readyState": "QUEUED", "url": "x.vercel.app",
                               "_polls": 0, "target": body.get("target"), "meta": {"githubCommitSha": sha},
                               "teamId": request.query.get("teamId")}  # fmt: skip
        self.vercel_deployments[dpl["id"]] = dpl
        return web.json_response({k: v for k, v in dpl.items() if not k.startswith("_")})

    async def vercel_get(self, request: web.Request) -> web.Response:
        if (bad := await self._gate(request, VERCEL_TOKEN, self.vercel_calls)) is not None:
            return bad
        dpl = self.vercel_deployments[request.match_info["id"]]
        if dpl["readyState"] not in ("READY", "ERROR"):
            dpl["_polls"] += 1
            if self.script.fail_build and dpl["_polls"] >= 2:
                dpl.update(readyState="ERROR", errorMessage="Command failed: npm run build")
            else:
                dpl["readyState"] = VERCEL_STATES[min(dpl["_polls"], len(VERCEL_STATES) - 1)]
        return web.json_response({k: v for k, v in dpl.items() if not k.startswith("_")})

    async def vercel_action(self, request: web.Request) -> web.Response:
        if (bad := await self._gate(request, VERCEL_TOKEN, self.vercel_calls)) is not None:
            return bad
        return web.json_response({}, status=201)

    # -- webhook, smoke, metrics -------------------------------------------------------------
    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Opsdeck-Signature", ""), expected):
            return web.json_response({"message": "bad signature"}, status=401)
        body = await request.json()
        self.webhook_calls.append(body)
        self.weight = body["weight"]
        return web.json_response({"accepted": True})

    async def webhook_status(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "failed" if self.script.fail_build else "live"})

    async def health(self, request: web.Request) -> web.Response:
        self.smoke_calls += 1
        failing = self.script.smoke_fail or self.script.smoke_fail_at_weight == self.weight
        return web.json_response({"ok": not failing}, status=500 if failing else 200)

    async def prometheus(self, request: web.Request) -> web.Response:
        value = self.script.error_rate if "error" in request.query.get("query", "") else 0.05
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [time.time(), str(value)]}]}}
        )  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_post("/v1/services/{sid}/deploys", self.render_trigger)
        r.add_get("/v1/services/{sid}/deploys/{deploy_id}", self.render_get)
        r.add_post("/v1/services/{sid}/rollback", self.render_rollback)
        r.add_post("/v13/deployments", self.vercel_create)
        r.add_get("/v13/deployments/{id}", self.vercel_get)
        r.add_post("/v10/projects/{project}/promote/{id}", self.vercel_action)
        r.add_post("/v9/projects/{project}/rollback/{id}", self.vercel_action)
        r.add_post("/hook", self.webhook)
        r.add_get("/hook/status", self.webhook_status)
        r.add_get("/health", self.health)
        r.add_get("/api/v1/query", self.prometheus)
        return app


class FakeServer:
    """Runs :class:`Fakes` on 127.0.0.1 (free port) in a daemon thread with its own loop."""

    def __init__(self) -> None:
        self.fakes = Fakes()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.fakes.app(), access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        self.fakes.url = f"http://127.0.0.1:{port}"
        self._runner = runner
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def start(self) -> Fakes:
        self._thread.start()
        self._ready.wait(10)
        return self.fakes

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
