"""The task API against a real Redis, without workers: validation, errors, idempotency, listing."""

from __future__ import annotations

import asyncio
import json
import time

import orjson
import pytest
from dramatiq import Message

from shared.batcher import Submitted
from shared.keys import Keys
from shared.taskstore import TaskStore

KEYS = Keys()


async def submit(api, headers, body, **kw):
    return await api.post("/api/v1/tasks", json=body, headers=headers, **kw)


async def test_submit_records_and_enqueues_a_dramatiq_message(api, auth, rclient):
    resp = await submit(api, auth(), {"type": "echo", "payload": {"a": 1}, "priority": "P1"})
    assert resp.status == 202
    body = await resp.json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"/api/v1/tasks/{body['id']}"
    assert resp.headers["Location"] == body["status_url"]
    assert resp.headers["X-Request-ID"]

    # Exactly what Dramatiq's broker would have written: a list entry and the encoded message.
    ids = rclient.lrange(KEYS.queue("default.p1"), 0, -1)
    assert len(ids) == 1
    message = Message.decode(rclient.hget(KEYS.queue_messages("default.p1"), ids[0]))
    assert message.message_id == body["id"]
    assert message.actor_name == "echo"
    assert message.queue_name == "default.p1"
    assert message.args == ({"a": 1},)
    assert message.options["redis_message_id"] == ids[0].decode()
    assert message.options["correlation_id"] == resp.headers["X-Request-ID"]

    got = await api.get(body["status_url"], headers=auth())
    record = await got.json()
    assert got.status == 200
    assert record["status"] == "queued"
    assert record["type"] == "echo"
    assert record["priority"] == "P1"
    assert record["payload"] == {"a": 1}
    assert record["attempts"] == 0
    assert record["submitted_by"] == "tester"
    assert record["created_at"].endswith("Z")
    assert "redis_message_id" not in record


async def test_default_priority_is_p2_and_request_id_is_carried(api, auth, rclient):
    resp = await submit(
        api, {**auth(), "X-Request-ID": "req-123"}, {"type": "sleep", "payload": {"seconds": 0}}
    )
    assert resp.status == 202
    assert resp.headers["X-Request-ID"] == "req-123"
    record = await (await api.get((await resp.json())["status_url"], headers=auth())).json()
    assert record["priority"] == "P2"
    assert record["queue"] == "default.p2"
    assert record["correlation_id"] == "req-123"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"type": "rm -rf", "payload": {}}, ["body", "type"]),
        ({"type": "sleep", "payload": {"seconds": 301}}, ["body.payload", "seconds"]),
        ({"type": "sleep", "payload": {"seconds": -1}}, ["body.payload", "seconds"]),
        ({"type": "sleep", "payload": {}}, ["body.payload", "seconds"]),
        ({"type": "sleep", "payload": {"seconds": 1, "extra": 1}}, ["body.payload", "extra"]),
        ({"type": "echo", "priority": "P9"}, ["body", "priority"]),
        ({"type": "echo", "surprise": 1}, ["body", "surprise"]),
        ({"payload": {}}, ["body", "type"]),
        ({"type": "echo", "payload": []}, ["body", "payload"]),
        ({"type": "echo", "idempotency_key": ""}, ["body", "idempotency_key"]),
    ],
)
async def test_validation_errors_name_the_field_and_enqueue_nothing(api, auth, rclient, body, loc):
    resp = await submit(api, auth(), body)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert error["message"]
    assert any(f["loc"][: len(loc)] == loc for f in error["fields"]), error["fields"]
    assert rclient.keys("dramatiq:*") == []
    assert rclient.keys("opsdeck:*") == []


async def test_malformed_json_is_400(api, auth):
    resp = await api.post(
        "/api/v1/tasks", data=b"{not json", headers={**auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"


async def test_non_object_body_is_422(api, auth):
    resp = await api.post(
        "/api/v1/tasks", data=b"[1]", headers={**auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"][0]["loc"] == ["body"]


async def test_wrong_content_type_is_415(api, auth):
    resp = await api.post(
        "/api/v1/tasks", data=b"type=echo", headers={**auth(), "Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_body_over_64_kib_is_413(api, auth, rclient):
    big = {"type": "echo", "payload": {"blob": "x" * (65 * 1024)}}
    resp = await api.post(
        "/api/v1/tasks", data=orjson.dumps(big), headers={**auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert rclient.keys("dramatiq:*") == []


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt"],
)
async def test_missing_or_invalid_token_is_401(api, header):
    headers = {"Authorization": header} if header else {}
    resp = await api.post("/api/v1/tasks", json={"type": "echo"}, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_token_signed_with_another_key_is_401(api):
    from shared.auth import mint

    forged = mint(b"another-secret-another-secret-another", ["admin"])
    resp = await api.get("/api/v1/tasks", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401


async def test_expired_token_is_401(api, token):
    expired = token("tasks:write", ttl=1)
    await asyncio.sleep(1.1)
    resp = await api.post(
        "/api/v1/tasks", json={"type": "echo"}, headers={"Authorization": f"Bearer {expired}"}
    )
    assert resp.status == 401
    assert "expired" in (await resp.json())["error"]["message"]


async def test_missing_scope_is_403_and_admin_has_all(api, auth):
    resp = await submit(api, auth("tasks:read"), {"type": "echo"})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert (await api.get("/api/v1/tasks", headers=auth("tasks:write"))).status == 403
    assert (await submit(api, auth("admin"), {"type": "echo"})).status == 202


async def test_unknown_task_is_404(api, auth):
    for task_id in ("00000000-0000-0000-0000-000000000000", "nope"):
        resp = await api.get(f"/api/v1/tasks/{task_id}", headers=auth())
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    resp = await api.post("/api/v1/tasks/00000000-0000-0000-0000-000000000000/cancel", headers=auth())
    assert resp.status == 404


async def test_unknown_route_and_method_are_json(api, auth):
    resp = await api.get("/api/v1/nothing", headers=auth())
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await api.delete("/api/v1/tasks", headers=auth())
    assert resp.status == 405


async def test_idempotency_key_returns_first_task_and_enqueues_once(api, auth, rclient):
    body = {"type": "echo", "payload": {"n": 1}, "idempotency_key": "order-42"}
    first = await submit(api, auth(), body)
    second = await submit(api, auth(), body)
    assert first.status == 202
    assert second.status == 200
    assert (await first.json())["id"] == (await second.json())["id"]
    assert rclient.llen(KEYS.queue("default.p2")) == 1
    # Another subject has its own key space.
    third = await submit(api, auth(sub="someone-else"), body)
    assert third.status == 202
    # Same key, different request: a conflict, not a silent replay.
    clash = await submit(api, auth(), {**body, "payload": {"n": 2}})
    assert clash.status == 409
    assert (await clash.json())["error"]["fields"][0]["loc"] == ["body", "idempotency_key"]
    assert rclient.llen(KEYS.queue("default.p2")) == 2


async def test_cancel_queued_task_removes_it_from_its_queue(api, auth, rclient):
    task_id = (await (await submit(api, auth(), {"type": "echo"})).json())["id"]
    assert rclient.llen(KEYS.queue("default.p2")) == 1
    resp = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth())
    assert resp.status == 200
    assert (await resp.json())["status"] == "canceled"
    assert rclient.llen(KEYS.queue("default.p2")) == 0
    assert rclient.hlen(KEYS.queue_messages("default.p2")) == 0
    again = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth())
    assert again.status == 200  # idempotent: canceling a canceled task changes nothing
    assert (await again.json())["status"] == "canceled"


async def test_cancel_of_running_task_is_409(api, auth, rclient):
    task_id = (await (await submit(api, auth(), {"type": "echo"})).json())["id"]
    rclient.hset(KEYS.task(task_id), "status", "running")
    resp = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth())
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "conflict"
    assert rclient.llen(KEYS.queue("default.p2")) == 1


async def test_list_filters_and_paginates_newest_first(api, auth):
    ids = []
    for i in range(7):
        kind = "echo" if i % 2 == 0 else "sleep"
        payload = {"i": i} if kind == "echo" else {"seconds": 0}
        ids.append((await (await submit(api, auth(), {"type": kind, "payload": payload})).json())["id"])
    await api.post(f"/api/v1/tasks/{ids[0]}/cancel", headers=auth())

    seen, cursor = [], None
    while True:
        url = "/api/v1/tasks?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(url, headers=auth())).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))

    echoes = await (await api.get("/api/v1/tasks?type=echo", headers=auth())).json()
    assert [t["id"] for t in echoes["items"]] == [ids[6], ids[4], ids[2], ids[0]]
    queued = await (await api.get("/api/v1/tasks?status=queued&type=echo", headers=auth())).json()
    assert [t["id"] for t in queued["items"]] == [ids[6], ids[4], ids[2]]
    canceled = await (await api.get("/api/v1/tasks?status=canceled", headers=auth())).json()
    assert [t["id"] for t in canceled["items"]] == [ids[0]]


@pytest.mark.parametrize(
    ("query", "loc"),
    [("status=bogus", ["query", "status"]), ("limit=0", ["query", "limit"]),
     ("limit=201", ["query", "limit"]),
     ("cursor=%%%", ["query", "cursor"]), ("color=red", ["query", "color"])],
)  # fmt: skip
async def test_list_query_errors_name_the_parameter(api, auth, query, loc):
    resp = await api.get(f"/api/v1/tasks?{query}", headers=auth())
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"][0]["loc"][:2] == loc


async def test_health_live_needs_no_auth_but_metrics_and_openapi_do(api, auth):
    assert (await api.get("/health/live")).status == 200
    assert (await api.get("/metrics")).status == 401
    assert (await api.get("/metrics", headers=auth("tasks:read"))).status == 403
    metrics = await api.get("/metrics", headers=auth("admin"))
    assert metrics.status == 200
    assert "opsdeck_http_request_duration_seconds" in await metrics.text()
    assert (await api.get("/openapi.json")).status == 401
    doc = await (await api.get("/openapi.json", headers=auth("tasks:read"))).json()
    assert doc["openapi"].startswith("3.")


async def test_metrics_token_is_accepted(aiohttp_client, settings):
    from coordinator.app import create_app

    client = await aiohttp_client(
        create_app(settings.model_copy(update={"metrics_token": _secret("scrape-me")}))
    )
    assert (await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})).status == 200
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401


def _secret(value):
    from pydantic import SecretStr

    return SecretStr(value)


async def test_ready_needs_a_fresh_worker_heartbeat(api, rclient):
    resp = await api.get("/health/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["components"]["redis"]["status"] == "ok"
    assert body["components"]["workers"]["status"] == "down"
    report = await (await api.get("/health")).json()
    assert report["status"] == "degraded"
    rclient.zadd(KEYS.workers, {"w1": int(time.time() * 1000)})
    assert (await api.get("/health/ready")).status == 200
    report = await (await api.get("/health")).json()
    assert report["status"] == "healthy"
    assert report["components"]["redis"]["latency_ms"] >= 0
    json.dumps(report)


async def test_a_resent_submit_batch_records_and_enqueues_once(settings, rclient):
    """The script run twice with the same batch (a resend after a lost reply) records it once."""
    import redis

    from shared.store import script_source

    client = redis.Redis.from_url(settings.effective_redis_url)
    keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
    args = [keys.task_prefix, keys.tasks_all, keys.tasks_status_prefix, keys.tasks_type_prefix,
            keys.legacy_idempotency_prefix, keys.task_events, settings.dramatiq_namespace, settings.task_ttl,
            settings.task_events_maxlen, keys.queue_wakeups, 0, 0, "", keys.tasks_ids,
            "00000000-0000-4000-8000-000000000001",
            "1000", "", "default.p2",
            "echo", "P2", "{}", "cid", "tester", "", "", "", "", ""]  # fmt: skip
    script = client.register_script(script_source("submit"))
    first, again = script(args=args), script(args=args)
    client.close()
    assert first == again == [1, b"00000000-0000-4000-8000-000000000001"]
    assert rclient.llen(KEYS.queue("default.p2")) == 1
    assert rclient.zcard(KEYS.tasks_all) == 1
    assert rclient.zrange(KEYS.tasks_ids, 0, -1, withscores=True) == [
        (b"00000000-0000-4000-8000-000000000001", 0.0)
    ]


def lose_the_first_reply(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Make the batcher's connection drop the first data it receives (and close): the replies
    in it are lost after Redis ran their batches. Returns the list the lost data lands in."""
    from shared.batcher import Replies

    deliver = Replies.data_received
    lost: list[bytes] = []

    def lose_once(self: Replies, data: bytes) -> None:
        if not lost:
            lost.append(data)
            self.close()
            return
        deliver(self, data)

    monkeypatch.setattr(Replies, "data_received", lose_once)
    return lost


async def test_a_batch_whose_reply_is_lost_is_sent_again_and_recorded_once(settings, rclient, monkeypatch):
    """The connection dies after Redis ran the batch, before its reply arrived: the batcher sends
    the batch again on a new connection, and the caller gets its task, recorded once."""
    from shared.redis import async_client
    from shared.tasks import ECHO, Priority
    from shared.taskstore import TaskStore

    lost = lose_the_first_reply(monkeypatch)
    client = async_client(settings)
    store = TaskStore(client, settings)
    submitted = await store.submit(ECHO, {"n": 1}, Priority.P2, subject="t", correlation_id="c")
    await store.aclose()
    await client.aclose()
    assert lost, "the first reply was dropped"
    assert submitted.created
    assert rclient.lrange(KEYS.queue("default.p2"), 0, -1) == [submitted.task_id.encode()]
    assert rclient.zcard(KEYS.tasks_all) == 1
    assert rclient.xlen(KEYS.task_events) == 1


def _submit_many(store: TaskStore, count: int) -> list[asyncio.Future[Submitted]]:
    """``count`` echo submissions at once (more than SEND_AT: batches go out together)."""
    from shared.tasks import ECHO, Priority

    return [store.submit(ECHO, {"n": n}, Priority.P2, subject="t", correlation_id="c") for n in range(count)]


async def test_batches_in_flight_together_are_all_sent_again_after_a_lost_connection(
    settings, rclient, monkeypatch
):
    """Two batches are in Redis when the connection dies before any reply arrived: both are
    sent again on a new connection, and every task is recorded and enqueued once."""
    from shared.batcher import MAX_INFLIGHT, SEND_AT
    from shared.redis import async_client

    lost = lose_the_first_reply(monkeypatch)
    client = async_client(settings)
    store = TaskStore(client, settings)
    count = SEND_AT * MAX_INFLIGHT + 5
    futures = _submit_many(store, count)
    assert len(store.batcher._inflight) == MAX_INFLIGHT
    submitted = await asyncio.gather(*futures)
    await store.aclose()
    await client.aclose()
    assert lost, "a reply was dropped"
    assert all(s.created for s in submitted)
    assert len({s.task_id for s in submitted}) == count
    assert rclient.llen(KEYS.queue("default.p2")) == count
    assert rclient.zcard(KEYS.tasks_all) == count
    assert rclient.xlen(KEYS.task_events) == count


async def test_batches_in_flight_when_redis_forgot_the_script_are_sent_again(settings, rclient):
    """SCRIPT FLUSH (as after a Redis restart): the batches in flight get NOSCRIPT; the script
    is loaded again and every submission still ends recorded once."""
    from shared.batcher import MAX_INFLIGHT, SEND_AT
    from shared.redis import async_client
    from shared.taskstore import TaskStore

    client = async_client(settings)
    store = TaskStore(client, settings)
    first = await asyncio.gather(*_submit_many(store, 3))  # the script is loaded and in use
    rclient.script_flush()
    count = SEND_AT * MAX_INFLIGHT + 5
    submitted = await asyncio.gather(*_submit_many(store, count))
    await store.aclose()
    await client.aclose()
    assert all(s.created for s in [*first, *submitted])
    assert rclient.llen(KEYS.queue("default.p2")) == count + 3
    assert rclient.zcard(KEYS.tasks_all) == count + 3


async def test_a_silent_redis_fails_every_batch_in_flight_within_the_deadline(settings, rclient):
    """Redis stops answering (CLIENT PAUSE) with batches in flight: each submission fails
    with a timeout once the deadline passes, none hangs, and the next call works again."""
    from shared.batcher import MAX_INFLIGHT, SEND_AT
    from shared.redis import async_client
    from shared.taskstore import TaskStore

    quick = settings.model_copy(update={"redis_timeout": 0.5})
    client = async_client(quick)
    store = TaskStore(client, quick)
    await asyncio.gather(*_submit_many(store, 1))
    rclient.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    outcomes = await asyncio.gather(*_submit_many(store, SEND_AT * MAX_INFLIGHT + 5), return_exceptions=True)
    assert outcomes and all(isinstance(o, TimeoutError) for o in outcomes)
    await asyncio.sleep(1.2)  # the pause ends
    again = await asyncio.gather(*_submit_many(store, 2))
    await store.aclose()
    await client.aclose()
    assert all(s.created for s in again)


async def test_the_enqueued_message_is_what_dramatiq_would_write_for_any_values(settings, rclient):
    """submit.lua assembles the Dramatiq message from its parts: a correlation id with quotes,
    backslashes and non-ASCII, and a payload of every JSON kind, still decode to the same values."""
    from shared.redis import async_client
    from shared.tasks import ECHO, Priority
    from shared.taskstore import TaskStore

    payload = {"s": 'q"uo\\te ✓', "n": -1.5e300, "i": 2**63 - 1, "b": False, "z": None, "l": [{}, []]}
    cid = 'odd "id" \\ ✓\n'
    client = async_client(settings)
    store = TaskStore(client, settings)
    submitted = await store.submit(ECHO, payload, Priority.P0, subject="sübject", correlation_id=cid)
    record = await store.get(submitted.task_id)
    await store.aclose()
    await client.aclose()
    message = Message.decode(rclient.hget(KEYS.queue_messages("default.p0"), submitted.task_id))
    assert message.args == (payload,)
    assert message.options == {"redis_message_id": submitted.task_id, "correlation_id": cid, "priority": "P0"}
    assert (message.message_id, message.actor_name, message.queue_name) == (
        submitted.task_id,
        "echo",
        "default.p0",
    )
    assert abs(message.message_timestamp - time.time() * 1000) < 60_000
    assert record["payload"] == payload
    assert record["correlation_id"] == cid
    assert record["submitted_by"] == "sübject"
