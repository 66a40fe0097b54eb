"""Fake Render, Vercel, webhook, smoke and Prometheus endpoints on 127.0.0.1, in a thread.

They speak the real request and response shapes (Render ``/v1/services/{id}/deploys`` deploy
objects with ``status``; Vercel ``/v13/deployments`` with ``readyState``; Prometheus instant
vectors) and are scriptable through attributes: fail builds, fail a gate at a weight, answer
429 with Retry-After, hang, or reject the credentials; the metrics endpoint answers a series of
error rates one query at a time (``error_rates``), 503 (``metrics_down``) or holds a query
(``block_queries``: :attr:`Fakes.queried` is set, the answer waits for ``release``). ``block_creates``
holds the next creations (Render deploy, Vercel deployment, webhook step) after the provider
recorded them and before it answers: :attr:`Fakes.created` is set at that moment and the answer
waits for :attr:`Fakes.release`
(a worker killed then leaves a deployment the provider accepted and the worker never heard of).
The lookups a worker makes before repeating a call are served too: Render's list of a service's
deploys (``createdAfter``, ``limit``; ``[{"deploy": {...}, "cursor"}]``), Vercel's ``GET
/v6/deployments`` (``projectId``, ``meta-<key>=<value>``; ``{"deployments": [{"uid", ...}]}``),
and the webhook receiver drops a repeated ``Idempotency-Key`` (counted in ``webhook_duplicates``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    block_creates: int = 0  # hold this many creations after recording them (see Fakes.created)
    error_rates: list[float] = field(default_factory=list)  # next error_rate answers, then error_rate
    metrics_down: bool = False  # the Prometheus endpoint answers 503
    block_queries: int = 0  # hold this many metric queries (Fakes.queried set, until Fakes.release)
    block_after: int = 0  # ... once this many queries were answered


@dataclass
class Fakes:
    """The fake servers' state: every call they received."""

    script: Script = field(default_factory=Script)
    render_deploys: dict[str, dict[str, Any]] = field(default_factory=dict)
    render_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    vercel_deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    vercel_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    webhook_calls: list[dict[str, Any]] = field(default_factory=list)
    webhook_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook_duplicates: int = 0
    created: threading.Event = field(default_factory=threading.Event)
    queried: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    smoke_calls: int = 0
    metric_queries: list[str] = field(default_factory=list)
    weight: int = 0
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- helpers ----------------------------------------------------------------------------
    def deploy_calls(self, provider: str) -> list[tuple[str, str, Any]]:
        """Provider calls that started a deployment."""
        if provider == "render":
            return [c for c in self.render_calls if c[0] == "POST" and c[1].endswith("/deploys")]
        return [c for c in self.vercel_calls if c[0] == "POST" and c[1] == "/v13/deployments"]

    async def _hold(self) -> None:
        """After a creation was recorded: signal ``created`` and wait for ``release`` if blocking."""
        if self.script.block_creates > 0:
            self.script.block_creates -= 1
            self.created.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)

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
                               "_polls": 0, **_render_version(body), **_created()}  # fmt: skip
        self.render_deploys[dep["id"]] = dep
        await self._hold()
        return web.json_response({k: v for k, v in dep.items() if not k.startswith("_")}, status=201)

    async def render_list(self, request: web.Request) -> web.Response:
        """A service's deploys, newest first, as Render lists them (``createdAfter``, ``limit``)."""
        if (bad := await self._gate(request, RENDER_KEY, self.render_calls)) is not None:
            return bad
        self.render_calls[-1] = (request.method, request.path_qs, None)
        after = request.query.get("createdAfter")
        since = datetime.fromisoformat(after).timestamp() if after else 0.0
        limit = int(request.query.get("limit", "20"))
        found = sorted((d for d in self.render_deploys.values() if d.get("_created", 0.0) > since),
                       key=lambda d: d["_created"], reverse=True)[:limit]  # fmt: skip
        return web.json_response(
            [
                {"deploy": {k: v for k, v in d.items() if not k.startswith("_")}, "cursor": d["id"]}
                for d in found
            ]
        )

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
               "commit": self.render_deploys[target].get("commit"), **_created()}  # fmt: skip
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
        meta = {**(body.get("meta") or {}), "githubCommitSha": sha}
        dpl: dict[str, Any] = {"id": f"dpl_{next(self._ids)}", "readyState": "QUEUED", "url": "x.vercel.app",
                               "_polls": 0, "target": body.get("target"), "meta": meta,
                               "projectId": body.get("project"), "name": body.get("name"),
                               "createdAt": int(time.time() * 1000),
                               "teamId": request.query.get("teamId")}  # fmt: skip
        self.vercel_deployments[dpl["id"]] = dpl
        await self._hold()
        return web.json_response({k: v for k, v in dpl.items() if not k.startswith("_")})

    async def vercel_list(self, request: web.Request) -> web.Response:
        """``GET /v6/deployments``: newest first, filtered by ``projectId`` and ``meta-<key>``."""
        if (bad := await self._gate(request, VERCEL_TOKEN, self.vercel_calls)) is not None:
            return bad
        self.vercel_calls[-1] = (request.method, request.path_qs, None)
        q = request.query
        wanted = {k.removeprefix("meta-"): v for k, v in q.items() if k.startswith("meta-")}
        found = [
            d for d in self.vercel_deployments.values()
            if (not q.get("projectId") or d.get("projectId") == q["projectId"])
            and all(str((d.get("meta") or {}).get(k)) == v for k, v in wanted.items())
        ]  # fmt: skip
        found.sort(key=lambda d: d["createdAt"], reverse=True)
        found = found[: int(q.get("limit", "20"))]
        items = [{"uid": d["id"], "name": d.get("name"), "url": d["url"], "created": d["createdAt"],
                  "createdAt": d["createdAt"], "state": d["readyState"], "readyState": d["readyState"],
                  "meta": d["meta"], "target": d.get("target")} for d in found]  # fmt: skip
        return web.json_response({"deployments": items, "pagination": {"count": len(items), "next": None}})

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
        """Promote or roll back to a deployment of the project (404 for one Vercel does not know)."""
        if (bad := await self._gate(request, VERCEL_TOKEN, self.vercel_calls)) is not None:
            return bad
        if request.match_info["id"] not in self.vercel_deployments:
            return web.json_response(
                {"error": {"code": "not_found", "message": "Deployment not found"}}, status=404
            )
        return web.json_response({}, status=201)

    # -- webhook, smoke, metrics -------------------------------------------------------------
    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Opsdeck-Signature", ""), expected):
            return web.json_response({"message": "bad signature"}, status=401)
        body = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self.webhook_keys:  # a repeat: the step was done, answer as before
            self.webhook_duplicates += 1
            return web.json_response(self.webhook_keys[key])
        self.webhook_calls.append(body)
        self.weight = body["weight"]
        reply = {"accepted": True}
        if key:
            self.webhook_keys[key] = reply
        await self._hold()
        return web.json_response(reply)

    async def webhook_status(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "failed" if self.script.fail_build else "live"})

    async def health(self, request: web.Request) -> web.Response:
        self.smoke_calls += 1
        failing = self.script.smoke_fail or self.script.smoke_fail_at_weight == self.weight
        return web.json_response({"ok": not failing}, status=500 if failing else 200)

    async def prometheus(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        self.metric_queries.append(query)
        if self.script.block_queries > 0 and len(self.metric_queries) > self.script.block_after:
            # a worker is mid-round: it can be killed now
            self.script.block_queries -= 1
            self.queried.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        if self.script.metrics_down:
            return web.json_response({"status": "error", "error": "unavailable"}, status=503)
        value = self.script.error_rate if "error" in query else 0.05
        if "error" in query and self.script.error_rates:
            value = self.script.error_rates.pop(0)
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [time.time(), str(value)]}]}}
        )  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_post("/v1/services/{sid}/deploys", self.render_trigger)
        r.add_get("/v1/services/{sid}/deploys", self.render_list)
        r.add_get("/v1/services/{sid}/deploys/{deploy_id}", self.render_get)
        r.add_post("/v1/services/{sid}/rollback", self.render_rollback)
        r.add_post("/v13/deployments", self.vercel_create)
        r.add_get("/v6/deployments", self.vercel_list)
        r.add_get("/v13/deployments/{id}", self.vercel_get)
        r.add_post("/v10/projects/{project}/promote/{id}", self.vercel_action)
        r.add_post("/v9/projects/{project}/rollback/{id}", self.vercel_action)
        r.add_post("/hook", self.webhook)
        r.add_get("/hook/status", self.webhook_status)
        r.add_get("/health", self.health)
        r.add_get("/api/v1/query", self.prometheus)
        return app


def _render_version(body: dict[str, Any]) -> dict[str, Any]:
    """The commit or image of a Render deploy created with ``body``."""
    if body.get("imageUrl"):
        return {"image": {"ref": body["imageUrl"], "sha": "sha256:0"}}
    return {"commit": {"id": body.get("commitId") or "head"}}


def _created() -> dict[str, Any]:
    """``createdAt`` as Render writes it (ISO 8601, UTC) and the float the fake filters on."""
    now = time.time()
    return {"createdAt": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"), "_created": now}


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
