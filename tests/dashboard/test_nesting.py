"""Deeply nested JSON on the dashboard (issue 14, item 4): task list, detail and pages read any
stored record (older code accepted payloads nested up to orjson's encoder limit), and every JSON
body — the retry's edited payload among them — is refused past MAX_JSON_DEPTH with a 422."""

from __future__ import annotations

import pytest

from shared.redis import async_client
from shared.tasks import ECHO, FAIL, Priority
from shared.taskstore import TaskStore
from tests.coordinator.test_nesting import MAX_JSON_DEPTH, TOO_DEEP, nested
from tests.dashboard.conftest import KEYS


async def store_as_old_code(settings, payload_json: bytes, task_type=ECHO, result_json=None) -> str:
    client = async_client(settings)
    store = TaskStore(client, settings)
    submitted = await store.submit_json(
        task_type, payload_json, Priority.P2, subject="old", correlation_id="c"
    )
    await store.aclose()
    if result_json is not None:
        await client.hset(
            KEYS.task(submitted.task_id), mapping={"status": "succeeded", "result": result_json}
        )
    await client.aclose()
    return submitted.task_id


async def task_count(settings) -> int:
    client = async_client(settings)
    count = await client.zcard(KEYS.tasks_all)
    await client.aclose()
    return int(count)


@pytest.mark.parametrize("depth", [252, 253, 254])
async def test_task_list_and_detail_read_records_nested_up_to_the_encoder_limit(
    as_role, dash_settings, depth
):
    deep = nested(depth).encode()
    bad = await store_as_old_code(dash_settings, deep, result_json=deep)
    good = await store_as_old_code(dash_settings, b'{"fine": true}')
    client, _ = await as_role("viewer")
    page = await client.get("/api/tasks")
    assert page.status == 200, await page.text()
    items = {t["id"]: t for t in (await page.json())["items"]}
    assert set(items) == {bad, good} and items[good]["payload"] == {"fine": True}
    assert "nested deeper than" in items[bad]["payload"]["_unreadable"]
    assert "nested deeper than" in items[bad]["result"]["_unreadable"]
    detail = await client.get(f"/api/tasks/{bad}")
    assert detail.status == 200, await detail.text()
    assert (await detail.json())["timeline"][0]["status"] == "queued"
    html = await client.get("/tasks")
    assert html.status == 200 and bad[:8] in await html.text()
    one = await client.get(f"/tasks/{bad}")
    assert one.status == 200 and "_unreadable" in await one.text()


async def test_an_exact_replay_of_an_unreadable_payload_is_refused(as_role, dash_settings):
    bad = await store_as_old_code(dash_settings, nested(254).encode())
    client, csrf = await as_role("operator")
    before = await task_count(dash_settings)
    resp = await client.post(f"/api/tasks/{bad}/retry", headers={"X-CSRF-Token": csrf})
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["fields"][0]["loc"] == ["payload"]
    assert await task_count(dash_settings) == before


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 254, 600, 1500])
async def test_a_retry_with_an_edited_payload_nested_too_deep_is_a_422(
    as_role, dash_settings, rclient, depth
):
    task_id = await store_as_old_code(dash_settings, b'{"message": "x"}', task_type=FAIL)
    before = rclient.zcard(KEYS.tasks_all)
    client, csrf = await as_role("operator")
    resp = await client.post(
        f"/api/tasks/{task_id}/retry",
        data=('{"payload": ' + nested(depth) + "}").encode(),
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["fields"] == [{"loc": ["body", "payload"], "msg": TOO_DEEP}]
    assert rclient.zcard(KEYS.tasks_all) == before


async def test_an_exact_replay_deeper_than_the_limit_is_refused(as_role, dash_settings, rclient):
    """Older code stored payloads deeper than today's limit: an exact replay would resubmit one."""
    task_id = await store_as_old_code(dash_settings, nested(100).encode())
    before = rclient.zcard(KEYS.tasks_all)
    client, csrf = await as_role("operator")
    resp = await client.post(f"/api/tasks/{task_id}/retry", headers={"X-CSRF-Token": csrf})
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["fields"] == [{"loc": ["payload"], "msg": TOO_DEEP}]
    assert rclient.zcard(KEYS.tasks_all) == before


async def test_other_dashboard_bodies_nested_too_deep_are_a_422(as_role):
    client, csrf = await as_role("admin")
    resp = await client.post(
        "/api/queue/default.p2/purge",
        data=('{"confirm": ' + nested(700) + "}").encode(),
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["fields"] == [{"loc": ["body", "confirm"], "msg": TOO_DEEP}]
