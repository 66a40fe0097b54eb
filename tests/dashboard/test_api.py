"""Dashboard JSON API against a real Redis: queues, dead letters, tasks, history, audit."""

from __future__ import annotations

import time

import orjson

from shared.tasks import ECHO, FAIL, Priority
from shared.taskstore import TaskStore
from tests.dashboard.conftest import KEYS, fake_heartbeat


async def submit(settings, n=1, task_type=ECHO, payload=None, priority=Priority.P2):
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.effective_redis_url)
    store = TaskStore(client, settings)
    ids = [
        (
            await store.submit(task_type, payload or {"i": i}, priority, subject="t", correlation_id="c")
        ).task_id
        for i in range(n)
    ]
    await store.aclose()
    await client.aclose()
    return ids


def kill(rclient, task_id, queue="default.p2", error="RequestedFailure: boom", redis_id=None):
    """Make a queued task dead as Dramatiq + the task store would (message moved to .XQ). After a
    retry Dramatiq's Redis message id is a new one (``redis_id``), not the task id."""
    raw = rclient.hget(KEYS.queue_messages(queue), task_id)
    msg = orjson.loads(raw)
    msg["options"].update(retries=2, traceback="Traceback ...\nRequestedFailure: boom")
    redis_id = redis_id or task_id
    msg["options"]["redis_message_id"] = redis_id
    rclient.lrem(KEYS.queue(queue), 1, task_id)
    rclient.hdel(KEYS.queue_messages(queue), task_id)
    rclient.zadd(KEYS.dead_letters(queue), {redis_id: int(time.time() * 1000)})
    rclient.hset(KEYS.dead_letter_messages(queue), redis_id, orjson.dumps(msg))
    rclient.hset(KEYS.task(task_id), mapping={"status": "dead", "error": error})
    rclient.zrem(KEYS.tasks_by_status("queued"), task_id)
    rclient.zadd(KEYS.tasks_by_status("dead"), {task_id: 1})


async def test_queue_stats_pause_resume_purge(as_role, dash_settings, rclient):
    ids = await submit(dash_settings, 3)
    client, csrf = await as_role("operator", sub="bob")
    h = {"X-CSRF-Token": csrf}
    rows = {q["name"]: q for q in (await (await client.get("/api/queue/stats")).json())["queues"]}
    assert rows["default.p2"]["ready"] == 3 and rows["default.p2"]["priority"] == "P2"
    assert rows["default.p0"]["ready"] == 0
    assert (await client.post("/api/queue/nope/pause", headers=h)).status == 404
    assert (await (await client.post("/api/queue/default.p2/pause", headers=h)).json())["paused"] is True
    rows = {q["name"]: q for q in (await (await client.get("/api/queue/stats")).json())["queues"]}
    assert rows["default.p2"]["paused"]
    await client.post("/api/queue/default.p2/resume", headers=h)
    assert not rclient.sismember(KEYS.paused_queues, "default.p2")
    # purge needs the queue's name repeated
    assert (await client.post("/api/queue/default.p2/purge", json={}, headers=h)).status == 422
    wrong = await client.post("/api/queue/default.p2/purge", json={"confirm": "default.p1"}, headers=h)
    assert wrong.status == 422 and rclient.llen(KEYS.queue("default.p2")) == 3
    resp = await client.post("/api/queue/default.p2/purge", json={"confirm": "default.p2"}, headers=h)
    assert (await resp.json())["purged"] == 3
    assert (
        rclient.llen(KEYS.queue("default.p2")) == 0 and rclient.hlen(KEYS.queue_messages("default.p2")) == 0
    )
    assert rclient.hget(KEYS.task(ids[0]), "status") == b"canceled"
    audit = (await (await client.get("/api/audit")).json())["entries"]
    assert [e["action"] for e in audit] == ["queue.purge", "queue.resume", "queue.pause"]
    assert audit[0]["issuer"] == "bob" and audit[0]["reason"] == "3 dropped"


async def test_a_retried_tasks_dead_letter_links_to_its_task_and_shows_its_error(
    as_role, dash_settings, rclient
):
    """Dramatiq gives a message a new Redis id on every enqueue (a retry): the dead-letter table
    must link the task by its id (the Redis id 404s on the task page), show the record's error and
    still retry by the Redis id."""
    [task_id] = await submit(dash_settings, 1, FAIL, {"message": "boom"})
    kill(rclient, task_id, redis_id="0f0f0f0f-dead-4bee-8000-000000000001", error="RequestedFailure: boom 42")
    client, csrf = await as_role("admin")
    detail = await (await client.get("/api/queue/default.p2")).json()
    [letter] = detail["dead_letters"]
    assert letter["id"] == task_id and letter["message_id"] == "0f0f0f0f-dead-4bee-8000-000000000001"
    assert letter["error"] == "RequestedFailure: boom 42"
    page = await (await client.get("/queues/default.p2")).text()
    assert f'href="/tasks/{task_id}"' in page and "RequestedFailure: boom 42" in page
    assert (await client.get(f"/tasks/{task_id}")).status == 200
    retry = f"/api/queue/default.p2/dead/{letter['message_id']}/retry"
    assert f'data-post="{retry}"' in page
    resp = await client.post(retry, headers={"X-CSRF-Token": csrf})
    assert (await resp.json())["requeued"] == 1


async def test_dead_letters_listed_and_retried_one_and_all(as_role, dash_settings, rclient):
    ids = await submit(dash_settings, 3, FAIL, {"message": "boom"})
    for i in ids:
        kill(rclient, i)
    client, csrf = await as_role("admin")
    h = {"X-CSRF-Token": csrf}
    detail = await (await client.get("/api/queue/default.p2")).json()
    assert detail["dead"] == 3 and {d["id"] for d in detail["dead_letters"]} == set(ids)
    assert (
        detail["dead_letters"][0]["actor"] == "fail"
        and "RequestedFailure" in detail["dead_letters"][0]["traceback"]
    )
    page = await (await client.get("/queues/default.p2")).text()
    assert ids[0] in page and "Retry all dead letters" in page
    resp = await client.post(f"/api/queue/default.p2/dead/{ids[0]}/retry", headers=h)
    assert (await resp.json())["requeued"] == 1
    again = await client.post(f"/api/queue/default.p2/dead/{ids[0]}/retry", headers=h)
    assert again.status == 404  # already requeued: no double enqueue
    assert rclient.lrange(KEYS.queue("default.p2"), 0, -1) == [ids[0].encode()]
    msg = orjson.loads(rclient.hget(KEYS.queue_messages("default.p2"), ids[0]))
    assert msg["options"]["retries"] == 0 and "traceback" not in msg["options"]
    assert rclient.hget(KEYS.task(ids[0]), "status") == b"queued"
    resp = await client.post("/api/queue/default.p2/dead/retry", headers=h)
    assert (await resp.json())["requeued"] == 2
    assert rclient.zcard(KEYS.dead_letters("default.p2")) == 0 and rclient.llen(KEYS.queue("default.p2")) == 3
    timeline = (await (await client.get(f"/api/tasks/{ids[1]}")).json())["timeline"]
    assert [e["status"] for e in timeline] == ["queued", "queued"]


async def test_task_search_filters_and_pages(as_role, dash_settings):
    p2 = await submit(dash_settings, 5)
    p0 = await submit(dash_settings, 2, priority=Priority.P0)
    fails = await submit(dash_settings, 1, FAIL, {"message": "x"})
    client, _ = await as_role("viewer")
    page = await (await client.get("/api/tasks?limit=3")).json()
    assert [t["id"] for t in page["items"]] == [fails[0], p0[1], p0[0]]
    seen = [t["id"] for t in page["items"]]
    while page["next_cursor"]:
        page = await (await client.get(f"/api/tasks?limit=3&cursor={page['next_cursor']}")).json()
        seen += [t["id"] for t in page["items"]]
    assert seen == list(reversed(p2 + p0 + fails))
    got = await (await client.get("/api/tasks?priority=P0")).json()
    assert {t["id"] for t in got["items"]} == set(p0)
    got = await (await client.get("/api/tasks?type=fail&status=queued")).json()
    assert [t["id"] for t in got["items"]] == fails
    got = await (await client.get("/api/tasks?until=2000-01-01T00:00:00Z")).json()
    assert got["items"] == []
    got = await (
        await client.get("/api/tasks?since=2000-01-01T00:00:00Z&type=echo&priority=P2&limit=2")
    ).json()
    assert [t["id"] for t in got["items"]] == [p2[4], p2[3]] and got["next_cursor"]
    html = await (await client.get("/tasks?priority=P0")).text()
    assert p0[0][:8] in html and p2[0][:8] not in html
    redirect = await client.get(f"/tasks?id={p0[0]}", allow_redirects=False)
    assert redirect.headers["Location"] == f"/tasks/{p0[0]}"


async def test_task_detail_retry_exact_and_edited_and_cancel(as_role, dash_settings, rclient):
    (task_id,) = await submit(dash_settings, 1, FAIL, {"message": "first"})
    kill(rclient, task_id)
    client, csrf = await as_role("operator", sub="carol")
    h = {"X-CSRF-Token": csrf}
    detail = await (await client.get(f"/api/tasks/{task_id}")).json()
    assert detail["payload"] == {"message": "first"} and detail["timeline"][0]["status"] == "queued"
    assert (await client.get("/api/tasks/nope")).status == 404
    resp = await client.post(f"/api/tasks/{task_id}/retry", headers=h)
    assert resp.status == 202
    replay = (await resp.json())["id"]
    record = await (await client.get(f"/api/tasks/{replay}")).json()
    assert (
        record["payload"] == {"message": "first"}
        and record["type"] == "fail"
        and record["submitted_by"] == "carol"
    )
    bad = await client.post(
        f"/api/tasks/{task_id}/retry", json={"payload": {"message": 5, "x": 1}}, headers=h
    )
    assert bad.status == 422 and (await bad.json())["error"]["fields"]
    resp = await client.post(
        f"/api/tasks/{task_id}/retry", json={"payload": {"message": "edited"}}, headers=h
    )
    edited = (await resp.json())["id"]
    assert (await (await client.get(f"/api/tasks/{edited}")).json())["payload"] == {"message": "edited"}
    resp = await client.post(f"/api/tasks/{edited}/cancel", headers=h)
    assert resp.status == 200 and (await resp.json())["status"] == "canceled"
    assert (await client.post(f"/api/tasks/{edited}/cancel", headers=h)).status == 200
    assert (await client.post(f"/api/tasks/{task_id}/cancel", headers=h)).status == 409  # dead
    actions = [e["action"] for e in (await (await client.get("/api/audit")).json())["entries"]]
    assert actions[:3] == ["task.cancel", "task.cancel", "task.retry"]


async def test_failures_grouped_by_exception_type(as_role, dash_settings, rclient):
    ids = await submit(dash_settings, 4, FAIL, {"message": "x"})
    for i in ids[:3]:
        kill(rclient, i, error="RequestedFailure: boom")
    kill(rclient, ids[3], error="ValueError: bad")
    client, _ = await as_role("viewer")
    groups = (await (await client.get("/api/tasks/failures")).json())["groups"]
    assert [(g["exception"], g["count"]) for g in groups] == [("RequestedFailure", 3), ("ValueError", 1)]
    assert groups[0]["types"] == ["fail"]
    assert "RequestedFailure" in await (await client.get("/tasks")).text()


async def test_metrics_history_from_per_minute_rollups(as_role, rclient):
    minute = int(time.time() // 60)
    rclient.hset(
        KEYS.stats_minute(minute),
        mapping={"processed": 10, "failed": 1, "duration_ms_sum": 50, "duration_count": 10, "tasks": 9},
    )
    rclient.hset(KEYS.stats_minute(minute - 30), mapping={"processed": 4, "failed": 4})
    rclient.hset(KEYS.stats_minute(minute - 2000), mapping={"processed": 7})
    client, _ = await as_role("viewer")
    for rng, points, total in (("15m", 15, 10), ("1h", 60, 14), ("24h", 144, 14), ("7d", 168, 21)):
        data = await (await client.get(f"/api/metrics/history?range={rng}")).json()
        assert len(data["points"]) == points and data["totals"]["processed"] == total, rng
    last = (await (await client.get("/api/metrics/history?range=15m")).json())["points"][-1]
    assert last == {
        "t": minute * 60,
        "processed": 10,
        "failed": 1,
        "retried": 0,
        "tasks": 9,
        "tasks_failed": 0,
        "error_rate": 0.0,  # over tasks: the failed attempt was retried and the task succeeded
        "attempt_error_rate": 0.1,
        "avg_ms": 5.0,
        "p50_ms": None,  # (no histogram in this minute)
        "p95_ms": None,
    }


async def test_worker_status_detail_and_commands(as_role, rclient):
    fake_heartbeat(rclient, "w1")
    rclient.zadd(KEYS.workers, {"gone": 1000})
    client, csrf = await as_role("operator", sub="dave")
    workers = {w["id"]: w for w in (await (await client.get("/api/worker/status")).json())["workers"]}
    assert workers["w1"]["cpu_percent"] == 12.5 and workers["gone"]["state"] == "down"
    h = {"X-CSRF-Token": csrf}
    assert (await client.post("/api/worker/nobody/restart", headers=h)).status == 404
    assert (await client.post("/api/worker/w1/explode", headers=h)).status == 404
    assert (await client.post("/api/worker/w1/scale", json={"processes": 99}, headers=h)).status == 422
    resp = await client.post("/api/worker/w1/scale", json={"processes": 3}, headers=h)
    assert resp.status == 202
    cid = (await resp.json())["command_id"]
    reply = await (await client.get(f"/api/commands/{cid}")).json()
    assert reply["status"] == "pending" and reply["issuer"] == "dave" and reply["processes"] == 3
    one = await client.post("/api/worker/w1/pause", headers={**h, "Idempotency-Key": "k1"})
    two = await client.post("/api/worker/w1/pause", headers={**h, "Idempotency-Key": "k1"})
    assert (await one.json())["command_id"] == (await two.json())["command_id"]
    detail = await (await client.get("/api/worker/w1")).json()
    assert [c["action"] for c in detail["commands"]] == ["pause", "scale"]
    assert detail["desired"] == {"state": "paused", "processes": "3"}
    page = await (await client.get("/workers/w1")).text()
    assert "scale" in page and "dave" in page
    assert "worker w1" in await (await client.get("/audit")).text()


async def test_the_login_page_footer_names_the_version(dash):
    from shared import __version__

    page = await (await dash.get("/login")).text()
    assert f"Opsdeck v{__version__}</footer>" in page and __version__
