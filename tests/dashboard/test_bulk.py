"""Bulk actions and adding a task (issue 19, parts 4 and 5) against a real Redis (and a real worker
where the action's effect is tasks running): each bulk command is one audit row with its
summary, bounded, and a retry never makes two runs of one failure."""

from __future__ import annotations

import functools
import time
from typing import Any

import orjson
import pytest

from shared.tasks import ECHO, FAIL, SLEEP, Priority
from tests.dashboard.conftest import KEYS
from tests.dashboard.test_api import kill, submit
from tests.helpers import wait_for
from tests.worker.test_end_to_end import start_agent, wait_running


def audit_rows(rclient) -> list[dict[str, Any]]:
    """The audit stream's entries, newest first, as {action, target, issuer, reason}."""
    out = []
    for _, fields in rclient.xrevrange(KEYS.audit):
        command = orjson.loads(fields[b"command"])
        out.append({**command, "reason": fields.get(b"reason", b"").decode()})
    return out


async def test_bulk_retry_selected_is_one_audited_command_and_never_twice(as_role, dash_settings, rclient):
    dead = await submit(dash_settings, 2, FAIL, {"message": "x"})
    (queued,) = await submit(dash_settings, 1)
    for task_id in dead:
        kill(rclient, task_id)
    client, csrf = await as_role("operator", sub="olga")
    h = {"X-CSRF-Token": csrf}
    ids = [*dead, queued, "00000000-0000-4000-8000-000000000000"]
    resp = await client.post("/api/tasks:bulk", json={"action": "retry", "ids": ids}, headers=h)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["done"] == 2 and body["skipped"] == {"not failed": 1, "not found": 1}
    assert body["summary"] == "retried 2, skipped 2 (1 not failed, 1 not found)"
    rows = audit_rows(rclient)
    assert len(rows) == 1 and rows[0]["action"] == "tasks.bulk_retry" and rows[0]["issuer"] == "olga"
    assert rows[0]["reason"] == body["summary"] and rows[0]["target"] == "4 selected tasks"
    new = [t.decode() for t in rclient.zrange(KEYS.tasks_by_status("queued"), 0, -1)]
    assert len(new) == 3  # the queued one and one retry per dead task
    # the same retry again (a second click, another operator): no second run of either failure
    other, csrf2 = await as_role("operator", sub="pete")
    again = await other.post(
        "/api/tasks:bulk", json={"action": "retry", "ids": dead}, headers={"X-CSRF-Token": csrf2}
    )
    assert (await again.json())["summary"] == "retried 0, skipped 2 (already retried)"
    single = await other.post(f"/api/tasks/{dead[0]}/retry", headers={"X-CSRF-Token": csrf2})
    assert single.status == 200 and (await single.json())["id"] in new  # the retry button agrees
    assert rclient.zcard(KEYS.tasks_by_status("queued")) == 3


async def test_bulk_cancel_a_filtered_set_with_its_count(as_role, dash_settings, rclient):
    sleeps = await submit(dash_settings, 4, SLEEP, {"seconds": 1})
    echoes = await submit(dash_settings, 3)
    kill(rclient, sleeps[0])  # ended: not canceled, reported
    client, csrf = await as_role("operator")
    h = {"X-CSRF-Token": csrf}
    count = await (await client.get("/api/tasks/count?type=sleep")).json()
    assert count == {"count": 4, "limit": 1000, "too_many": False}
    resp = await client.post(
        "/api/tasks:bulk", json={"action": "cancel", "filter": {"type": "sleep"}}, headers=h
    )
    body = await resp.json()
    assert body["matched"] == 4 and body["summary"] == "canceled 3, skipped 1 (finished)", body
    assert {rclient.hget(KEYS.task(t), "status") for t in sleeps[1:]} == {b"canceled"}
    assert {rclient.hget(KEYS.task(t), "status") for t in echoes} == {b"queued"}
    assert rclient.llen(KEYS.queue("default.p2")) == 3  # their messages left the queue
    again = await client.post("/api/tasks:bulk", json={"action": "cancel", "ids": sleeps[1:]}, headers=h)
    assert (await again.json())["summary"] == "canceled 0, skipped 3 (already canceled)"
    rows = audit_rows(rclient)
    assert [r["action"] for r in rows] == ["tasks.bulk_cancel", "tasks.bulk_cancel"]
    assert rows[1]["target"] == "4 tasks matching type=sleep"


async def test_bulk_delete_keeps_unfinished_records(as_role, dash_settings, rclient):
    done = await submit(dash_settings, 2, FAIL, {"message": "x"})
    (queued,) = await submit(dash_settings, 1)
    for task_id in done:
        kill(rclient, task_id)
    client, csrf = await as_role("operator")
    resp = await client.post(
        "/api/tasks:bulk", json={"action": "delete", "ids": [*done, queued]}, headers={"X-CSRF-Token": csrf}
    )
    assert (await resp.json())["summary"] == "deleted 2, skipped 1 (not finished)"
    for task_id in done:
        assert not rclient.exists(KEYS.task(task_id))
        assert (
            rclient.zscore(KEYS.tasks_all, task_id) is None
            and rclient.zscore(KEYS.tasks_ids, task_id) is None
        )
        assert rclient.zscore(KEYS.tasks_by_status("dead"), task_id) is None
        assert rclient.zscore(KEYS.tasks_by_type("fail"), task_id) is None
    assert rclient.hget(KEYS.task(queued), "status") == b"queued"
    assert (await client.get(f"/api/tasks/{done[0]}")).status == 404


async def test_bulk_commands_are_bounded_and_say_so(as_role, dash_settings):
    client, csrf = await as_role("operator")
    h = {"X-CSRF-Token": csrf}
    too_many = [f"t{i}" for i in range(1001)]
    resp = await client.post("/api/tasks:bulk", json={"action": "retry", "ids": too_many}, headers=h)
    error = (await resp.json())["error"]
    assert resp.status == 422 and error["fields"][0]["loc"] == ["body", "ids"], error
    assert "1000" in error["fields"][0]["msg"]
    await submit(dash_settings, 1001)
    resp = await client.post(
        "/api/tasks:bulk", json={"action": "cancel", "filter": {"type": "echo"}}, headers=h
    )
    error = (await resp.json())["error"]
    assert (
        resp.status == 422
        and "at most 1000" in error["message"]
        and error["fields"][0]["loc"] == ["body", "filter"]
    )
    count = await (await client.get("/api/tasks/count?type=echo")).json()
    assert count["too_many"] and count["count"] is None and "at most 1000" in count["message"]
    neither = await client.post("/api/tasks:bulk", json={"action": "cancel"}, headers=h)
    assert neither.status == 422


async def test_viewers_cannot_run_bulk_commands_or_add_tasks(as_role):
    client, csrf = await as_role("viewer")
    h = {"X-CSRF-Token": csrf}
    for url, body in [
        ("/api/tasks:bulk", {"action": "retry", "ids": ["x"]}),
        ("/api/tasks:clean", {"older_than_hours": 1, "preview": True}),
        ("/api/dead/retry", {}),
        ("/api/queue/default.p2/dead/bulk", {"action": "delete", "ids": ["x"]}),
        ("/api/queue/default.p2/delayed/run", {"ids": ["x"]}),
        ("/api/tasks", {"type": "echo"}),
    ]:
        assert (await client.post(url, json=body, headers=h)).status == 403, url
    assert (await client.get("/tasks/new")).status == 403
    assert (await client.get("/api/tasks/count")).status == 200  # reading a count is a viewer's


def age(rclient, task_id: str, status: str, hours: float) -> None:
    """Make a recorded task finished in ``status``, created ``hours`` ago (as its indexes score it)."""
    created = int((time.time() - hours * 3600) * 1e6)
    old = rclient.hget(KEYS.task(task_id), "status").decode()
    rclient.zrem(KEYS.tasks_by_status(old), task_id)
    rclient.zadd(KEYS.tasks_by_status(status), {task_id: created})
    rclient.hset(KEYS.task(task_id), mapping={"status": status, "created_us": created})


async def test_clean_by_age_preview_count_is_the_deleted_count(as_role, dash_settings, rclient):
    old_echo = await submit(dash_settings, 5)
    new_echo = await submit(dash_settings, 2)
    old_fail = await submit(dash_settings, 3, FAIL, {"message": "x"})
    for task_id in old_echo:
        age(rclient, task_id, "succeeded", 48)
    for task_id in new_echo:
        age(rclient, task_id, "succeeded", 1)
    for task_id in old_fail:
        age(rclient, task_id, "failed", 48)
    client, csrf = await as_role("operator", sub="olga")
    h = {"X-CSRF-Token": csrf}
    want = {"type": "echo", "older_than_hours": 24}
    preview = await (await client.post("/api/tasks:clean", json={**want, "preview": True}, headers=h)).json()
    assert preview["matched"] == 5 and preview["deleted"] == 0 and rclient.exists(KEYS.task(old_echo[0]))
    assert audit_rows(rclient) == []  # a preview changes nothing
    done = await (await client.post("/api/tasks:clean", json=want, headers=h)).json()
    assert done["deleted"] == preview["matched"] == 5 and done["summary"] == "deleted 5"
    assert not any(rclient.exists(KEYS.task(t)) for t in old_echo)
    assert all(rclient.exists(KEYS.task(t)) for t in [*new_echo, *old_fail])
    rows = audit_rows(rclient)
    assert len(rows) == 1 and rows[0]["action"] == "tasks.clean" and rows[0]["reason"] == "deleted 5"
    assert rows[0]["target"] == "finished echo older than 24 h"
    bad = await client.post("/api/tasks:clean", json={"status": "queued", "older_than_hours": 1}, headers=h)
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["loc"] == ["body", "status"]
    every = await (
        await client.post("/api/tasks:clean", json={"older_than_hours": 24, "preview": True}, headers=h)
    ).json()
    assert every["matched"] == 3  # the old failed ones of another type


def delay(rclient, task_id: str, queue: str = "default.p2", eta_in: float = 3600) -> str:
    """Move a queued task's message into the queue's delay queue (as a retry with backoff is);
    returns its Redis message id."""
    raw = rclient.hget(KEYS.queue_messages(queue), task_id)
    msg = orjson.loads(raw)
    mid = f"r-{task_id}"
    msg["queue_name"] = f"{queue}.DQ"
    msg["options"].update(eta=int((time.time() + eta_in) * 1000), retries=1, redis_message_id=mid)
    rclient.lrem(KEYS.queue(queue), 1, task_id)
    rclient.hdel(KEYS.queue_messages(queue), task_id)
    rclient.rpush(KEYS.delay_queue(queue), mid)
    rclient.hset(KEYS.delay_queue_messages(queue), mid, orjson.dumps(msg))
    rclient.hset(KEYS.task(task_id), "status", "retrying")
    rclient.zrem(KEYS.tasks_by_status("queued"), task_id)
    rclient.zadd(KEYS.tasks_by_status("retrying"), {task_id: 1})
    return mid


@pytest.mark.timeout(120)
async def test_dead_letters_retried_across_queues_and_delayed_run_now_really_run(
    as_role, dash_settings, rclient, procs, env_factory, tmp_path
):
    p2 = await submit(dash_settings, 3, SLEEP, {"seconds": 0})
    p0 = await submit(dash_settings, 2, SLEEP, {"seconds": 0}, priority=Priority.P0)
    (gone,) = await submit(dash_settings, 1, SLEEP, {"seconds": 0})
    delayed = await submit(dash_settings, 2, ECHO, {"x": 1})
    for task_id in [*p2, gone]:
        kill(rclient, task_id)
    for task_id in p0:
        kill(rclient, task_id, queue="default.p0")
    mids = [delay(rclient, t) for t in delayed]
    client, csrf = await as_role("operator", sub="olga")
    h = {"X-CSRF-Token": csrf}
    # delete one dead letter (its record stays dead), then retry all of them, across queues
    resp = await client.post(
        "/api/queue/default.p2/dead/bulk", json={"action": "delete", "ids": [gone]}, headers=h
    )
    assert (await resp.json())["summary"] == "deleted 1"
    assert rclient.zcard(KEYS.dead_letters("default.p2")) == 3
    # run one delayed message now, before any worker runs: it leaves the delay queue
    resp = await client.post("/api/queue/default.p2/delayed/run", json={"ids": [delayed[0]]}, headers=h)
    assert (await resp.json())["summary"] == "promoted 1", await resp.text()
    assert rclient.lrange(KEYS.delay_queue("default.p2"), 0, -1) == [mids[1].encode()]
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    resp = await client.post("/api/dead/retry", headers=h)
    body = await resp.json()
    assert body["summary"] == "retried 5 across 2 queues" and body["queues"] == {
        "default.p0": 2,
        "default.p2": 3,
    }

    def succeeded(task_id: str) -> bool:
        return bool(rclient.hget(KEYS.task(task_id), "status") == b"succeeded")

    for task_id in [*p2, *p0, delayed[0]]:
        wait_for(functools.partial(succeeded, task_id), timeout=30, what=task_id)
    assert rclient.hget(KEYS.task(gone), "status") == b"dead"
    # the other delayed message: a worker holds it (Dramatiq fetches delayed messages at once); run
    # now enqueues a copy, which runs; the held one is refused when its ETA comes
    wait_for(
        lambda: rclient.llen(KEYS.delay_queue("default.p2")) == 0, timeout=20, what="fetched by the worker"
    )
    resp = await client.post("/api/queue/default.p2/delayed/run", json={"ids": [delayed[1]]}, headers=h)
    assert (await resp.json())["summary"] == "promoted 1"
    wait_for(
        lambda: rclient.hget(KEYS.task(delayed[1]), "status") == b"succeeded", timeout=30, what="run now"
    )
    assert rclient.hget(KEYS.task(delayed[1]), "attempts") == b"1"
    rows = audit_rows(rclient)
    assert [r["action"] for r in rows] == [
        "delayed.run_now",
        "dead_letters.retry_all",
        "delayed.run_now",
        "dead_letters.bulk_delete",
    ]
    assert rows[1]["reason"] == "retried 5 across 2 queues" and rows[1]["issuer"] == "olga"


@pytest.mark.timeout(120)
async def test_add_a_task_through_the_apis_own_validation(as_role, rclient, procs, env_factory, tmp_path):
    client, csrf = await as_role("operator", sub="olga")
    h = {"X-CSRF-Token": csrf}
    types = await (await client.get("/api/task-types")).json()
    sleep = next(t for t in types["types"] if t["name"] == "sleep")
    assert (
        sleep["schema"]["properties"]["seconds"]["maximum"] == 300
        and "seconds" in sleep["schema"]["required"]
    )
    bad = await client.post(
        "/api/tasks", json={"type": "sleep", "payload": {"seconds": "soon", "x": 1}}, headers=h
    )
    error = (await bad.json())["error"]
    assert bad.status == 422
    assert {tuple(f["loc"]) for f in error["fields"]} == {
        ("body.payload", "seconds"),  # as POST /api/v1/tasks names them
        ("body.payload", "x"),
    }
    unknown = await client.post("/api/tasks", json={"type": "nope", "priority": "P9"}, headers=h)
    assert {f["loc"][1] for f in (await unknown.json())["error"]["fields"]} >= {"priority"}
    assert rclient.zcard(KEYS.tasks_all) == 0  # nothing refused was recorded
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    body = {"type": "sleep", "payload": {"seconds": 0.1}, "priority": "P1", "idempotency_key": "form-1"}
    resp = await client.post("/api/tasks", json=body, headers=h)
    added = await resp.json()
    assert resp.status == 202 and added["created"], added
    wait_for(lambda: rclient.hget(KEYS.task(added["id"]), "status") == b"succeeded", timeout=30, what="runs")
    record = await (await client.get(f"/api/tasks/{added['id']}")).json()
    assert record["submitted_by"] == "olga" and record["priority"] == "P1" and record["queue"] == "default.p1"
    replay = await client.post("/api/tasks", json=body, headers=h)
    assert replay.status == 200 and (await replay.json())["id"] == added["id"]
    clash = await client.post("/api/tasks", json={**body, "payload": {"seconds": 2}}, headers=h)
    assert clash.status == 409
    assert [r["action"] for r in audit_rows(rclient)] == ["task.submit"]
    page = await (await client.get("/tasks/new?type=sleep")).text()
    assert 'id="add-payload-errors"' in page and "&#34;seconds&#34;" in page


async def test_with_rabbitmq_delete_and_run_now_say_they_are_not_supported(
    aiohttp_client, dash_settings, rclient, token
):
    """RabbitMQ's dead-letter and delay queues cannot be browsed: the two actions that need it answer
    409 ``unsupported`` saying why (no broker is reached to say so: the lists come from Redis)."""
    from dashboard.app import create_app
    from tests.dashboard.conftest import login

    settings = dash_settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:9/"})
    assert settings.rabbitmq
    client = await aiohttp_client(create_app(settings))
    h = {"X-CSRF-Token": await login(client, token("operator"))}
    resp = await client.post(
        "/api/queue/default.p2/dead/bulk", json={"action": "delete", "ids": ["x"]}, headers=h
    )
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "unsupported" and "RabbitMQ" in error["message"], error
    resp = await client.post("/api/queue/default.p2/delayed/run", json={"ids": ["x"]}, headers=h)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "unsupported" and "ETA" in error["message"], error
    assert rclient.xlen(KEYS.audit) == 0  # refused: nothing done, nothing recorded
