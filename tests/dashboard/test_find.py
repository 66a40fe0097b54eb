"""Finding a task by the id one can see (issue 19): the header's search box takes a whole id or
its first characters; ``submit.lua`` writes every id into ``tasks:ids`` (score 0) with the record,
so the lookup is one ``ZRANGEBYLEX``, not a scan; the agent trims the index with ``tasks:all``.
Task search by error text with the scan's bound in the answer; saved views per user."""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

import shared.taskstore
from dashboard import api_tasks, pages
from shared.tasks import ECHO, FAIL
from tests.dashboard.conftest import KEYS
from tests.dashboard.test_api import submit


def commands(rclient) -> dict[str, int]:
    """Redis commands run since the last CONFIG RESETSTAT, by name."""
    stats = rclient.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_submit_writes_every_id_into_the_id_index(dash_settings, rclient):
    ids = await submit(dash_settings, 3)
    assert sorted(rclient.zrange(KEYS.tasks_ids, 0, -1, withscores=True)) == sorted(
        (i.encode(), 0.0) for i in ids
    )


async def test_a_short_id_finds_its_task_by_a_prefix_lookup(as_role, dash_settings, rclient):
    ids = await submit(dash_settings, 30)
    client, _ = await as_role("viewer")
    target = ids[7]
    rclient.config_resetstat()
    got = await (await client.get(f"/api/tasks/find?q={target[:8]}")).json()
    used = commands(rclient)
    assert got["query"] == target[:8] and not got["truncated"]
    assert [m["id"] for m in got["matches"]] == [target]
    assert got["matches"][0]["type"] == "echo" and got["matches"][0]["status"] == "queued"
    assert got["matches"][0]["created_at"].endswith("Z")
    assert used.get("zrangebylex") == 1
    scans = {"scan", "keys", "zrange", "zrevrange", "zrangebyscore", "zrevrangebyscore", "zscan"}
    assert not scans & set(used), used
    # upper case and the whole id work too
    got = await (await client.get(f"/api/tasks/find?q={target[:8].upper()}")).json()
    assert [m["id"] for m in got["matches"]] == [target]
    got = await (await client.get(f"/api/tasks/find?q={target}")).json()
    assert [m["id"] for m in got["matches"]] == [target]


async def test_a_prefix_of_several_ids_lists_them_bounded(as_role, dash_settings):
    ids = await submit(dash_settings, 40)
    first, count = Counter(i[0] for i in ids).most_common(1)[0]
    assert count >= 2
    client, _ = await as_role("viewer")
    got = await (await client.get(f"/api/tasks/find?q={first}")).json()
    assert [m["id"] for m in got["matches"]] == sorted(i for i in ids if i[0] == first)
    got = await (await client.get(f"/api/tasks/find?q={first}&limit=1")).json()
    assert len(got["matches"]) == 1 and got["truncated"]
    # the page: a list of the matches, each linked
    page = await client.get(f"/tasks/find?q={first}", allow_redirects=False)
    assert page.status == 200
    html = await page.text()
    for task_id in (i for i in ids if i[0] == first):
        assert f'href="/tasks/{task_id}"' in html


async def test_the_search_box_goes_straight_to_one_task_and_says_no_task_otherwise(as_role, dash_settings):
    (task_id,) = await submit(dash_settings, 1)
    client, _ = await as_role("viewer")
    home = await (await client.get("/")).text()
    assert 'action="/tasks/find"' in home and 'name="q"' in home and 'role="search"' in home
    resp = await client.get(f"/tasks/find?q={task_id[:8]}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/tasks/{task_id}"
    other = "f" if task_id[0] != "f" else "e"
    for q in (other * 8, "not an id!", ""):
        resp = await client.get("/tasks/find", params={"q": q}, allow_redirects=False)
        assert resp.status == 404, q
        html = await resp.text()
        assert "No task has an id starting with" in html and "<nav" in html
    # the old id box of the tasks page takes a short id too
    resp = await client.get(f"/tasks?id={task_id[:8]}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/tasks/{task_id}"
    api = await client.get("/api/tasks/find?q=not%20an%20id")
    assert api.status == 422


async def test_an_expired_record_is_no_match_and_an_id_recorded_before_the_index_is(
    as_role, dash_settings, rclient
):
    expired, old = await submit(dash_settings, 2)
    rclient.delete(KEYS.task(expired))  # its TTL passed; the agent has not trimmed yet
    rclient.zrem(KEYS.tasks_ids, old)  # recorded by a version without the id index
    client, _ = await as_role("viewer")
    assert (await (await client.get(f"/api/tasks/find?q={expired[:8]}")).json())["matches"] == []
    got = await (await client.get(f"/api/tasks/find?q={old}")).json()
    assert [m["id"] for m in got["matches"]] == [old]


async def test_the_agent_trims_the_id_index_with_tasks_all(dash_settings, rclient, monkeypatch):
    import redis

    import worker.agent
    from worker.agent import Agent

    ids = await submit(dash_settings, 5)
    old_us = (time.time() - dash_settings.task_ttl - 60) * 1_000_000
    for task_id in ids[:3]:
        rclient.zadd(KEYS.tasks_all, {task_id: old_us})
    monkeypatch.setattr(worker.agent, "TRIM_CHUNK", 2)  # several rounds
    agent = object.__new__(Agent)  # only what _trim_indexes uses
    agent.settings, agent.keys = dash_settings, dash_settings.keys
    agent.client = redis.Redis.from_url(dash_settings.effective_redis_url)
    try:
        agent._trim_indexes()
    finally:
        agent.client.close()
    assert sorted(m.decode() for m in rclient.zrange(KEYS.tasks_ids, 0, -1)) == sorted(ids[3:])
    assert sorted(m.decode() for m in rclient.zrange(KEYS.tasks_all, 0, -1)) == sorted(ids[3:])


async def test_search_by_error_text_states_its_bounded_scan(as_role, dash_settings, rclient, monkeypatch):
    fails = await submit(dash_settings, 4, FAIL, {"message": "x"})
    await submit(dash_settings, 6, ECHO)
    for i, task_id in enumerate(fails):
        error = "TimeoutError: upstream timed out" if i % 2 else "ValueError: bad input"
        rclient.hset(KEYS.task(task_id), mapping={"status": "failed", "error": error})
    client, _ = await as_role("viewer")
    got = await (await client.get("/api/tasks?error=TIMED%20OUT")).json()
    assert [t["id"] for t in got["items"]] == [fails[3], fails[1]]
    assert got["scanned"] == 10 and got["scan_limit"] == shared.taskstore.MAX_SCAN
    assert got["scan_bounded"] is False and got["next_cursor"] is None
    # with a small bound the page stops early and says so; the cursor goes on
    monkeypatch.setattr(shared.taskstore, "MAX_SCAN", 2)
    monkeypatch.setattr(api_tasks, "MAX_SCAN", 2)
    monkeypatch.setattr(pages, "MAX_SCAN", 2)
    got = await (await client.get("/api/tasks?error=timed+out&type=fail")).json()
    assert got["scan_bounded"] is True and got["scanned"] == 2 and got["scan_limit"] == 2
    assert [t["id"] for t in got["items"]] == [fails[3]]
    more = await (
        await client.get(f"/api/tasks?error=timed+out&type=fail&cursor={got['next_cursor']}")
    ).json()
    assert [t["id"] for t in more["items"]] == [fails[1]]
    html = await (await client.get("/tasks?error=timed+out&type=fail")).text()
    assert "Examined 2 tasks (at most 2 per page)" in html and 'name="error"' in html
    assert (await client.get("/api/tasks?error=" + "x" * 201)).status == 422


async def test_saved_views_per_user(as_role, rclient):
    alice, alice_csrf = await as_role("viewer", sub="alice")
    bob, bob_csrf = await as_role("operator", sub="bob")
    h = {"X-CSRF-Token": alice_csrf}
    resp = await alice.post(
        "/api/views",
        json={"name": "failed fails", "query": "/tasks?type=fail&status=failed&cursor=abc&evil=1"},
        headers=h,
    )
    assert resp.status == 201
    assert await resp.json() == {
        "name": "failed fails",
        "query": "type=fail&status=failed",
        "url": "/tasks?type=fail&status=failed",
    }
    assert (await alice.post("/api/views", json={"name": "x", "query": ""})).status == 403  # no CSRF
    views = (await (await alice.get("/api/views")).json())["views"]
    assert [v["name"] for v in views] == ["failed fails"]
    assert (await (await bob.get("/api/views")).json())["views"] == []
    assert rclient.hgetall(KEYS.saved_views("alice")) == {b"failed fails": b"type=fail&status=failed"}
    # the tasks page lists them and saves the current filters through its form
    page = await (await alice.get("/tasks?type=fail&status=failed")).text()
    assert 'href="/tasks?type=fail&amp;status=failed" aria-current="page">failed fails</a>' in page
    resp = await bob.post(
        "/tasks/views",
        data={"csrf_token": bob_csrf, "name": "p0 errors", "query": "priority=P0&error=boom"},
        allow_redirects=False,
    )
    assert resp.status == 303
    where = urlsplit(resp.headers["Location"])
    assert where.path == "/tasks" and parse_qs(where.query) == {
        "priority": ["P0"],
        "error": ["boom"],
        "saved": ["p0 errors"],
    }
    page = await (await bob.get(resp.headers["Location"])).text()
    assert "View “p0 errors” saved." in page and ">p0 errors</a>" in page
    resp = await bob.post(
        "/tasks/views/delete", data={"csrf_token": bob_csrf, "name": "p0 errors"}, allow_redirects=False
    )
    assert resp.status == 303 and rclient.hlen(KEYS.saved_views("bob")) == 0
    # delete through the API; a missing one is a 404
    assert (await alice.delete("/api/views/failed%20fails", headers=h)).status == 200
    assert (await alice.delete("/api/views/failed%20fails", headers=h)).status == 404


async def test_saved_views_are_bounded(as_role, rclient):
    from dashboard.views import MAX_VIEWS

    client, csrf = await as_role("viewer", sub="carol")
    rclient.hset(KEYS.saved_views("carol"), mapping={f"v{i}": "status=failed" for i in range(MAX_VIEWS)})
    h = {"X-CSRF-Token": csrf}
    assert (await client.post("/api/views", json={"name": "one more", "query": ""}, headers=h)).status == 409
    assert (
        await client.post("/api/views", json={"name": "v1", "query": "type=echo"}, headers=h)
    ).status == 201
    for body in (
        {"name": "", "query": ""},
        {"name": "x" * 65, "query": ""},
        {"name": "a", "query": "q" * 1001},
    ):
        assert (await client.post("/api/views", json=body, headers=h)).status == 422, body


@pytest.mark.parametrize("q", ["00000000", "0"])
async def test_find_needs_no_record_scan_when_nothing_matches(as_role, q):
    client, _ = await as_role("viewer")
    got = await (await client.get(f"/api/tasks/find?q={q}")).json()
    assert got == {"query": q, "matches": [], "truncated": False}
