"""Security of the dashboard, point by point (issue 4 §5)."""

from __future__ import annotations

import re

import pytest
from aiohttp import WSServerHandshakeError
from pydantic import SecretStr

from dashboard.app import ROUTES, check_bind, create_app
from dashboard.guard import is_public
from shared.errors import ConfigError
from tests.dashboard.conftest import KEYS, fake_heartbeat, login_csrf

FILL = {"id": "w1", "name": "default.p2", "action": "restart", "message_id": "m1"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: FILL[m.group(1)], path)


def protected_routes(app):
    """Every (method, path) of the live router that is not login/health/static."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if route.method == "HEAD" or not path or is_public(path):
            continue
        out.append((route.method, concrete(path)))
    return out


async def test_every_route_but_login_health_static_needs_auth(dash, dash_settings):
    routes = protected_routes(dash.server.app)
    assert len(routes) >= len([r for r in ROUTES if not is_public(r[1])])
    assert ("GET", "/ws") in routes and ("POST", "/api/worker/w1/restart") in routes
    for method, path in routes:
        resp = await dash.request(method, path, allow_redirects=False)
        assert resp.status == 401, (method, path, resp.status)
        if path.startswith("/api/"):
            assert (await resp.json())["error"]["code"] == "unauthorized"
    # a bad bearer token is not a login either
    resp = await dash.get("/api/worker/status", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    for path in ("/login", "/health", "/health/live", "/static/app.js", "/static/app.css"):
        assert (await dash.get(path)).status == 200, path


async def test_tokens_without_a_dashboard_scope_are_refused(dash, token):
    resp = await dash.get("/api/worker/status", headers={"Authorization": f"Bearer {token('tasks:read')}"})
    assert resp.status == 401
    page = await (await dash.get("/login")).text()
    csrf = login_csrf(page)
    resp = await dash.post("/login", data={"token": token("tasks:read"), "login_csrf": csrf})
    assert resp.status == 401


async def test_session_cookie_flags_and_security_headers(dash, token, dash_settings, aiohttp_client):
    page = await dash.get("/login")
    csrf = login_csrf(await page.text())
    resp = await dash.post(
        "/login", data={"token": token("viewer"), "login_csrf": csrf}, allow_redirects=False
    )
    cookie = next(v for v in resp.headers.getall("Set-Cookie") if v.startswith("opsdeck_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    home = await dash.get("/")
    csp = home.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert home.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in await home.text()  # no inline script
    assert "Access-Control-Allow-Origin" not in home.headers
    evil = await dash.get("/api/worker/status", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers

    prod = dash_settings.model_copy(update={"opsdeck_env": "production"})
    client = await aiohttp_client(create_app(prod))
    page = await client.get("/login")
    assert "Secure" in page.headers["Set-Cookie"]  # so the client will not send it back over http:
    csrf = login_csrf(await page.text())
    resp = await client.post(
        "/login",
        data={"token": token("admin"), "login_csrf": csrf},
        headers={"Cookie": f"opsdeck_login={csrf}"},
        allow_redirects=False,
    )
    cookie = next(v for v in resp.headers.getall("Set-Cookie") if v.startswith("opsdeck_session="))
    assert "Secure" in cookie


async def test_state_changes_need_csrf_and_same_origin(as_role, rclient):
    fake_heartbeat(rclient)
    client, csrf = await as_role("operator")
    assert (await client.post("/api/queue/default.p2/pause")).status == 403
    assert (
        await client.post("/api/queue/default.p2/pause", headers={"X-CSRF-Token": "x" * 64})
    ).status == 403
    cross = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert (await client.post("/api/queue/default.p2/pause", headers=cross)).status == 403
    site = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    assert (await client.post("/api/queue/default.p2/pause", headers=site)).status == 403
    assert not rclient.sismember(KEYS.paused_queues, "default.p2")
    ok = await client.post("/api/queue/default.p2/pause", headers={"X-CSRF-Token": csrf})
    assert ok.status == 200
    assert rclient.sismember(KEYS.paused_queues, "default.p2")
    # logout is a POST too
    assert (await client.post("/logout", allow_redirects=False)).status == 403


async def test_no_state_change_on_get(as_role):
    client, _ = await as_role("admin")
    reads = {path for method, path, _ in ROUTES if method == "GET"}
    for method, path, _ in ROUTES:
        if method == "POST" and path != "/login":
            resp = await client.get(concrete(path), allow_redirects=False)
            shared = "{" in path or path in reads
            assert resp.status in (404, 405) or not path.startswith("/api/") or shared, path
            if resp.status == 200:  # a GET route shares the path (e.g. /api/worker/{id}) and only reads
                assert shared


async def test_viewer_reads_but_cannot_control(as_role, rclient, auth):
    fake_heartbeat(rclient)
    client, csrf = await as_role("viewer")
    assert (await client.get("/api/worker/status")).status == 200
    h = {"X-CSRF-Token": csrf}
    for path in (
        "/api/worker/w1/restart",
        "/api/queue/default.p2/pause",
        "/api/queue/default.p2/dead/retry",
        "/api/tasks/t1/cancel",
        "/api/tasks/t1/retry",
    ):
        resp = await client.post(path, headers=h)
        assert resp.status == 403, path
    resp = await client.post("/api/worker/w1/scale", json={"processes": 2}, headers=h)
    assert resp.status == 403
    assert rclient.xlen(KEYS.worker_commands("w1")) == 0
    assert "data-post" not in await (await client.get("/queues/default.p2")).text()
    # a bearer viewer token: reads yes, control no (no CSRF needed for bearer callers)
    bearer = auth("viewer")
    assert (await client.post("/api/worker/w1/restart", headers=bearer)).status == 403
    assert (await client.post("/api/worker/w1/restart", headers=auth("operator"))).status == 202


async def test_websocket_needs_auth_and_same_origin(as_role, dash, auth):
    origin = {"Origin": f"http://{dash.host}:{dash.port}"}
    with pytest.raises(WSServerHandshakeError) as err:
        await dash.ws_connect("/ws", headers=origin)
    assert err.value.status == 401
    client, _ = await as_role("viewer")
    same = {"Origin": f"http://{client.host}:{client.port}"}
    for headers in ({"Origin": "http://evil.example"}, {}, {"Origin": "null"}):
        with pytest.raises(WSServerHandshakeError) as err:
            await client.ws_connect("/ws", headers=headers)
        assert err.value.status == 403
    async with client.ws_connect("/ws", headers=same) as ws:
        assert (await ws.receive_json())["type"] == "snapshot"
    async with dash.ws_connect("/ws", headers={**origin, **auth("viewer")}) as ws:
        assert (await ws.receive_json())["type"] == "snapshot"


async def test_login_is_rate_limited_and_password_works(aiohttp_client, dash_settings, rclient):
    settings = dash_settings.model_copy(
        update={"dashboard_password": SecretStr("correct horse"), "dashboard_login_attempts": 3}
    )
    client = await aiohttp_client(create_app(settings))

    async def attempt(password):
        page = await (await client.get("/login")).text()
        csrf = login_csrf(page)
        return await client.post(
            "/login",
            data={"username": "olivia", "password": password, "login_csrf": csrf},
            allow_redirects=False,
        )

    assert (await client.post("/login", data={"password": "correct horse"})).status == 403  # no login CSRF
    for _ in range(3):
        assert (await attempt("wrong")).status == 401
    assert (await attempt("correct horse")).status == 429  # even the right one, for a minute
    rclient.delete(*rclient.keys(KEYS.login_failures("*")))
    resp = await attempt("correct horse")
    assert resp.status == 303
    assert (await client.get("/api/worker/status")).status == 200
    home = await (await client.get("/")).text()
    assert "olivia · admin" in home  # the name given with the password (the audit log's issuer)


def test_refuses_to_bind_elsewhere_without_a_password(settings):
    check_bind(settings)  # 127.0.0.1 by default
    check_bind(settings.model_copy(update={"dashboard_host": "::1"}))
    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD"):
        check_bind(settings.model_copy(update={"dashboard_host": "0.0.0.0"}))
    check_bind(
        settings.model_copy(update={"dashboard_host": "0.0.0.0", "dashboard_password": SecretStr("pw")})
    )


async def test_query_limits_are_bounded(as_role):
    client, _ = await as_role("viewer")
    for path in (
        "/api/tasks?limit=100000",
        "/api/audit?limit=100000",
        "/api/tasks/failures?limit=100000",
        "/api/queue/default.p2?limit=100000",
        "/api/metrics/history?range=1y",
        "/api/tasks?bogus=1",
    ):
        resp = await client.get(path)
        assert resp.status == 422, path


async def test_payloads_and_tracebacks_are_escaped_and_truncated(as_role, rclient):
    client, _ = await as_role("viewer")
    task_id = "t-evil"
    rclient.hset(
        KEYS.task(task_id),
        mapping={
            "id": task_id,
            "type": "echo",
            "queue": "default.p2",
            "priority": "P2",
            "status": "failed",
            "payload": '{"html": "<script>alert(1)</script>"}',
            "attempts": 1,
            "created_us": 1,
            "created_at": 1,
            "error": "Boom: <img src=x onerror=alert(1)>",
            "traceback": "Traceback\n" + "x" * 50_000,
        },
    )
    page = await (await client.get(f"/tasks/{task_id}")).text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page
    assert "more characters truncated" in page and len(page) < 40_000
    data = await (await client.get(f"/api/tasks/{task_id}")).json()
    assert len(data["traceback"]) < 9_000


async def test_logout_revokes_the_session_everywhere(as_role, rclient, dash_settings):
    """A copy of the cookie taken before logout is refused afterwards (revoked in Redis until it
    would have expired), not only the browser's own cookie, which logout deletes."""
    client, csrf = await as_role("operator")
    cookie = next(c.value for c in client.session.cookie_jar if c.key == "opsdeck_session")
    stolen = {"Cookie": f"opsdeck_session={cookie}"}
    assert (await client.get("/api/worker/status", headers=stolen)).status == 200
    out = await client.post("/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    client.session.cookie_jar.clear()
    assert (await client.get("/api/worker/status", headers=stolen)).status == 401
    page = await client.get("/", headers=stolen, allow_redirects=False)
    assert page.status == 401
    revoked = list(rclient.scan_iter(KEYS.revoked_session("*")))
    assert len(revoked) == 1 and 0 < rclient.ttl(revoked[0]) <= dash_settings.dashboard_session_ttl + 1
