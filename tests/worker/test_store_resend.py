"""A store script sent again after a lost reply (a reset connection: the call ran, its answer
never came back, ``TaskLifecycle._write`` retries) changes nothing the second time: one attempt, one
``running`` and one ``succeeded`` event, counters moved once. Found by ``make soak``'s fault
proxy, where a reset during ``finish`` recorded a task's end twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dramatiq

from shared.keys import Keys
from shared.redis import async_client
from shared.tasks import ECHO, Priority
from shared.taskstore import TaskStore as Submitter
from worker.actors.builtin import declare
from worker.broker import build_broker
from worker.middleware.lifecycle import TaskLifecycle

KEYS = Keys()


def sent_twice(script: Any) -> Any:
    """The script, each call run twice with the same arguments (the second answer returned)."""

    def call(*, keys: Any, args: Any) -> Any:
        script(keys=keys, args=args)
        return script(keys=keys, args=args)

    return call


def test_a_resent_start_or_finish_records_the_attempt_once(settings, rclient):
    broker = build_broker(settings, worker_id="resend")
    store = next(m for m in broker.middleware if isinstance(m, TaskLifecycle))
    store._start = sent_twice(store._start)
    store._finish = sent_twice(store._finish)
    declare(broker, settings, ECHO, lambda payload: payload)

    async def submit() -> str:
        client = async_client(settings)
        submitter = Submitter(client, settings)
        submitted = await submitter.submit(ECHO, {"n": 1}, Priority.P2, subject="t", correlation_id="c")
        await submitter.aclose()
        await client.aclose()
        return submitted.task_id

    task_id = asyncio.run(submit())
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while rclient.hget(KEYS.task(task_id), "status") != b"succeeded":
            assert time.monotonic() < deadline, rclient.hgetall(KEYS.task(task_id))
            time.sleep(0.05)
        time.sleep(0.3)  # let the ack settle
    finally:
        worker.stop()
        broker.close()

    record = rclient.hgetall(KEYS.task(task_id))
    assert record[b"attempts"] == b"1"
    events = [f[b"status"] for _, f in rclient.xrange(KEYS.task_events) if f[b"id"].decode() == task_id]
    assert events == [b"queued", b"running", b"succeeded"]
    counters = rclient.hgetall(store.counters_key)
    assert counters[b"processed"] == b"1" and counters[b"in_flight"] == b"0"
    assert rclient.hlen(KEYS.queue_messages("default.p2")) == 0  # acked
