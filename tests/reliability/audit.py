"""What the fault tests audit, on either transport: every accepted task ended exactly once (its end
recorded once in the event stream), ratings counted once, and nothing left behind in the broker
or the outbox.

Waits here are coroutines that poll with ``asyncio.sleep``: with RabbitMQ as the broker an
in-process coordinator (the ``api`` fixture) runs its outbox relay on the test's event loop, and
a synchronous wait would freeze it while it holds entries it read (they would wait for
``OUTBOX_CLAIM_AFTER`` before another relay takes them over).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import pika
import pika.exceptions
import redis

from shared.keys import Keys
from shared.task_types import all_queues
from shared.transport.outbox import GROUP
from shared.transport.urls import node_urls

KEYS = Keys()
TERMINAL = {"succeeded", "failed", "dead", "canceled"}
T = TypeVar("T")


async def until(predicate: Callable[[], T], within: float = 20.0, interval: float = 0.1, what: str = "") -> T:
    """Poll ``predicate`` (without blocking the event loop) until it returns something truthy;
    fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def statuses(client: redis.Redis, ids: list[str]) -> list[str | None]:
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(KEYS.task(task_id), "status")
        return [s.decode() if s else None for s in pipe.execute()]


def terminal_events(client: redis.Redis) -> Counter[tuple[str, str]]:
    """(task id, terminal status) → how many times that end was recorded."""
    seen: Counter[tuple[str, str]] = Counter()
    for _, fields in client.xrange(KEYS.task_events):
        status = fields[b"status"].decode()
        if status in TERMINAL:
            seen[(fields[b"id"].decode(), status)] += 1
    return seen


def events_by_task(client: redis.Redis, ids: list[str]) -> dict[str, list[str]]:
    """Each task's lifecycle statuses, in order."""
    wanted = set(ids)
    out: dict[str, list[str]] = {i: [] for i in ids}
    for _, fields in client.xrange(KEYS.task_events):
        task_id = fields[b"id"].decode()
        if task_id in wanted:
            out[task_id].append(fields[b"status"].decode())
    return out


def assert_exactly_once(client: redis.Redis, expected: dict[str, str]) -> None:
    """Every task ended as expected, and its end was recorded exactly once."""
    ends = terminal_events(client)
    got = dict(zip(expected, statuses(client, list(expected)), strict=True))
    assert got == expected, {k: v for k, v in got.items() if v != expected[k]}
    for task_id, status in expected.items():
        assert ends[(task_id, status)] == 1, (task_id, status, ends[(task_id, status)])
    assert sum(ends.values()) == len(expected)


def recorded_tasks(client: redis.Redis) -> list[str]:
    """Every task the store holds a record of (accepted or not: a 202 lost with its connection)."""
    return [m.decode() for m in client.zrange(KEYS.tasks_all, 0, -1)]


async def wait_all(client: redis.Redis, ids: list[str], within: float) -> None:
    try:
        await until(lambda: all(s in TERMINAL for s in statuses(client, ids)), within, interval=0.2)
    except AssertionError:
        raise AssertionError(f"tasks not all ended: {Counter(statuses(client, ids))}") from None


async def submit_many(api: Any, headers: dict[str, str], bodies: list[dict[str, Any]]) -> list[str]:
    """POST each body (50 at a time) to an aiohttp test client; every one must be accepted."""
    ids: list[str] = []
    for start in range(0, len(bodies), 50):
        replies = await asyncio.gather(
            *(api.post("/api/v1/tasks", json=b, headers=headers) for b in bodies[start : start + 50])
        )
        for reply in replies:
            assert reply.status == 202, await reply.text()
            ids.append((await reply.json())["id"])
    return ids


async def post_accepted(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any] | None:
    """POST to a coordinator that may die or be away: its reply when accepted (202), else None."""
    try:
        async with http.post(url, json=body, headers=headers) as reply:
            if reply.status == 202:
                accepted: dict[str, Any] = await reply.json()
                return accepted
            return None
    except (TimeoutError, aiohttp.ClientError):
        return None


async def wait_ready(http: aiohttp.ClientSession, base: str, within: float = 30.0) -> None:
    async def ready() -> bool:
        try:
            async with http.get(f"{base}/health/live") as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False

    deadline = time.monotonic() + within
    while not await ready():
        assert time.monotonic() < deadline, f"{base} not up within {within}s"
        await asyncio.sleep(0.1)


# -- what is left behind ----------------------------------------------------------------------------


def outbox_left(client: redis.Redis) -> dict[str, int]:
    """Entries in the outbox stream and how many a relay read without confirming."""
    length = int(client.xlen(KEYS.outbox))
    try:
        pending = int(client.xpending(KEYS.outbox, GROUP)["pending"])
    except redis.ResponseError:  # no group: no relay ever ran
        pending = 0
    return {"entries": length, "pending": pending}


def pending_of(client: redis.Redis, consumer: str) -> int:
    """Outbox entries pending under one relay's name (read, not confirmed)."""
    try:
        rows = client.xpending_range(
            KEYS.outbox, GROUP, min="-", max="+", count=10_000, consumername=consumer
        )
    except redis.ResponseError:
        return 0
    return len(rows)


def rabbit_ready(broker_url: str) -> dict[str, int]:
    """Ready messages of every queue and delay queue, counted by passive declares on the first
    node of ``broker_url`` that answers (exact and current, but not the unacked ones)."""
    last: Exception | None = None
    for url in node_urls(broker_url):
        try:
            connection = pika.BlockingConnection(pika.URLParameters(url))
        except pika.exceptions.AMQPError as exc:
            last = exc
            continue
        try:
            channel = connection.channel()
            counts = {}
            for queue in all_queues():
                for name in (queue, f"{queue}.DQ"):
                    try:
                        counts[name] = int(channel.queue_declare(name, passive=True).method.message_count)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                        counts[name] = 0  # never declared: nothing in it
                        channel = connection.channel()
            return counts
        finally:
            connection.close()
    raise AssertionError(f"no RabbitMQ node answered: {last!r}")


def rabbit_messages(api: Callable[..., Any], vhost: str) -> dict[str, int]:
    """Messages (ready + unacked) of every queue of ``vhost`` with any, from the management API
    (``api``: a RabbitNode's ``api``; its figures are up to 5 s old)."""
    rows = api("GET", f"/api/queues/{quote(vhost, safe='')}?columns=name,messages")
    return {row["name"]: int(row.get("messages") or 0) for row in rows if row.get("messages")}


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/")) or "/"


async def assert_nothing_left(
    client: redis.Redis,
    broker_url: str | None,
    *,
    management: Callable[..., Any] | None = None,
    within: float = 20.0,
) -> None:
    """No message left in the broker and, with RabbitMQ, no entry left in the outbox. Deferred
    copies and late redeliveries (skipped once seen) may take a few seconds to drain."""
    if broker_url is None:

        def redis_left() -> dict[str, int]:
            with client.pipeline(transaction=False) as pipe:
                for queue in all_queues():
                    pipe.hlen(KEYS.queue_messages(queue))
                counts = dict(zip(all_queues(), pipe.execute(), strict=True))
            return {q: n for q, n in counts.items() if n}

        await until(lambda: not redis_left(), within, interval=0.5, what="Redis queues empty")
        return
    await until(
        lambda: outbox_left(client) == {"entries": 0, "pending": 0},
        within,
        what=f"the outbox empty ({outbox_left(client)})",
    )
    await until(
        lambda: not any(rabbit_ready(broker_url).values()),
        within,
        interval=0.5,
        what="RabbitMQ queues without ready messages",
    )
    if management is not None:  # ready and unacked alike, on the management API's clock
        vhost = vhost_of(node_urls(broker_url)[0])
        last: dict[str, int] = {}

        def empty() -> bool:
            nonlocal last
            last = rabbit_messages(management, vhost)
            return not last

        try:
            await until(empty, within + 10, interval=1.0)
        except AssertionError:
            raise AssertionError(f"RabbitMQ still holds messages: {last}") from None
