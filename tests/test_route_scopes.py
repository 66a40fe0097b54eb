"""Every route of both apps, from their route tables: 401 without credentials (unless the table
declares the route public) and 403 for credentials that lack exactly the route's scope (issue 15,
deliverable 4: a scope is declared once, in the table, and enforced by the edge)."""

from __future__ import annotations

import re
from typing import Any

from coordinator.app import create_app as coordinator_app
from coordinator.routes import ENDPOINTS
from dashboard.app import create_app as dashboard_app
from dashboard.guard import RANK
from dashboard.routes import METRICS_TOKEN_ROUTES, SCOPES
from shared.auth import SCOPES as TOKEN_SCOPES
from tests.dashboard.conftest import as_role, dash, dash_settings  # noqa: F401  (fixtures)

FILL = {"task_id": "0" * 36, "id": "w1", "name": "default.p2", "action": "restart", "message_id": "m1",
        "service": "api"}  # fmt: skip
#: Concrete paths of routes whose pattern is no plain ``{name}`` substitution.
CONCRETE = {"/static": "/static/app.css"}
#: Roles from least to most (the dashboard's scopes).
ROLES = sorted(RANK, key=RANK.__getitem__)
#: What the guard tells a caller below a route's role (dashboard.guard).
SHORT = {"operator": "viewers cannot change anything", "admin": "this needs the admin role"}


def concrete(path: str) -> str:
    return CONCRETE.get(path) or re.sub(r"\{(\w+)\}", lambda m: FILL[m.group(1)], path)


def routes_of(app: Any) -> set[tuple[str, str]]:
    """(method, canonical path) of every route on the router (HEAD twins and the ``*`` fallbacks
    that answer 404/405 aside)."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }


async def assert_error(resp: Any, status: int, code: str, where: Any) -> dict[str, Any]:
    """``resp`` is ``status`` in the JSON error shape with ``code``."""
    assert resp.status == status, (where, resp.status, await resp.text())
    assert resp.content_type == "application/json", where
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, where
    assert body["error"]["code"] == code and body["error"]["message"], (where, body)
    return body


def all_scopes_but(*missing: str) -> list[str]:
    """Every token scope except ``missing`` (and ``admin``, which holds them all)."""
    return [s for s in TOKEN_SCOPES if s not in {*missing, "admin"}]


# -- coordinator -------------------------------------------------------------------------------
def test_coordinator_table_is_the_router(settings):
    assert routes_of(coordinator_app(settings)) == {(ep.method, ep.path) for ep in ENDPOINTS}


async def test_coordinator_every_route_checks_its_declared_scope(aiohttp_client, settings, token):
    client = await aiohttp_client(coordinator_app(settings))
    public = []
    for ep in ENDPOINTS:
        path, where = concrete(ep.path), (ep.method, ep.path, ep.scope)
        resp = await client.request(ep.method, path)
        if ep.scope is None:  # declared public in the table
            assert resp.status != 401, where
            public.append(ep.path)
            continue
        await assert_error(resp, 401, "unauthorized", where)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        bad = await client.request(ep.method, path, headers={"Authorization": "Bearer nope"})
        await assert_error(bad, 401, "unauthorized", where)
        if not ep.scope:  # "" = any valid token: a token with no scope at all gets in
            resp = await client.request(ep.method, path, headers={"Authorization": f"Bearer {token()}"})
            assert resp.status not in (401, 403), where
            continue
        lacking = token(*all_scopes_but(ep.scope))
        resp = await client.request(ep.method, path, headers={"Authorization": f"Bearer {lacking}"})
        body = await assert_error(resp, 403, "forbidden", where)
        assert ep.scope in body["error"]["message"], where
    assert sorted(public) == ["/health", "/health/live", "/health/llm", "/health/ready"]


# -- dashboard ---------------------------------------------------------------------------------
def test_dashboard_table_is_the_router(dash_settings):  # noqa: F811  (the imported fixture)
    assert routes_of(dashboard_app(dash_settings)) == set(SCOPES)
    assert set(SCOPES.values()) <= {None, *RANK}


def is_json_route(path: str) -> bool:
    return path.startswith("/api/") or path == "/ws" or ("GET", path) in METRICS_TOKEN_ROUTES


async def test_dashboard_every_route_needs_credentials_unless_public(dash):  # noqa: F811
    public = []
    for (method, path), scope in SCOPES.items():
        resp = await dash.request(method, concrete(path), allow_redirects=False)
        where = (method, path, scope)
        if scope is None:
            assert resp.status != 401, where
            public.append(path)
        elif is_json_route(path):
            await assert_error(resp, 401, "unauthorized", where)
        else:  # a page: the login redirect, in HTML
            assert resp.status == 401 and resp.content_type == "text/html", where
            assert 'url=/login"' in await resp.text()
    assert sorted(public) == ["/health", "/health/live", "/login", "/login", "/static"]


async def test_dashboard_every_route_refuses_the_role_below_its_own(dash, as_role, token):  # noqa: F811
    viewer, csrf = await as_role("viewer")
    same_origin = {"Origin": f"http://{viewer.host}:{viewer.port}", "X-CSRF-Token": csrf}
    no_role = {"Authorization": f"Bearer {token(*all_scopes_but(*RANK))}"}  # every scope but the roles
    checked = set()
    for (method, path), scope in SCOPES.items():
        where = (method, path, scope)
        if scope is None:
            continue
        checked.add(scope)
        if scope == "viewer":  # one below viewer is no role at all: not a dashboard login (401)
            resp = await dash.request(method, concrete(path), headers=no_role, allow_redirects=False)
            if is_json_route(path):
                await assert_error(resp, 401, "unauthorized", where)
            else:
                assert resp.status == 401, where
            continue
        below = ROLES[ROLES.index(scope) - 1]
        bearer = {"Authorization": f"Bearer {token(below, *all_scopes_but(*RANK))}"}
        resp = await dash.request(method, concrete(path), headers=bearer, allow_redirects=False)
        if (method, path) in METRICS_TOKEN_ROUTES:  # a scrape credential: every refusal is a 401
            await assert_error(resp, 401, "unauthorized", where)
            continue
        if method == "GET" and not is_json_route(path):  # a page only operators see: the 403 page
            assert resp.status == 403 and resp.content_type == "text/html", where
            assert "viewers cannot change anything" in await resp.text(), where
            continue
        body = await assert_error(resp, 403, "forbidden", where)
        refusal = SHORT[scope]  # an operator on an admin route, a viewer on an operator route
        assert refusal in body["error"]["message"], where
        # a viewer's session, with its CSRF token and from the same origin
        resp = await viewer.request(method, concrete(path), headers=same_origin, allow_redirects=False)
        body = await assert_error(resp, 403, "forbidden", where)
        assert refusal in body["error"]["message"], where
    assert checked == set(RANK)
