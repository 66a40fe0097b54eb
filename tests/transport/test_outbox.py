"""The outbox relay against a real RabbitMQ node and the test Redis: an entry leaves the outbox only
once RabbitMQ confirmed it, a stopped relay's entries are taken over, a message published twice
runs once, and a delay longer than the hold limit waits in Redis until it is nearly due."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pika
import pytest
import redis.asyncio as aioredis
from dramatiq import Message

from shared.redis import async_client
from shared.settings import Settings
from shared.tasks import ECHO, Priority
from shared.taskstore import TaskStore
from shared.transport.outbox import GROUP, OutboxRelay, outbox_depth, relay_for
from shared.transport.rabbitmq import LongDelays
from tests.conftest import SECRET
from tests.helpers import wait_for
from tests.worker.test_end_to_end import KEYS, start_agent, wait_running, wait_status

pytestmark = pytest.mark.slow


@pytest.fixture
def rabbit_settings(redis_url: str, rabbit_url: str, tmp_path: Any) -> Settings:
    return Settings(
        redis_url=redis_url,
        broker_url=rabbit_url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        opsdeck_var_dir=tmp_path / "var",
        outbox_claim_after=1.0,
    )


@pytest.fixture
async def aclient(rabbit_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = async_client(rabbit_settings, max_connections=8)
    yield client
    await client.aclose()


def ready_count(rabbit_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


async def submit(settings: Settings, client: aioredis.Redis, n: int) -> list[str]:
    store = TaskStore(client, settings)
    try:
        done = await asyncio.gather(
            *(store.submit(ECHO, {"i": i}, Priority.P2, subject="t", correlation_id="c") for i in range(n))
        )
    finally:
        await store.aclose()
    return [d.task_id for d in done]


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drained(client: aioredis.Redis) -> None:
    async with asyncio.timeout(20):
        while (await outbox_depth(client, KEYS.outbox))["entries"]:  # noqa: ASYNC110 - polling Redis
            await asyncio.sleep(0.02)


async def test_submissions_wait_in_the_outbox_until_rabbitmq_confirms_them(
    rabbit_settings, aclient, rabbit_url
):
    ids = await submit(rabbit_settings, aclient, 30)
    assert (await outbox_depth(aclient, KEYS.outbox))["entries"] == 30  # nothing published in the request
    # a relay that cannot reach RabbitMQ keeps every entry
    dead = relay_for(rabbit_settings.model_copy(update={"broker_url": "amqp://u:p@127.0.0.1:1/"}), aclient)
    async with running(dead):
        await wait_for_async(lambda: dead.state.last_error is not None)
        await asyncio.sleep(0.3)
    assert (await outbox_depth(aclient, KEYS.outbox))["entries"] == 30
    assert "p@" not in (dead.state.last_error or "") and dead.state.nodes == ["amqp://u:***@127.0.0.1:1/"]
    # a relay that can: published once each, then deleted
    relay = relay_for(rabbit_settings, aclient)
    async with running(relay):
        await drained(aclient)
    assert relay.state.published == 30
    assert ready_count(rabbit_url, "default.p2") == 30
    assert (await outbox_depth(aclient, KEYS.outbox)) == {"entries": 0, "pending": 0}
    assert len(set(ids)) == 30


async def test_entries_a_stopped_relay_read_are_taken_over(rabbit_settings, aclient, rabbit_url):
    await submit(rabbit_settings, aclient, 12)
    await aclient.xgroup_create(KEYS.outbox, GROUP, id="0", mkstream=True)
    # a relay read them and died before publishing: they are pending under its name
    await aclient.xreadgroup(GROUP, "dead-relay", {KEYS.outbox: ">"}, count=100)
    assert (await outbox_depth(aclient, KEYS.outbox))["pending"] == 12
    relay = relay_for(rabbit_settings, aclient)  # OUTBOX_CLAIM_AFTER=1 s here
    async with running(relay):
        await drained(aclient)
    assert ready_count(rabbit_url, "default.p2") == 12


async def test_a_message_published_twice_runs_once(
    procs, env_factory, tmp_path, rclient, rabbit_settings, aclient
):
    ids = await submit(rabbit_settings, aclient, 20)

    class Twice(OutboxRelay):
        async def _publish(self, channel: Any, entries: Any) -> None:
            await super()._publish(channel, entries)
            await super()._publish(channel, entries)

    relay = relay_for(rabbit_settings, aclient)
    twice = Twice(
        aclient, outbox=relay.outbox, scheduled=relay.scheduled, urls=relay.urls, queue_type=relay.queue_type,
        claim_after_ms=relay.claim_after_ms, max_hold_ms=relay.max_hold_ms,
    )  # fmt: skip
    async with running(twice):
        await drained(aclient)
    assert ready_count(rabbit_settings.broker_url or "", "default.p2") == 40
    start_agent(procs, env_factory, tmp_path, BROKER_URL=rabbit_settings.broker_url, WORKER_THREADS=8)
    wait_running(rclient, "agent")
    for task_id in ids:
        wait_status(rclient, task_id, "succeeded")
    wait_for(
        lambda: ready_count(rabbit_settings.broker_url or "", "default.p2") == 0, what="duplicates consumed"
    )
    await asyncio.sleep(1.0)
    events = [e[1] for e in rclient.xrange(KEYS.task_events)]
    for task_id in ids:
        ends = [e for e in events if e[b"id"].decode() == task_id and e[b"status"] == b"succeeded"]
        assert len(ends) == 1, task_id
        assert rclient.hget(KEYS.task(task_id), "attempts") == b"1"


async def test_a_long_delay_waits_in_redis_until_nearly_due(rabbit_settings, aclient, rclient, rabbit_url):
    parked = LongDelays(rclient, KEYS.outbox_scheduled, max_hold_ms=600_000)
    message: Message[Any] = Message(
        queue_name="default.p2.DQ", actor_name="echo", args=({},), kwargs={}, options={"eta": 1}
    )
    soon = int(time.time() * 1000) + 1000
    later = int(time.time() * 1000) + 3_600_000
    parked.park(message.copy(message_id="soon"), soon)  # due within the hold limit: published now
    parked.park(message.copy(message_id="later"), later)  # an hour away: stays parked
    relay = relay_for(rabbit_settings, aclient)
    async with running(relay):
        await wait_for_async(lambda: relay.state.published == 1)
        await asyncio.sleep(0.5)
    assert relay.state.published == 1
    assert ready_count(rabbit_url, "default.p2.DQ") == 1
    left = rclient.zrange(KEYS.outbox_scheduled, 0, -1)
    assert len(left) == 1 and b"later" in left[0]


async def wait_for_async(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - the relay's state, set by its task
            await asyncio.sleep(0.02)


def delete_queue(rabbit_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


async def test_an_entry_rabbitmq_returns_unroutable_stays_in_the_outbox(rabbit_settings, aclient, rabbit_url):
    """A queue deleted under a running relay (an operator, a policy): RabbitMQ *returns* the
    mandatory publish instead of routing it, and confirms the return. The relay must not take
    that for a confirm and delete the entry (the task would be lost): it keeps it, declares the
    queue again on its next connection and publishes it there."""
    relay = relay_for(rabbit_settings, aclient)
    await submit(rabbit_settings, aclient, 1)
    async with running(relay):
        await drained(aclient)  # the relay declared default.p2 and remembers it did
        assert ready_count(rabbit_url, "default.p2") == 1
        delete_queue(rabbit_url, "default.p2")
        await submit(rabbit_settings, aclient, 3)
        await drained(aclient)
    assert relay.state.published == 4
    assert ready_count(rabbit_url, "default.p2") == 3  # declared again, the three are there
