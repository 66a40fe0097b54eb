"""``create_app(settings)``: the operator dashboard (minimal: login with a token, workers, health).

The full dashboard (live stream, controls, tasks, queues) is its own issue; this page already
follows its rules: everything but health needs auth, the session cookie is HttpOnly and
SameSite=Strict, state changes are POST-only with a same-origin check, and no inline script.
"""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web

from shared import __version__
from shared.auth import Verifier
from shared.errors import AuthError
from shared.keys import Keys
from shared.redis import async_client
from shared.settings import Settings
from shared.stats import Heartbeat

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
VERIFIER = web.AppKey("verifier", Verifier)
COOKIE = "opsdeck_session"
VIEW_SCOPES = ("admin", "operator", "viewer")
CSP = "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def _page(title: str, body: str) -> web.Response:
    doc = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)} · Opsdeck</title>"
        "<style>body{font:14px system-ui;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3rem .6rem}</style></head>"
        f"<body><h1>Opsdeck</h1>{body}</body></html>"
    )
    return web.Response(text=doc, content_type="text/html", headers={"Content-Security-Policy": CSP})


def _authorized(request: web.Request) -> bool:
    verifier = request.app[VERIFIER]
    token = request.cookies.get(COOKIE)
    header = request.headers.get("Authorization")
    try:
        principal = verifier.from_header(header) if header else verifier.verify(token or "")
    except AuthError:
        return False
    return any(principal.has(s) for s in VIEW_SCOPES)


async def login_form(request: web.Request) -> web.Response:
    """The login page: paste a token from ``opsdeck token --scope admin``."""
    return _page(
        "Login",
        "<form method=post action=/login><label>Token <input name=token type=password size=60></label>"
        " <button>Log in</button></form><p>Get one with <code>opsdeck token --scope admin</code>.</p>",
    )


async def login(request: web.Request) -> web.Response:
    """Check the token and set the session cookie (same-origin POST only)."""
    origin = request.headers.get("Origin")
    if origin and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text="cross-origin login refused")
    form = await request.post()
    token = str(form.get("token", "")).strip()
    try:
        principal = request.app[VERIFIER].verify(token)
    except AuthError:
        raise web.HTTPUnauthorized(text="invalid or expired token") from None
    if not any(principal.has(s) for s in VIEW_SCOPES):
        raise web.HTTPForbidden(text="token lacks admin, operator or viewer scope")
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="Strict", secure=request.app[SETTINGS].production,
        max_age=max(1, int(principal.expires_at - time.time())),
    )  # fmt: skip
    raise response


async def index(request: web.Request) -> web.Response:
    """Workers and their heartbeats (server-rendered; refresh to update)."""
    if not _authorized(request):
        raise web.HTTPSeeOther("/login")
    settings = request.app[SETTINGS]
    keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
    client = request.app[REDIS]
    ids = [i.decode() for i in await client.zrange(keys.workers, 0, -1)]
    raws = await client.mget([keys.worker(i) for i in ids]) if ids else []
    rows = []
    for raw in raws:
        if raw is None:
            continue
        b = Heartbeat.model_validate_json(raw)
        rows.append(
            f"<tr><td>{html.escape(b.id)}</td><td>{html.escape(b.host)}</td><td>{b.pid}</td>"
            f"<td>{b.state}</td><td>{b.cpu_percent:.1f}</td><td>{b.rss_bytes / 2**20:.0f} MiB</td>"
            f"<td>{b.uptime_seconds:.0f}s</td><td>{b.processes}/{b.processes_desired}</td>"
            f"<td>{b.in_flight}</td><td>{b.processed}</td><td>{b.failed}</td></tr>"
        )
    table = (
        "<table><tr><th>worker</th><th>host</th><th>pid</th><th>state</th><th>CPU %</th><th>RSS</th>"
        "<th>uptime</th><th>processes</th><th>in flight</th><th>processed</th><th>failed</th></tr>"
        + ("".join(rows) or "<tr><td colspan=11>no live worker</td></tr>")
        + "</table>"
    )
    return _page("Workers", f"<h2>Workers</h2>{table}<p>v{__version__}</p>")


async def health_live(request: web.Request) -> web.Response:
    """The dashboard process answers."""
    return web.json_response({"status": "ok", "version": __version__})


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = async_client(app[SETTINGS], max_connections=16)
    yield
    await app[REDIS].aclose()


def create_app(settings: Settings) -> web.Application:
    """Build the dashboard app."""
    app = web.Application(client_max_size=16 * 1024)
    app[SETTINGS] = settings
    app[VERIFIER] = Verifier(settings.jwt_key)
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health", health_live)
    return app
