"""A retried dead letter runs again, end to end: real worker agent, real dashboard, real Redis.

Found by an operator: after Dramatiq's own retries, a dead letter's Redis message id is not the
task id (each re-enqueue gets a new one), so the retry script marked no record queued, the worker
skipped the requeued message ("task is dead") and the endpoint still answered ``requeued: 1``.

Both transports. On RabbitMQ the ``.XQ`` cannot be browsed: the dashboard lists and retries the
dead letters from the task records (ids are task ids) and the retry puts the rebuilt message into
the outbox (shared/transport/rabbit_admin.py)."""

from __future__ import annotations

import asyncio

import pytest

from dashboard.app import create_app as create_dashboard
from tests.conftest import BROKERS
from tests.dashboard.conftest import login
from tests.helpers import task_fields, wait_for
from tests.worker.test_end_to_end import KEYS, start_agent, wait_running, wait_status

pytestmark = pytest.mark.slow


def events_of(rclient, task_id: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in rclient.xrange(KEYS.task_events)
        if fields[b"id"].decode() == task_id
    ]


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_retried_dead_letter_runs_again_as_a_new_attempt_series(
    procs, env_factory, tmp_path, rclient, api, auth, aiohttp_client, settings, token, broker_url
):
    start_agent(procs, env_factory, tmp_path, TASK_MAX_RETRIES=1)
    wait_running(rclient, "agent")
    body = {"type": "fail", "payload": {"message": "x"}}
    reply = await api.post("/api/v1/tasks", json=body, headers=auth())
    assert reply.status == 202, await reply.text()
    task_id = (await reply.json())["id"]
    # waits in a thread: with RabbitMQ the in-process coordinator's outbox relay runs on this loop
    await asyncio.to_thread(wait_status, rclient, task_id, "dead")
    assert task_fields(rclient, KEYS, task_id)["attempts"] == "2"

    dash = await aiohttp_client(create_dashboard(settings))
    csrf = await login(dash, token("operator", sub="olga"))
    detail = await (await dash.get("/api/queue/default.p2")).json()
    # "retries" is Dramatiq's retry count of the message that died (two attempts: one retry), the
    # same number on both transports
    assert [d["retries"] for d in detail["dead_letters"]] == [1], detail
    if broker_url is None:  # Dramatiq's dead-letter set, counted
        assert detail["dead"] == 1
    else:  # the dead letter is the task's record (its id the task id); without the management
        # API RabbitMQ tells ready counts only, so the dead column is unknown (None, shown "?")
        assert detail["dead_letters"][0]["id"] == task_id
        assert detail["counts"] == "ready-only" and detail["dead"] is None
    resp = await dash.post("/api/queue/default.p2/dead/retry", headers={"X-CSRF-Token": csrf})
    assert resp.status == 200 and (await resp.json())["requeued"] == 1

    # it runs again: two more attempts (a fresh retry budget), dead again, with the retry on its timeline
    await asyncio.to_thread(
        wait_for, lambda: task_fields(rclient, KEYS, task_id).get("attempts") == "4", what="two more attempts"
    )
    record = await asyncio.to_thread(wait_status, rclient, task_id, "dead")
    assert record["attempts"] == "4", record
    events = events_of(rclient, task_id)
    statuses = [e["status"] for e in events]
    assert statuses == ["queued", "running", "retrying", "running", "dead",
                        "queued", "running", "retrying", "running", "dead"], statuses  # fmt: skip
    retried = events[5]
    assert retried.get("by") == "olga" and "dead letter" in retried.get("note", "")
    # listed as a dead letter again, of its second series (one retry again, not four attempts)
    for _ in range(100):
        again = (await (await dash.get("/api/queue/default.p2")).json())["dead_letters"]
        if again:
            break
        await asyncio.sleep(0.05)
    assert [d["retries"] for d in again] == [1], again


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_dead_letter_of_a_task_that_already_ended_otherwise_is_refused(
    as_role_dash, rclient, api, auth, broker_url
):
    """Retrying a dead letter whose task has since succeeded would be skipped by the worker:
    the endpoint refuses it with the reason instead of reporting a requeue."""
    client, csrf, queue, task_id, message_id = as_role_dash
    if broker_url is not None:
        # RabbitMQ: dead letters are read from the task records, so a task that succeeded since
        # is not listed (the bulk retry has nothing to requeue or refuse); retrying it by its id
        # (the dead letter's id there) is refused with the reason and changes nothing.
        resp = await client.post(f"/api/queue/{queue}/dead/{task_id}/retry", headers={"X-CSRF-Token": csrf})
        assert resp.status == 409, await resp.text()
        assert "succeeded" in (await resp.json())["error"]["message"]
        bulk = await client.post(f"/api/queue/{queue}/dead/retry", headers={"X-CSRF-Token": csrf})
        assert await bulk.json() == {"queue": queue, "requeued": 0, "refused": []}
        assert task_fields(rclient, KEYS, task_id)["status"] == "succeeded"
        assert [e["status"] for e in events_of(rclient, task_id)] == ["queued"]  # no retry recorded
        return
    resp = await client.post(f"/api/queue/{queue}/dead/{message_id}/retry", headers={"X-CSRF-Token": csrf})
    assert resp.status == 409, await resp.text()
    error = (await resp.json())["error"]
    assert "succeeded" in error["message"]
    bulk = await client.post(f"/api/queue/{queue}/dead/retry", headers={"X-CSRF-Token": csrf})
    body = await bulk.json()
    assert body["requeued"] == 0 and body["refused"] == [
        {"id": message_id, "task_id": task_id, "reason": "task already succeeded"}
    ]
    assert rclient.zcard(KEYS.dead_letters(queue)) == 1  # left where it was


@pytest.fixture
async def as_role_dash(aiohttp_client, settings, token, rclient, api, auth, broker_url):
    """A logged-in dashboard client and a dead letter (its own Redis message id) of a task that
    has succeeded since (on RabbitMQ: a task that has succeeded since; its id is the dead letter's)."""
    import orjson

    reply = await api.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
    task_id = (await reply.json())["id"]
    queue = "default.p2"
    if broker_url is not None:  # no agent: the message waits in RabbitMQ (or the outbox)
        rclient.hset(KEYS.task(task_id), "status", "succeeded")
        client = await aiohttp_client(create_dashboard(settings))
        csrf = await login(client, token("operator", sub="olga"))
        return client, csrf, queue, task_id, task_id
    raw = rclient.hget(KEYS.queue_messages(queue), task_id)
    msg = orjson.loads(raw)
    message_id = "0b0b0b0b-redis-message-id"
    msg["options"].update(retries=2, redis_message_id=message_id)
    rclient.lrem(KEYS.queue(queue), 1, task_id)
    rclient.hdel(KEYS.queue_messages(queue), task_id)
    rclient.zadd(KEYS.dead_letters(queue), {message_id: 1})
    rclient.hset(KEYS.dead_letter_messages(queue), message_id, orjson.dumps(msg))
    rclient.hset(KEYS.task(task_id), "status", "succeeded")
    client = await aiohttp_client(create_dashboard(settings))
    csrf = await login(client, token("operator", sub="olga"))
    return client, csrf, queue, task_id, message_id
