"""Deeply nested JSON (issue 14, item 4): bodies nested deeper than MAX_JSON_DEPTH are refused
at the edge with a 422 naming the field, before pydantic or an encoder sees them, and records
stored by older code with payloads nested up to orjson's encoder limit stay readable (one
unreadable record never fails a list)."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from shared.keys import Keys
from shared.redis import async_client
from shared.tasks import ECHO, Priority
from shared.taskstore import TaskStore

KEYS = Keys()
#: The documented limit (shared.jsondepth.MAX_JSON_DEPTH, checked below).
MAX_JSON_DEPTH = 64
CHAT = {"session_id": "s-1", "message": "What does it cost?", "user_id": "u-1"}
TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels"


def nested(depth: int) -> str:
    """JSON text of ``depth`` levels, objects and arrays alternating (``{}`` is one level)."""
    opens, closes = [], []
    for level in range(depth - 1):
        if level % 2:
            opens.append("[")
            closes.append("]")
        else:
            opens.append('{"a":')
            closes.append("}")
    return "".join(opens) + "{}" + "".join(reversed(closes))


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def test_the_limit_is_the_documented_one():
    from shared.jsondepth import MAX_JSON_DEPTH as limit

    assert limit == MAX_JSON_DEPTH


def test_nested_builds_the_depth_it_says():
    for depth in (1, 2, 3, 64, 65, 254):
        assert depth_of(orjson.loads(nested(depth))) == depth


async def post_raw(api, path, text, headers):
    return await api.post(path, data=text.encode(), headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100, 200, 252, 254, 255, 600, 1023, 1024, 1500])
async def test_a_payload_nested_too_deep_is_a_422_naming_the_field(api, auth, rclient, depth):
    body = '{"type": "echo", "payload": ' + nested(depth) + "}"
    resp = await post_raw(api, "/api/v1/tasks", body, auth())
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == [{"loc": ["body", "payload"], "msg": TOO_DEEP}]
    assert str(MAX_JSON_DEPTH) in error["message"]
    assert rclient.llen(KEYS.queue("default.p2")) == 0
    assert rclient.zcard(KEYS.tasks_all) == 0


async def test_a_payload_at_the_limit_is_accepted_and_readable(api, auth):
    payload = nested(MAX_JSON_DEPTH)
    resp = await post_raw(api, "/api/v1/tasks", '{"type": "echo", "payload": ' + payload + "}", auth())
    assert resp.status == 202, await resp.text()
    record = await (await api.get((await resp.json())["status_url"], headers=auth())).json()
    assert record["payload"] == orjson.loads(payload)


async def test_a_deep_value_in_another_field_names_that_field(api, auth):
    body = '{"type": "echo", "payload": {}, "priority": ' + nested(300) + "}"
    resp = await post_raw(api, "/api/v1/tasks", body, auth())
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"] == [{"loc": ["body", "priority"], "msg": TOO_DEEP}]


async def test_a_deep_body_that_is_no_object_is_a_422(api, auth):
    resp = await post_raw(api, "/api/v1/tasks", "[" * 700 + "]" * 700, auth())
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"] == [{"loc": ["body"], "msg": TOO_DEEP}]


async def test_brackets_inside_strings_do_not_count(api, auth):
    payload = {"code": "[" * 5000 + "{" * 5000, "nested": orjson.loads(nested(10))}
    resp = await api.post("/api/v1/tasks", json={"type": "echo", "payload": payload}, headers=auth())
    assert resp.status == 202, await resp.text()
    record = await (await api.get((await resp.json())["status_url"], headers=auth())).json()
    assert record["payload"] == payload


async def test_a_depth_600_submit_is_refused_without_rendering_a_traceback(api, auth, caplog):
    """The old 500 rendered a RecursionError's traceback with locals inside the request (~14 s
    of a blocked loop). Now: a 422, nothing logged with a traceback, and a request running
    alongside is answered."""
    caplog.set_level(logging.DEBUG)
    body = '{"type": "echo", "payload": ' + nested(600) + "}"
    deep, live = await asyncio.gather(post_raw(api, "/api/v1/tasks", body, auth()), api.get("/health/live"))
    assert deep.status == 422 and live.status == 200
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 150, 254, 600, 1500])
async def test_a_chat_turn_nested_too_deep_is_a_422_naming_the_field(api, auth, rclient, depth):
    body = orjson.dumps(CHAT).decode()[:-1] + ', "message": ' + nested(depth) + "}"
    resp = await post_raw(api, "/api/v1/chat", body, auth())
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["fields"] == [{"loc": ["body", "message"], "msg": TOO_DEEP}]
    assert rclient.llen(KEYS.queue("coach.p1")) == 0


async def test_a_ws_chat_message_nested_too_deep_is_an_error_naming_the_field(api, token):
    async with api.ws_connect(f"/ws/chat?token={token('tasks:write')}") as ws:
        await ws.send_str('{"session_id": "w", "user_id": "u", "message": ' + nested(300) + "}")
        error = await ws.receive_json(timeout=5)
        assert error["type"] == "error" and error["error"]["code"] == "validation_error"
        assert error["error"]["fields"] == [{"loc": ["body", "message"], "msg": TOO_DEEP}]
        await ws.send_json(CHAT)
        assert (await ws.receive_json(timeout=5))["type"] == "accepted"


async def test_feedback_nested_too_deep_is_a_422(api, auth):
    body = '{"session_id": "s", "turn_number": 1, "rating": ' + nested(400) + "}"
    resp = await post_raw(api, "/api/v1/feedback/submit", body, auth())
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"] == [{"loc": ["body", "rating"], "msg": TOO_DEEP}]


# -- records stored by older code ----------------------------------------------------------------
async def store_as_old_code(settings, payload_json: bytes, result_json: bytes | None = None) -> str:
    """Record a task exactly as the old coordinator did for a body it accepted (submit.lua, no
    depth check), optionally with the result an echo worker wrote (its payload)."""
    client = async_client(settings)
    store = TaskStore(client, settings)
    submitted = await store.submit_json(ECHO, payload_json, Priority.P2, subject="old", correlation_id="c")
    await store.aclose()
    if result_json is not None:
        await client.hset(
            KEYS.task(submitted.task_id), mapping={"status": "succeeded", "result": result_json}
        )
    await client.aclose()
    return submitted.task_id


@pytest.mark.parametrize("depth", [252, 253, 254])
async def test_records_nested_up_to_the_encoder_limit_stay_readable(api, auth, settings, depth):
    deep = nested(depth).encode()
    bad = await store_as_old_code(settings, deep, result_json=deep)
    good = await store_as_old_code(settings, b'{"fine": [1, 2]}')
    page = await api.get("/api/v1/tasks", headers=auth())
    assert page.status == 200, await page.text()
    items = {r["id"]: r for r in (await page.json())["items"]}
    assert set(items) == {bad, good}
    assert items[good]["payload"] == {"fine": [1, 2]}
    for field in ("payload", "result"):
        marker = items[bad][field]
        assert set(marker) == {"_unreadable"} and "nested deeper than" in marker["_unreadable"]
    assert items[bad]["status"] == "succeeded" and items[bad]["type"] == "echo"
    detail = await api.get(f"/api/v1/tasks/{bad}", headers=auth())
    assert detail.status == 200, await detail.text()
    assert (await detail.json())["payload"] == items[bad]["payload"]
    filtered = await api.get("/api/v1/tasks?type=echo&limit=1", headers=auth())
    assert filtered.status == 200 and [r["id"] for r in (await filtered.json())["items"]] == [good]
    rest = await api.get(
        f"/api/v1/tasks?type=echo&cursor={(await filtered.json())['next_cursor']}", headers=auth()
    )
    assert rest.status == 200 and [r["id"] for r in (await rest.json())["items"]] == [bad]


async def test_records_of_moderate_depth_from_older_code_are_shown_whole(api, auth, settings):
    """Deeper than today's limit but well inside what a response can carry: shown as stored."""
    payload = nested(150)
    task_id = await store_as_old_code(settings, payload.encode())
    record = await (await api.get(f"/api/v1/tasks/{task_id}", headers=auth())).json()
    assert record["payload"] == orjson.loads(payload)


async def test_a_damaged_record_never_fails_the_list(api, auth, settings, rclient):
    good = await store_as_old_code(settings, b'{"n": 1}')
    damaged = await store_as_old_code(settings, b'{"n": 2}')
    rclient.hset(
        KEYS.task(damaged),
        mapping={
            "payload": b'{"unterminated": ',
            "result": b"\xff\xfe not json",
            "attempts": b"many",
            "created_at": b"10" * 30,
            "error": b"\xff\xfe bytes that are no UTF-8",
        },
    )
    page = await api.get("/api/v1/tasks", headers=auth())
    assert page.status == 200, await page.text()
    items = {r["id"]: r for r in (await page.json())["items"]}
    assert items[good]["payload"] == {"n": 1}
    assert set(items[damaged]["payload"]) == {"_unreadable"}
    assert set(items[damaged]["result"]) == {"_unreadable"}
    detail = await api.get(f"/api/v1/tasks/{damaged}", headers=auth())
    assert detail.status == 200, await detail.text()
