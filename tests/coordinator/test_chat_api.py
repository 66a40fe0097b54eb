"""Coaching endpoints in process (no worker): validation, turn numbers, feedback checks, the bandit
view, the shared task waiter and the WebSocket's authentication."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from coordinator.openapi import build_openapi
from coordinator.waiter import WAITER
from shared.keys import Keys

KEYS = Keys()
CHAT = {"session_id": "s-1", "message": "What does it cost?", "user_id": "u-1"}


def fields_of(body):
    return [f["loc"] for f in body["error"]["fields"]]


async def test_chat_enqueues_a_coach_task_and_numbers_turns_per_session(api, auth, rclient):
    first = await api.post("/api/v1/chat", json=CHAT, headers=auth())
    assert first.status == 202, await first.text()
    body = await first.json()
    assert body["turn_number"] == 1 and body["session_id"] == "s-1" and body["status"] == "queued"
    assert first.headers["Location"] == body["status_url"] == f"/api/v1/tasks/{body['id']}"
    second = await (await api.post("/api/v1/chat", json=CHAT, headers=auth())).json()
    other = await (await api.post("/api/v1/chat", json={**CHAT, "session_id": "s-2"}, headers=auth())).json()
    assert second["turn_number"] == 2 and other["turn_number"] == 1
    record = await (await api.get(body["status_url"], headers=auth())).json()
    assert record["type"] == "coach" and record["queue"] == "coach.p1" and record["priority"] == "P1"
    assert record["payload"] == {**CHAT, "turn_number": 1}
    assert rclient.llen(KEYS.queue("coach.p1")) == 3
    assert 0 < rclient.ttl(KEYS.chat_turns("s-1")) <= 7 * 86400


@pytest.mark.parametrize(
    ("body", "query", "loc"),
    [
        ({**CHAT, "message": ""}, "", ["body", "message"]),
        ({k: v for k, v in CHAT.items() if k != "user_id"}, "", ["body", "user_id"]),
        ({**CHAT, "session_id": "has space"}, "", ["body", "session_id"]),
        ({**CHAT, "turn_number": 3}, "", ["body", "turn_number"]),
        (CHAT, "?wait=11", ["query", "wait"]),
        (CHAT, "?wait=soon", ["query", "wait"]),
    ],
)
async def test_chat_validation_names_the_field(api, auth, body, query, loc):
    resp = await api.post(f"/api/v1/chat{query}", json=body, headers=auth())
    assert resp.status == 422
    assert loc in fields_of(await resp.json())


async def test_chat_needs_tasks_write(api, auth):
    assert (await api.post("/api/v1/chat", json=CHAT)).status == 401
    assert (await api.post("/api/v1/chat", json=CHAT, headers=auth("tasks:read"))).status == 403


async def test_chat_wait_answers_202_when_nothing_finishes(api, auth):
    resp = await api.post("/api/v1/chat?wait=0.3", json=CHAT, headers=auth())
    assert resp.status == 202
    assert api.server.app[WAITER].waiting == 0


async def finish(rclient, task_id, result):
    """Do what the worker's task store does when a task ends: status + result, then the event."""
    rclient.hset(KEYS.task(task_id), mapping={"status": "succeeded", "result": result})
    rclient.xadd(KEYS.task_events, {"id": task_id, "type": "coach", "status": "succeeded", "ts": 0})


async def test_chat_wait_answers_200_when_the_task_ends_in_time(api, auth, rclient):
    waiter = api.server.app[WAITER]
    suggestion = {
        "text": "Pricing: ...",
        "arm": "knowledge",
        "entry_id": "pricing-tiers",
        "title": "Pricing",
        "source": "builtin",
        "model": None,
    }
    result = {"arm": "knowledge", "exploration": True, "propensity": 1 / 3, "suggestion": suggestion}

    async def worker():
        while not waiter.waiting:  # noqa: ASYNC110 - a test polling the app it drives
            await asyncio.sleep(0.01)
        ids = [m.decode() for m in rclient.lrange(KEYS.queue("coach.p1"), 0, -1)]
        await asyncio.sleep(0.05)
        await finish(rclient, ids[0], json.dumps(result))

    fake = asyncio.create_task(worker())
    resp = await api.post("/api/v1/chat?wait=5", json=CHAT, headers=auth())
    await fake
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "succeeded" and body["turn_number"] == 1
    assert body["suggestion"] == suggestion and body["arm"] == "knowledge" and body["exploration"] is True
    assert waiter.waiting == 0


async def test_one_listener_serves_many_waiters_and_idles_without_them(api, auth, rclient):
    waiter = api.server.app[WAITER]
    await asyncio.sleep(0.2)
    assert waiter.reads == 0  # nobody waits: the stream is not read at all
    ids = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(5)]
    waits = [asyncio.create_task(waiter.wait(i, 5)) for i in ids]
    while waiter.waiting < 5:  # noqa: ASYNC110 - a test polling the app it drives
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    for task_id in ids:
        await finish(rclient, task_id, "{}")
    assert await asyncio.gather(*waits) == ["succeeded"] * 5
    # A task that ended before anyone waited is seen through its record.
    assert await waiter.wait(ids[0], 1) == "succeeded"
    assert await waiter.wait("never-submitted", 0.2) is None


async def test_feedback_checks_the_turn(api, auth, rclient):
    unknown = await api.post(
        "/api/v1/feedback/submit", json={"session_id": "zz", "turn_number": 1, "rating": 4}, headers=auth()
    )
    assert unknown.status == 404
    assert ["body", "turn_number"] in fields_of(await unknown.json())
    await api.post("/api/v1/chat", json=CHAT, headers=auth())
    pending = await api.post(
        "/api/v1/feedback/submit", json={"session_id": "s-1", "turn_number": 1, "rating": 4}, headers=auth()
    )
    assert pending.status == 409
    rclient.hset(KEYS.chat_turn("s-1", 1), mapping={"arm": "npc", "x": b"\0" * 88})  # as the worker stores it
    ok = await api.post(
        "/api/v1/feedback/submit", json={"session_id": "s-1", "turn_number": 1, "rating": 4}, headers=auth()
    )
    assert ok.status == 202
    task = await (await api.get((await ok.json())["status_url"], headers=auth())).json()
    assert task["type"] == "feedback" and task["queue"] == "coach.p2"
    assert task["payload"] == {"session_id": "s-1", "turn_number": 1, "rating": 4}


@pytest.mark.parametrize("rating", [0, 6, 4.5, "5", None])
async def test_feedback_rating_must_be_an_integer_from_1_to_5(api, auth, rating):
    resp = await api.post(
        "/api/v1/feedback/submit",
        json={"session_id": "s", "turn_number": 1, "rating": rating},
        headers=auth(),
    )
    assert resp.status == 422
    assert ["body", "rating"] in fields_of(await resp.json())


async def test_bandit_view_before_any_decision(api, auth):
    assert (await api.get("/api/v1/bandit", headers=auth("tasks:write"))).status == 403
    body = await (await api.get("/api/v1/bandit", headers=auth("tasks:read"))).json()
    assert body["phase"] == "warmup" and body["alpha"] == 1.0 and body["decisions"] == 0
    assert body["arms"] == {
        a: {"pulls": 0, "updates": 0, "mean_reward": None} for a in ("npc", "tools", "knowledge")
    }


async def test_bandit_view_matches_the_worker_model(api, auth, rclient, settings):
    from shared.coaching import CoachPayload, FeedbackPayload
    from worker.coach.pipeline import CoachPipeline

    pipeline = CoachPipeline(rclient, settings)
    for n in range(1, 7):
        pipeline.run_turn(
            CoachPayload(session_id="b", message=f"turn {n}?", user_id="u", turn_number=n), f"t{n}"
        )
        if n % 2:
            pipeline.rate(FeedbackPayload(session_id="b", turn_number=n, rating=n % 5 + 1))
    body = await (await api.get("/api/v1/bandit", headers=auth())).json()
    expected = pipeline.bandit.summary()
    assert body["arms"] == expected["arms"] and body["window"] == expected["window"]
    assert body["decisions"] == 6 and sum(a["pulls"] for a in body["arms"].values()) == 6
    assert sum(a["updates"] for a in body["arms"].values()) == 3


async def test_coach_and_feedback_are_task_types(api, auth):
    ok = await api.post(
        "/api/v1/tasks", json={"type": "coach", "payload": {**CHAT, "turn_number": 1}}, headers=auth()
    )
    assert ok.status == 202
    bad = await api.post(
        "/api/v1/tasks",
        json={"type": "feedback", "payload": {"session_id": "s", "rating": 9}},
        headers=auth(),
    )
    assert bad.status == 422
    locs = fields_of(await bad.json())
    assert ["body.payload", "turn_number"] in locs and ["body.payload", "rating"] in locs


async def test_ws_chat_authenticates_and_checks_the_origin(api, auth, token):
    assert (await api.get("/ws/chat")).status == 401
    assert (await api.get("/ws/chat", headers=auth("tasks:read"))).status == 403
    cross = await api.get("/ws/chat", headers={**auth(), "Origin": "https://evil.example"})
    assert cross.status == 403
    async with api.ws_connect(f"/ws/chat?token={token('tasks:write')}") as ws:
        await ws.send_str('{"session_id": "w", "message": ""}')
        error = await ws.receive_json(timeout=5)
        assert error["type"] == "error"
        assert ["body", "message"] in fields_of(error) and ["body", "user_id"] in fields_of(error)
        await ws.send_json(CHAT)
        accepted = await ws.receive_json(timeout=5)
        assert accepted["type"] == "accepted" and accepted["turn_number"] == 1
    host = f"http://{api.server.host}:{api.server.port}"
    async with api.ws_connect("/ws/chat", headers={**auth(), "Origin": host}) as ws:
        await ws.send_json(CHAT)
        assert (await ws.receive_json(timeout=5))["turn_number"] == 2
    with pytest.raises(aiohttp.WSServerHandshakeError):
        async with api.ws_connect("/ws/chat?token=garbage"):
            pass


def test_openapi_documents_the_coaching_routes():
    paths = build_openapi()["paths"]
    assert paths["/api/v1/chat"]["post"]["security"] == [{"bearer": ["tasks:write"]}]
    assert {"200", "202", "401", "422"} <= set(paths["/api/v1/chat"]["post"]["responses"])
    assert [p["name"] for p in paths["/api/v1/chat"]["post"]["parameters"]] == ["wait"]
    assert {"202", "404", "409", "422"} <= set(paths["/api/v1/feedback/submit"]["post"]["responses"])
    assert paths["/api/v1/bandit"]["get"]["security"] == [{"bearer": ["tasks:read"]}]
    assert "get" in paths["/ws/chat"]
