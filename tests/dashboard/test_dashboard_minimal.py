"""The minimal dashboard: health is public, everything else needs a token login."""

from __future__ import annotations

import time

from dashboard.app import COOKIE, create_app
from shared.keys import Keys
from shared.stats import Heartbeat


async def test_login_then_workers_page(aiohttp_client, settings, token, rclient):
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/health/live")).status == 200
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login"
    assert (await client.post("/login", data={"token": "garbage"})).status == 401
    assert (await client.post("/login", data={"token": token("tasks:read")})).status == 403
    evil = await client.post(
        "/login", data={"token": token("admin")}, headers={"Origin": "http://evil.example"}
    )
    assert evil.status == 403

    now = time.time()
    beat = Heartbeat(
        id="w<1>", host="h", pid=1, state="running", version="0", started_at=now, sent_at=now,
        uptime_seconds=1, cpu_percent=12.5, rss_bytes=2**20, memory_percent=1, processes=1,
        processes_desired=1, threads=8, in_flight=0, processed=3, failed=0, queues=[],
    )  # fmt: skip
    keys = Keys()
    rclient.set(keys.worker("w<1>"), beat.model_dump_json())
    rclient.zadd(keys.workers, {"w<1>": int(now * 1000)})

    resp = await client.post("/login", data={"token": token("admin")}, allow_redirects=False)
    assert resp.status == 303
    cookie = resp.headers["Set-Cookie"]
    assert COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await client.get("/")
    text = await page.text()
    assert page.status == 200
    assert "w&lt;1&gt;" in text and "<1>" not in text  # escaped
    assert "12.5" in text
    assert "script-src 'none'" in page.headers["Content-Security-Policy"]
