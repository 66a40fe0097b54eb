"""The audit log against a real Redis: one entry per command whose outcome the agent's replies
update in place (pending → accepted → done | failed), the issuer's name after a password login,
filters (issuer, action, target, time) and pages, and entries written before (three rows per
worker command, no ``id`` field) still read as one row each."""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import SecretStr

from dashboard.app import create_app
from dashboard.appkeys import REDIS
from dashboard.audit import SCAN_LIMIT, record
from shared.control import AUDIT_MAXLEN, issue, new_command
from tests.dashboard.conftest import KEYS, fake_heartbeat, grab, login_csrf
from worker.control import CommandIntake


async def rows(client: Any, query: str = "") -> list[dict[str, Any]]:
    resp = await client.get(f"/api/audit?{query}")
    assert resp.status == 200, await resp.text()
    entries: list[dict[str, Any]] = (await resp.json())["entries"]
    return entries


async def test_a_command_is_one_entry_whose_outcome_the_agent_updates_in_place(as_role, rclient):
    fake_heartbeat(rclient, "w1")
    client, csrf = await as_role("operator", sub="erin")
    resp = await client.post("/api/worker/w1/scale", json={"processes": 3}, headers={"X-CSRF-Token": csrf})
    command_id = (await resp.json())["command_id"]
    [row] = await rows(client, "worker=w1")
    assert (row["command_id"], row["action"], row["processes"], row["issuer"], row["status"]) == (
        command_id, "scale", 3, "erin", "pending",
    )  # fmt: skip
    intake = CommandIntake(rclient, KEYS, "w1")  # the agent's own reply path
    [command] = intake.poll()
    intake.answer(command, "accepted")
    assert [r["status"] for r in await rows(client)] == ["accepted"]
    intake.answer(command, "failed", "did not complete in time")
    [row] = await rows(client)
    assert (row["status"], row["reason"]) == ("failed", "did not complete in time")
    assert row["updated_at"] >= row["at"]
    assert rclient.xlen(KEYS.audit) == 1  # one entry, updated in place
    page = await (await client.get("/audit")).text()
    assert page.count(f'data-audit="{command_id}"') == 1 and "did not complete in time" in page


async def test_the_issuer_of_a_password_login_is_the_name_given(aiohttp_client, dash_settings, rclient):
    settings = dash_settings.model_copy(update={"dashboard_password": SecretStr("correct horse")})
    client = await aiohttp_client(create_app(settings))
    form = {"password": "correct horse", "login_csrf": login_csrf(await (await client.get("/login")).text())}
    nameless = await client.post("/login", data=form, allow_redirects=False)
    assert nameless.status == 422 and "Give your name" in await nameless.text()
    form["login_csrf"] = login_csrf(await (await client.get("/login")).text())
    resp = await client.post("/login", data={**form, "username": "maria"}, allow_redirects=False)
    assert resp.status == 303
    csrf = grab(r'name="csrf-token" content="([^"]*)"', await (await client.get("/")).text())
    fake_heartbeat(rclient, "w1")
    assert (await client.post("/api/worker/w1/stop", headers={"X-CSRF-Token": csrf})).status == 202
    assert (await client.post("/api/queue/default.p2/pause", headers={"X-CSRF-Token": csrf})).status == 200
    assert [(r["action"], r["issuer"]) for r in await rows(client)] == [
        ("queue.pause", "maria"),
        ("stop", "maria"),
    ]


async def test_filters_and_pages(as_role, rclient):
    client, _ = await as_role("viewer")
    for i in range(30):
        await record(
            client.app[REDIS], KEYS,
            "queue.pause" if i % 2 else "task.cancel", f"queue q{i}" if i % 2 else f"task t{i}",
            "ann" if i % 3 == 0 else "bob",
        )  # fmt: skip
    every = await rows(client, "limit=500")
    assert len(every) == 30 and every[0]["target"] == "queue q29"
    # pages of 7 walk the whole log once, newest first
    seen, cursor, pages = [], "", 0
    while True:
        resp = await (await client.get(f"/api/audit?limit=7{cursor}")).json()
        seen += [r["command_id"] for r in resp["entries"]]
        pages += 1
        if not resp["next_cursor"]:
            break
        cursor = f"&cursor={resp['next_cursor']}"
    assert seen == [r["command_id"] for r in every] and pages == 5
    assert {r["issuer"] for r in await rows(client, "issuer=ann")} == {"ann"}
    assert len(await rows(client, "issuer=ann")) == 10
    assert {r["action"] for r in await rows(client, "action=task.cancel")} == {"task.cancel"}
    assert [r["target"] for r in await rows(client, "target=Q2")] == [
        f"queue q{i}" for i in (29, 27, 25, 23, 21)
    ]
    assert [r["target"] for r in await rows(client, "action=queue.pause&issuer=ann&limit=2")] == [
        "queue q27", "queue q21",
    ]  # fmt: skip
    # a time range: nothing in the future, everything since a minute ago
    assert await rows(client, f"since={time.time() + 60}") == []
    assert len(await rows(client, f"since={time.time() - 60}&until={time.time() + 60}&limit=500")) == 30
    assert await rows(client, "until=1960-01-01T00:00:00Z") == []  # before the epoch: nothing, not a 500
    assert len(await rows(client, "since=-100&limit=500")) == 30
    # the stream's first possible id: nothing is older (Redis refuses the interval "(0-0": was a 500)
    for first in ("0-0", "00-0"):
        resp = await client.get(f"/api/audit?cursor={first}&since=2000-01-01T00:00:00Z")
        assert resp.status == 200, first
        assert (await resp.json())["entries"] == []
    # bad input: 422 naming the field
    bad_input = (
        "cursor=x",
        "cursor=99999999999999999999-0",
        "limit=0",
        "limit=501",
        "since=yesterday",
        "colour=red",
    )
    for bad in bad_input:
        resp = await client.get(f"/api/audit?{bad}")
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["fields"][0]["loc"][1] == bad.split("=")[0]
    # the page: its filters, the next page's link, its live key
    page = await (await client.get("/audit?issuer=bob&limit=5")).text()
    assert page.count("<tr data-audit=") == 5 and 'rel="next"' in page
    assert '<meta name="live-section" content="audit?limit=5&amp;issuer=bob">' in page
    assert "since: " in await (await client.get("/audit?since=nope")).text()  # said, not a 500


async def test_a_filter_matching_little_stops_at_the_scan_bound(as_role, rclient):
    client, _ = await as_role("viewer")
    with rclient.pipeline(transaction=False) as pipe:
        for i in range(SCAN_LIMIT + 10):
            command = {"id": f"c{i}", "action": "queue.pause", "target": f"queue q{i}", "issuer": "bot"}
            pipe.xadd(KEYS.audit, {"id": f"c{i}", "command": orjson.dumps(command), "status": "done"})
        pipe.execute()
    resp = await (await client.get("/api/audit?issuer=nobody")).json()
    assert resp["entries"] == [] and resp["scan_bounded"] and resp["scanned"] == SCAN_LIMIT
    rest = await (await client.get(f"/api/audit?issuer=nobody&cursor={resp['next_cursor']}")).json()
    assert rest["scanned"] == 10 and not rest["scan_bounded"] and rest["next_cursor"] is None


async def test_entries_written_before_read_as_one_row_per_command(as_role, rclient):
    """What the agent and the dashboard wrote before one-entry commands: the issue script's pending
    row and the agent's accepted and done rows (the same command JSON, no ``id`` field), and a
    dashboard action's row."""
    command = new_command("w1", "restart", issuer="password")
    blob = command.model_dump_json()
    for status in ("pending", "accepted", "done"):
        rclient.xadd(KEYS.audit, {"command": blob, "status": status, "reason": ""})
    action = {"id": "a1", "worker": "", "target": "queue default.p2", "action": "queue.purge",
              "issuer": "ops", "issued_at": time.time()}  # fmt: skip
    rclient.xadd(KEYS.audit, {"command": orjson.dumps(action), "status": "done", "reason": "3 dropped"})
    rclient.xadd(KEYS.audit, {"command": b"not json", "status": "done"})  # a damaged entry reads too
    client, _ = await as_role("viewer")
    got = await rows(client)
    assert [(r["action"], r["status"], r["issuer"]) for r in got] == [
        (None, "done", None), ("queue.purge", "done", "ops"), ("restart", "done", "password"),
    ]  # fmt: skip
    assert got[1]["reason"] == "3 dropped" and got[2]["target"] == "worker w1"
    assert got[2]["at"] < got[2]["updated_at"] or got[2]["at"] == got[2]["updated_at"]
    page = await (await client.get("/audit")).text()
    assert page.count(f'data-audit="{command.id}"') == 1 and "queue.purge" in page
    # a page boundary inside a command's old rows: still one row on the first page
    assert [r["action"] for r in await rows(client, "limit=3")] == [None, "queue.purge", "restart"]


def test_the_log_keeps_the_newest_entries_and_their_outcomes(rclient):
    """The issue script trims the stream to AUDIT_MAXLEN and drops the outcomes of what it trims."""
    with rclient.pipeline(transaction=False) as pipe:
        for i in range(AUDIT_MAXLEN):
            pipe.xadd(KEYS.audit, {"id": f"old{i}", "command": b"{}", "status": "done"})
        pipe.hset(KEYS.audit_outcomes, mapping={"old0": b"{}", "old1": b"{}", "old2": b"{}"})
        pipe.execute()
    issue(rclient, KEYS, new_command("w1", "stop", issuer="cli"))
    assert rclient.xlen(KEYS.audit) == AUDIT_MAXLEN
    assert rclient.hkeys(KEYS.audit_outcomes) == [b"old1", b"old2"]  # old0 left with its entry
