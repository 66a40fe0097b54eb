"""Every message delivered twice (two copies in the queue, as a broker may redeliver or a relay
publish twice) still records one end per task: the second copy of an ended task is skipped, a copy
of a retry round that already ran is recognised as stale, and attempts count only real runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import dramatiq
import orjson

from shared.keys import Keys
from shared.redis import async_client
from shared.tasks import ECHO, FAIL, Priority
from shared.taskstore import TaskStore as Submitter
from worker.actors.builtin import RequestedFailure, declare
from worker.broker import build_broker

KEYS = Keys()
QUEUE = "default.p2"


def submit(settings, bodies) -> list[str]:
    async def run() -> list[str]:
        client = async_client(settings)
        submitter = Submitter(client, settings)
        ids = [
            (await submitter.submit(t, p, Priority.P2, subject="t", correlation_id="c")).task_id
            for t, p in bodies
        ]
        await submitter.aclose()
        await client.aclose()
        return ids

    return asyncio.run(run())


def copy_every_message(rclient) -> None:
    """Put a second copy (its own Redis message id, as a redelivery has) of each queued message."""
    for redis_id in rclient.lrange(KEYS.queue(QUEUE), 0, -1):
        msg = orjson.loads(rclient.hget(KEYS.queue_messages(QUEUE), redis_id))
        copy_id = str(uuid.uuid4())
        msg["options"]["redis_message_id"] = copy_id
        rclient.hset(KEYS.queue_messages(QUEUE), copy_id, orjson.dumps(msg))
        rclient.rpush(KEYS.queue(QUEUE), copy_id)


def test_messages_delivered_twice_record_one_end_each(settings, rclient):
    settings = settings.model_copy(update={"task_max_retries": 1, "retry_min_backoff": 0.05,
                                           "retry_max_backoff": 0.1})  # fmt: skip
    broker = build_broker(settings, worker_id="twice")
    declare(broker, settings, ECHO, lambda payload: payload)

    def fail(payload):
        raise RequestedFailure(payload["message"])

    declare(broker, settings, FAIL, fail)
    echoes = submit(settings, [(ECHO, {"n": i}) for i in range(10)])
    fails = submit(settings, [(FAIL, {"message": "boom"}) for _ in range(3)])
    copy_every_message(rclient)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)  # one thread: copies in turn
    worker.start()
    ids = echoes + fails
    try:
        deadline = time.monotonic() + 30
        while True:
            states = [rclient.hget(KEYS.task(i), "status") for i in ids]
            if all(s in (b"succeeded", b"dead") for s in states) and rclient.llen(KEYS.queue(QUEUE)) == 0:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        time.sleep(1.0)  # the copies' retries, if any, would run by now
    finally:
        worker.stop()
        broker.close()
    ends: Counter[tuple[str, str]] = Counter()
    for _, fields in rclient.xrange(KEYS.task_events):
        status = fields[b"status"].decode()
        if status in ("succeeded", "dead", "failed"):
            ends[(fields[b"id"].decode(), status)] += 1
    assert ends == Counter({**{(i, "succeeded"): 1 for i in echoes}, **{(i, "dead"): 1 for i in fails}})
    for task_id in echoes:
        assert rclient.hget(KEYS.task(task_id), "attempts") == b"1"
    for task_id in fails:  # one attempt per retry round, not one per copy
        assert rclient.hget(KEYS.task(task_id), "attempts") == b"2"
