"""Page routes answer errors as pages of the site (layout, nav, the status, what happened, a way
back); ``/api/*`` and callers that ask for JSON keep the JSON error shape. A 503 while Redis is
down renders without Redis: no session lookup, a minimal nav."""

from __future__ import annotations

import time

import pytest

from dashboard.app import create_app
from dashboard.appkeys import SESSIONS
from dashboard.auth import COOKIE
from shared.devtools.embedded_redis import free_port

MISSING = "00000000-0000-4000-8000-00000000dead"


async def test_a_missing_task_page_is_a_page_with_nav_and_a_way_back(as_role):
    client, _ = await as_role("viewer", sub="vera")
    resp = await client.get(f"/tasks/{MISSING}")
    assert resp.status == 404
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "<nav" in page and 'href="/workers"' in page  # the site's layout and nav
    assert "vera" in page and "Log out" in page  # the session is known: the full header
    assert "404" in page and "Not found" in page
    assert f"task {MISSING} not found" in page
    assert 'href="/tasks"' in page.split("<main", 1)[1]  # a way back to the list
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_an_unknown_page_is_a_page_too(as_role):
    client, _ = await as_role("viewer")
    resp = await client.get("/no/such/page")
    assert resp.status == 404 and resp.content_type == "text/html"
    page = await resp.text()
    assert "<nav" in page and "Not found" in page and 'href="/"' in page.split("<main", 1)[1]


async def test_the_api_and_json_callers_keep_json(as_role):
    client, _ = await as_role("viewer")
    resp = await client.get(f"/api/tasks/{MISSING}")
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get(f"/tasks/{MISSING}", headers={"Accept": "application/json"})
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["error"]["message"] == f"task {MISSING} not found"
    resp = await client.get("/no/such/page", headers={"Accept": "application/json"})
    assert resp.status == 404 and resp.content_type == "application/json"
    # a browser's Accept (HTML first, */* after) gets the page
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    resp = await client.get(f"/tasks/{MISSING}", headers={"Accept": browser})
    assert resp.content_type == "text/html"


async def test_a_refused_form_post_is_a_page(as_role):
    client, _ = await as_role("viewer")
    resp = await client.post("/logout", data={"csrf_token": "wrong"})
    assert resp.status == 403 and resp.content_type == "text/html"
    assert "Forbidden" in await resp.text()


@pytest.fixture
async def redis_down(aiohttp_client, dash_settings):
    """A dashboard whose Redis does not answer (nothing listens on its port), and a valid
    session cookie for it (issued without Redis: sessions are signed, not stored)."""
    settings = dash_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout": 0.3}
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    client.session.cookie_jar.update_cookies({COOKIE: app[SESSIONS].issue("olivia", "operator")})
    return client


@pytest.mark.parametrize("path", ["/", "/tasks", f"/tasks/{MISSING}", "/queues/default.p2"])
async def test_a_503_while_redis_is_down_is_a_page_that_needs_no_redis(redis_down, path):
    started = time.monotonic()
    resp = await redis_down.get(path)
    assert resp.status == 503
    assert resp.content_type == "text/html"
    assert int(resp.headers["Retry-After"]) >= 1
    page = await resp.text()
    assert "503" in page and "Redis is unavailable" in page
    assert "<nav" in page and 'href="/tasks"' in page  # a minimal nav
    assert "olivia" not in page and "Log out" not in page  # no session was looked up
    assert f'href="{path}"' in page.split("<main", 1)[1]  # try again
    assert time.monotonic() - started < 5


async def test_the_api_503_while_redis_is_down_stays_json(redis_down):
    resp = await redis_down.get("/api/tasks")
    assert resp.status == 503 and resp.content_type == "application/json"
    assert (await resp.json())["error"]["code"] == "unavailable"
