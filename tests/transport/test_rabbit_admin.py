"""The RabbitMQ transport's queue admin and upkeep (shared/transport/rabbit_admin.py) against a real
RabbitMQ node (tests/rabbitmq.py: a fresh vhost per test) and the real test Redis.

Task records are written by the real submit script with an outbox (as the coordinator does with
``BROKER_URL=amqp://...``), so the outbox entry it writes is the reference for the message a
dead-letter retry must rebuild."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import orjson
import pika
import pytest
import redis
import redis.asyncio as aioredis

from shared.errors import Unavailable
from shared.keys import Keys
from shared.settings import Settings
from shared.store import script_source as store_script
from shared.transport.rabbit_admin import COUNTS_ALL, COUNTS_READY_ONLY, RabbitQueueAdmin, RabbitUpkeep
from shared.transport.rabbitmq import declared_queues
from tests.rabbitmq import RabbitNode, free_ports

QUEUE, OTHER = "default.p2", "default.p1"
DQ, XQ = f"{QUEUE}.DQ", f"{QUEUE}.XQ"
MAXLEN = 1000


# -- fixtures and helpers ------------------------------------------------------------------------------
@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.key_prefix, settings.dramatiq_namespace)


@pytest.fixture
def management(rabbit: RabbitNode, rabbit_management_url: str) -> str:
    """The management URL with its credentials in it, as ``RABBITMQ_MANAGEMENT_URL`` holds them."""
    parts = urlsplit(rabbit_management_url)
    return urlunsplit(parts._replace(netloc=f"{rabbit.user}:{rabbit.password}@{parts.netloc}"))


@pytest.fixture
def channel(rabbit_url: str) -> Iterator[Any]:
    """A pika channel on the test's vhost, with QUEUE and OTHER declared as Dramatiq declares them."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    ch = connection.channel()
    for queue in (QUEUE, OTHER):
        for name, arguments in declared_queues(queue, "quorum"):
            ch.queue_declare(name, durable=True, arguments=arguments)
    ch.confirm_delivery()
    yield ch
    connection.close()


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_admin(
    aclient: aioredis.Redis, keys: Keys, rabbit_url: str
) -> AsyncIterator[Callable[..., RabbitQueueAdmin]]:
    made: list[RabbitQueueAdmin] = []

    def make(management_url: str | None = None, urls: list[str] | None = None) -> RabbitQueueAdmin:
        admin = RabbitQueueAdmin(
            aclient, keys, MAXLEN, urls=urls or [rabbit_url], management_url=management_url
        )
        made.append(admin)
        return admin

    yield make
    for admin in made:
        await admin.aclose()


def publish(channel: Any, queue: str, body: bytes) -> None:
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def submit(rclient: redis.Redis, keys: Keys, queue: str = QUEUE, n: int = 1, **payload: Any) -> list[str]:
    """Record ``n`` echo tasks on ``queue`` with the real submit script, its outbox on; returns the
    ids (their messages are in the outbox, in order)."""
    header = [keys.task_prefix, keys.tasks_all, keys.tasks_status_prefix, keys.tasks_type_prefix,
              keys.legacy_idempotency_prefix, keys.task_events, "dramatiq", 3600, MAXLEN, keys.queue_wakeups,
              0, 0, keys.outbox, keys.tasks_ids]  # fmt: skip
    ids = [f"task-{time.time_ns()}-{i}" for i in range(n)]
    args: list[Any] = list(header)
    for i, task_id in enumerate(ids):
        body = orjson.dumps({"n": i, **payload}).decode()
        priority = queue.rsplit(".", 1)[1].upper()
        args += [task_id, time.time_ns() // 1000 + i, "", queue, "echo", priority, body, "cid/" + task_id,
                 "alice", "", "", "", "", ""]  # fmt: skip
    reply = rclient.eval(store_script("submit"), 0, *args)
    assert reply == [x for task_id in ids for x in (1, task_id.encode())], reply
    return ids


def outbox(rclient: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in rclient.xrange(keys.outbox)]


def end(rclient: redis.Redis, keys: Keys, task_id: str, status: str, at_ms: int, **fields: Any) -> None:
    """End a task as the worker's finish script does (status, index, finished_at, round)."""
    old = rclient.hget(keys.task(task_id), "status").decode()
    created = int(rclient.hget(keys.task(task_id), "created_us"))
    rclient.zrem(keys.tasks_by_status(old), task_id)
    rclient.zadd(keys.tasks_by_status(status), {task_id: created})
    values = {"status": status, "updated_at": at_ms, "round": 2, "attempts": 3, **fields}
    if status != "retrying":
        values["finished_at"] = at_ms
    rclient.hset(keys.task(task_id), mapping=values)


def events_of(rclient: redis.Redis, keys: Keys, task_id: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in f.items()}
        for _, f in rclient.xrange(keys.task_events)
        if f[b"id"] == task_id.encode()
    ]


async def eventually(read: Callable[[], Any], check: Callable[[Any], bool], within: float = 20.0) -> Any:
    """``read()`` until ``check`` holds (the management API refreshes its figures every 5 s)."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if check(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.25)


# -- counters ------------------------------------------------------------------------------------------
@pytest.mark.slow  # waits for the management API's next figures (up to 5 s)
async def test_stats_from_the_management_api(make_admin, management, channel):
    for i in range(3):
        publish(channel, QUEUE, b'{"n": %d}' % i)
    for name, count in ((DQ, 2), (XQ, 1), (OTHER, 1)):
        for _ in range(count):
            publish(channel, name, b"{}")
    held = channel.basic_get(QUEUE, auto_ack=False)  # delivered, not acked: in progress
    assert held[0] is not None
    admin = make_admin(management)
    assert admin.stats_commands(object(), [QUEUE]) == 0
    queues = [QUEUE, OTHER, "never.p3"]
    want = {
        QUEUE: {"ready": 2, "in_progress": 1, "delayed": 2, "dead": 1},
        OTHER: {"ready": 1, "in_progress": 0, "delayed": 0, "dead": 0},
        "never.p3": {"ready": 0, "in_progress": 0, "delayed": 0, "dead": 0},
    }

    def counts(rows):
        return {r["name"]: {k: r[k] for k in ("ready", "in_progress", "delayed", "dead")} for r in rows}

    rows = await eventually(lambda: admin.stats(queues, {OTHER}), lambda rows: counts(rows) == want)
    assert counts(rows) == want
    row = rows[0]
    assert row["priority"] == "P2" and row["paused"] is False and row["counts"] == COUNTS_ALL
    assert rows[1]["paused"] is True
    assert [r["name"] for r in await admin.stats_from([], queues, set())] == queues


async def test_stats_without_management_are_ready_counts_by_passive_declare(make_admin, channel):
    for i in range(3):
        publish(channel, QUEUE, b'{"n": %d}' % i)
    publish(channel, DQ, b"{}")
    admin = make_admin()
    rows = await admin.stats([QUEUE, "never.p3"], set())
    assert rows[0] == {
        "name": QUEUE, "priority": "P2", "ready": 3, "in_progress": None, "delayed": None, "dead": None,
        "paused": False, "counts": COUNTS_READY_ONLY,
    }  # fmt: skip
    assert rows[1]["ready"] == 0 and rows[1]["counts"] == COUNTS_READY_ONLY  # not declared yet: 0
    # the kept connection serves the next call, also after a missing queue closed its channel
    assert [r["ready"] for r in await admin.stats(["never.p3", QUEUE], set())] == [0, 3]
    await admin._connection.close()  # lost (a broker restart): the next call connects again
    assert (await admin.stats([QUEUE], set()))[0]["ready"] == 3


async def test_an_unreachable_broker_is_unavailable(make_admin):
    port, http_port = free_ports(2)
    admin = make_admin(urls=[f"amqp://guest:guest@127.0.0.1:{port}/"])
    with pytest.raises(Unavailable, match="RabbitMQ cannot be reached"):
        await admin.stats([QUEUE], set())
    with pytest.raises(Unavailable):
        await admin.purge(QUEUE)
    via_http = make_admin(f"http://u:secret@127.0.0.1:{http_port}")
    with pytest.raises(Unavailable, match="management API") as caught:
        await via_http.stats([QUEUE], set())
    assert "secret" not in str(caught.value)
    upkeep = RabbitUpkeep([f"amqp://guest:guest@127.0.0.1:{port}/"], timeout=1)
    with pytest.raises(Unavailable, match="queue depths"):
        upkeep.depths([QUEUE])


async def test_wrong_management_credentials_are_unavailable_with_the_status(
    make_admin, rabbit_management_url
):
    parts = urlsplit(rabbit_management_url)
    admin = make_admin(urlunsplit(parts._replace(netloc=f"nobody:wrong@{parts.netloc}")))
    with pytest.raises(Unavailable, match="answered 401"):
        await admin.stats([QUEUE], set())


# -- dead letters and delayed messages, from the records ---------------------------------------------
async def test_dead_letters_are_the_dead_and_failed_tasks_of_the_queue_newest_first(
    make_admin, rclient, keys
):
    ids = submit(rclient, keys, n=4, note="x")
    (other,) = submit(rclient, keys, OTHER)
    end(
        rclient,
        keys,
        ids[0],
        "dead",
        1_000,
        error="RuntimeError: boom",
        traceback="Traceback...\nRuntimeError: boom",
    )
    end(rclient, keys, ids[1], "dead", 3_000, error="ValueError: no traceback kept")
    end(rclient, keys, ids[2], "failed", 2_000, error="Refused: thrown", traceback="T" * 20_000)
    end(rclient, keys, ids[3], "succeeded", 4_000)
    end(rclient, keys, other, "dead", 5_000, error="elsewhere")
    admin = make_admin()
    rows = await admin.dead_letters(QUEUE, 10)
    assert [r["id"] for r in rows] == [ids[1], ids[2], ids[0]]
    first = rows[0]
    assert first == {
        "id": ids[1], "actor": "echo", "dead_at": 3_000, "retries": 2,
        "traceback": "ValueError: no traceback kept", "args": [{"n": 1, "note": "x"}], "status": "dead",
    }  # fmt: skip
    assert rows[2]["traceback"].endswith("RuntimeError: boom")
    assert rows[1]["status"] == "failed" and len(rows[1]["traceback"]) == 16 * 1024
    assert [r["id"] for r in await admin.dead_letters(QUEUE, 1)] == [ids[1]]
    assert await admin.dead_letters("never.p3", 10) == []


async def test_delayed_messages_are_parked_delays_and_retrying_tasks(make_admin, rclient, keys):
    soon, later = submit(rclient, keys, n=2)
    (other,) = submit(rclient, keys, OTHER)
    for task_id in (soon, later, other):
        end(rclient, keys, task_id, "retrying", 1_000)
    entries = [m["m"] for m in outbox(rclient, keys)]
    parked = orjson.loads(entries[0])
    parked.update(queue_name=DQ, options={**parked["options"], "eta": 9_999_000, "retries": 3})
    foreign = orjson.loads(entries[2])
    foreign.update(queue_name=f"{OTHER}.DQ", options={**foreign["options"], "eta": 1})
    for message, score in ((parked, 9_000_000), (foreign, 1)):
        rclient.zadd(
            keys.outbox_scheduled,
            {orjson.dumps({"q": message["queue_name"], "m": orjson.dumps(message).decode()}): score},
        )
    rows = await make_admin().delayed_messages(QUEUE, 10)
    assert rows == [
        {"id": soon, "actor": "echo", "eta": 9_999_000, "retries": 3, "held": "redis"},
        {"id": later, "actor": "echo", "eta": None, "retries": 3, "held": "rabbitmq"},
    ]
    assert len(await make_admin().delayed_messages(QUEUE, 1)) == 1


# -- retry ---------------------------------------------------------------------------------------------
async def test_a_retried_dead_letter_is_queued_with_its_message_in_the_outbox(make_admin, rclient, keys):
    (task_id,) = submit(rclient, keys, note="retry me")
    submitted = outbox(rclient, keys)[0]
    rclient.delete(keys.outbox)
    end(rclient, keys, task_id, "dead", 1_000, error="RuntimeError: boom")
    admin = make_admin()
    outcome = await admin.retry_dead_letters(QUEUE, [task_id], by="olga")
    assert (outcome.requeued, outcome.refused) == (1, [])

    record = {k.decode(): v.decode() for k, v in rclient.hgetall(keys.task(task_id)).items()}
    assert record["status"] == "queued" and "finished_at" not in record and "round" not in record
    assert rclient.zscore(keys.tasks_by_status("queued"), task_id) == int(record["created_us"])
    assert rclient.zscore(keys.tasks_by_status("dead"), task_id) is None
    event = events_of(rclient, keys, task_id)[-1]
    assert event["status"] == "queued" and event["by"] == "olga" and event["note"] == "dead letter retried"

    (entry,) = outbox(rclient, keys)
    assert entry == submitted  # the same bytes the submit script wrote: q and m
    message = dramatiq.Message.decode(entry["m"].encode())
    assert message.message_id == task_id and message.queue_name == QUEUE and message.actor_name == "echo"
    assert message.args == ({"n": 0, "note": "retry me"},) and "retries" not in message.options
    assert message.options["correlation_id"] == "cid/" + task_id

    again = await admin.retry_dead_letters(QUEUE, [task_id], by="olga")  # a second operator's click
    assert again.requeued == 0 and again.refused == [
        {"id": task_id, "task_id": task_id, "reason": "task already queued"}
    ]
    assert len(outbox(rclient, keys)) == 1


async def test_a_succeeded_task_is_refused_and_unknown_or_foreign_ones_skipped(make_admin, rclient, keys):
    done, elsewhere = submit(rclient, keys, n=1) + submit(rclient, keys, OTHER)
    end(rclient, keys, done, "succeeded", 1_000)
    end(rclient, keys, elsewhere, "dead", 1_000)
    rclient.delete(keys.outbox)
    outcome = await make_admin().retry_dead_letters(QUEUE, [done, "no-such-task", elsewhere], by="olga")
    assert outcome.requeued == 0
    assert outcome.refused == [{"id": done, "task_id": done, "reason": "task already succeeded"}]
    assert rclient.hget(keys.task(done), "status") == b"succeeded"
    assert rclient.hget(keys.task(elsewhere), "status") == b"dead"  # another queue's: not this one's
    assert rclient.xlen(keys.outbox) == 0


async def test_retry_all_requeues_every_dead_letter_of_the_queue(make_admin, rclient, keys):
    ids = submit(rclient, keys, n=3)
    (other,) = submit(rclient, keys, OTHER)
    for task_id, status in zip([*ids, other], ["dead", "failed", "succeeded", "dead"], strict=True):
        end(rclient, keys, task_id, status, 1_000)
    rclient.delete(keys.outbox)
    outcome = await make_admin().retry_dead_letters(QUEUE, None, by="olga")
    assert (outcome.requeued, outcome.refused) == (2, [])
    assert {dramatiq.Message.decode(e["m"].encode()).message_id for e in outbox(rclient, keys)} == set(
        ids[:2]
    )
    assert rclient.hget(keys.task(other), "status") == b"dead"


# -- purge ---------------------------------------------------------------------------------------------
async def test_purge_cancels_the_records_and_empties_the_queue(make_admin, rclient, keys, channel):
    ids = submit(rclient, keys, n=4)
    for entry in outbox(rclient, keys):  # what the relay would publish
        publish(channel, entry["q"], entry["m"].encode())
    end(rclient, keys, ids[3], "running", 1_000)  # its copy is dropped, its record left alone
    publish(channel, QUEUE, b"not a dramatiq message")
    publish(channel, OTHER, b"{}")
    admin = make_admin()
    assert await admin.purge(QUEUE) == 5
    assert channel.queue_declare(QUEUE, passive=True).method.message_count == 0
    assert channel.queue_declare(OTHER, passive=True).method.message_count == 1
    for task_id in ids[:3]:
        record = rclient.hgetall(keys.task(task_id))
        assert (
            record[b"status"] == b"canceled" and record[b"error"] == b"purged from its queue by an operator"
        )
        assert b"finished_at" in record
        assert events_of(rclient, keys, task_id)[-1]["status"] == "canceled"
    assert (
        rclient.zcard(keys.tasks_by_status("canceled")) == 3
        and rclient.zcard(keys.tasks_by_status("queued")) == 0
    )
    assert rclient.hget(keys.task(ids[3]), "status") == b"running"
    assert await admin.purge(QUEUE) == 0
    assert await admin.purge("never.p3") == 0  # never declared


async def test_purge_leaves_the_messages_a_worker_holds(make_admin, rclient, keys, channel):
    ids = submit(rclient, keys, n=2)
    for entry in outbox(rclient, keys):
        publish(channel, entry["q"], entry["m"].encode())
    method, _, _ = channel.basic_get(QUEUE, auto_ack=False)  # a worker's prefetched message
    assert await make_admin().purge(QUEUE) == 1
    assert rclient.hget(keys.task(ids[0]), "status") == b"queued"
    assert rclient.hget(keys.task(ids[1]), "status") == b"canceled"
    channel.basic_nack(method.delivery_tag, requeue=True)  # back to the queue, untouched
    deadline = time.monotonic() + 10
    while (ready := channel.queue_declare(QUEUE, passive=True).method.message_count) != 1:
        assert time.monotonic() < deadline, ready
        await asyncio.sleep(0.05)


# -- the agent's upkeep --------------------------------------------------------------------------------
def fill(channel: Any) -> None:
    for name, count in ((QUEUE, 3), (DQ, 2), (XQ, 1)):
        for _ in range(count):
            publish(channel, name, b"{}")


def test_depths_by_passive_declare_on_one_kept_connection(rabbit_url, channel):
    fill(channel)
    upkeep = RabbitUpkeep([rabbit_url])
    try:
        upkeep.maintain([QUEUE])  # RabbitMQ redelivers by itself: nothing to do, nothing raised
        assert upkeep.depths([QUEUE, "never.p3"]) == {
            QUEUE: {"ready": 3, "delayed": 2, "dead": 1},
            "never.p3": {"ready": 0, "delayed": 0, "dead": 0},
        }
        connection = upkeep._connection
        assert upkeep.depths([QUEUE])[QUEUE]["ready"] == 3 and upkeep._connection is connection
        connection.close()  # lost (a broker restart): the next call connects again
        assert upkeep.depths([QUEUE])[QUEUE]["ready"] == 3
    finally:
        upkeep.close()


@pytest.mark.slow  # waits for the management API's next figures (up to 5 s)
def test_depths_from_the_management_api(rabbit_url, management, channel):
    fill(channel)
    channel.basic_get(DQ, auto_ack=False)  # held by a worker until its ETA: still delayed
    upkeep = RabbitUpkeep([rabbit_url], management_url=management)
    want = {QUEUE: {"ready": 3, "delayed": 2, "dead": 1}, "never.p3": {"ready": 0, "delayed": 0, "dead": 0}}
    deadline = time.monotonic() + 20
    while (depths := upkeep.depths([QUEUE, "never.p3"])) != want and time.monotonic() < deadline:
        time.sleep(0.25)
    assert depths == want
