"""Dramatiq's Redis queues as operators see them: depth, delayed, dead letters; retry, delete,
run-now and purge.

:class:`RedisQueueAdmin` is the Redis broker's :class:`shared.transport.api.QueueAdmin`. Every
queue's counters are one pipelined round trip. Changes go through Lua scripts in
``shared/transport/lua/`` so a concurrent worker or operator never sees half a move.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from shared.keys import Keys
from shared.store import lua_source
from shared.task_types import all_queues
from shared.transport.api import RetryOutcome


def script_source(name: str) -> str:
    """The text of ``shared/transport/lua/<name>.lua`` (the scripts that move Dramatiq messages),
    read like every Opsdeck script by :func:`shared.store.lua_source` (``--! include`` inlined)."""
    return lua_source("shared.transport", name)


#: Commands :func:`queue_stats_commands` queues per Dramatiq queue.
COMMANDS_PER_QUEUE = 4
#: Messages dropped per purge script call (keeps each call short).
PURGE_BATCH = 500
#: Most messages one purge request drops.
PURGE_MAX = 100_000
#: Most dead letters read (and retried) by one request.
DEAD_LETTER_MAX = 1000


def known_queues(*extra: Iterable[str]) -> list[str]:
    """Every registered queue plus any others seen (heartbeats, paused set), sorted by name."""
    names = set(all_queues())
    for group in extra:
        names.update(group)
    return sorted(names)


def priority_of(queue: str) -> str:
    """``P0``..``P3`` from a queue name like ``default.p0`` (``-`` when it has none)."""
    suffix = queue.rsplit(".", 1)[-1]
    return suffix.upper() if len(suffix) == 2 and suffix[0] == "p" and suffix[1].isdigit() else "-"


def queue_stats_commands(pipe: Any, keys: Keys, queues: list[str]) -> None:
    """Queue the reads behind :func:`decode_queue_stats` on ``pipe``."""
    for q in queues:
        pipe.llen(keys.queue(q))
        pipe.hlen(keys.queue_messages(q))
        pipe.hlen(keys.delay_queue_messages(q))
        pipe.zcard(keys.dead_letters(q))


def decode_queue_stats(replies: list[Any], queues: list[str], paused: set[str]) -> list[dict[str, Any]]:
    """Rows ``{name, priority, ready, in_progress, delayed, dead, paused}`` from the replies."""
    rows = []
    for i, q in enumerate(queues):
        n = COMMANDS_PER_QUEUE
        ready, stored, delayed, dead = (int(r or 0) for r in replies[i * n : i * n + n])
        rows.append(
            {
                "name": q,
                "priority": priority_of(q),
                "ready": ready,
                "in_progress": max(0, stored - ready),
                "delayed": delayed,
                "dead": dead,
                "paused": q in paused,
            }
        )
    return rows


def decode_message(raw: bytes | None) -> dict[str, Any] | None:
    """A Dramatiq message as a dict (None when missing or not JSON)."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


async def dead_letters(client: Any, keys: Keys, queue: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters of ``queue``: task id, Dramatiq's Redis message id, actor,
    when, retries, traceback, args."""
    entries = await client.zrevrange(keys.dead_letters(queue), 0, limit - 1, withscores=True)
    if not entries:
        return []
    ids = [m.decode() for m, _ in entries]
    raws = await client.hmget(keys.dead_letter_messages(queue), ids)
    out = []
    for (mid, score), raw in zip(zip(ids, (s for _, s in entries), strict=True), raws, strict=True):
        msg = decode_message(raw) or {}
        options = msg.get("options") or {}
        out.append(
            {
                "id": msg.get("message_id") or mid,  # the task id (Dramatiq's message_id)
                "message_id": mid,  # Dramatiq's Redis id: new on every enqueue, what a retry names
                "actor": msg.get("actor_name"),
                "dead_at": int(score),
                "retries": options.get("retries", 0),
                "traceback": options.get("traceback"),
                "args": msg.get("args"),
            }
        )
    return out


async def delayed_messages(client: Any, keys: Keys, queue: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` delayed messages of ``queue`` with their ETA (ms), soonest first."""
    _, fields = await client.hscan(keys.delay_queue_messages(queue), 0, count=limit)
    out = []
    for mid, raw in list(fields.items())[:limit]:
        msg = decode_message(raw) or {}
        options = msg.get("options") or {}
        out.append(
            {
                "id": msg.get("message_id") or mid.decode(),  # the task id
                "message_id": mid.decode(),
                "actor": msg.get("actor_name"),
                "eta": options.get("eta"),
                "retries": options.get("retries", 0),
            }
        )
    return sorted(out, key=lambda m: m["eta"] or 0)


async def retry_dead_letters(
    client: Any, keys: Keys, queue: str, ids: list[str] | None, events_maxlen: int, *, by: str
) -> RetryOutcome:
    """Move dead letters back onto ``queue`` (all of them, up to DEAD_LETTER_MAX, when ``ids`` is
    None) with their retry count reset; each task starts a new attempt series (record queued,
    attempts keep counting, a timeline event names ``by``)."""
    outcome = RetryOutcome()
    if ids is None:
        ids = [m.decode() for m in await client.zrange(keys.dead_letters(queue), 0, DEAD_LETTER_MAX - 1)]
    if not ids:
        return outcome
    raws = await client.hmget(keys.dead_letter_messages(queue), ids)
    script = client.register_script(script_source("dead_letter_retry"))
    now_ms = time.time_ns() // 1_000_000
    for mid, raw in zip(ids, raws, strict=True):
        msg = decode_message(raw)
        if msg is None:
            continue
        task_id = str(msg.get("message_id") or mid)
        options = msg.setdefault("options", {})
        options["retries"] = 0
        options.pop("traceback", None)
        options.pop("eta", None)
        options.pop("requeue_timestamp", None)
        reply = await script(
            keys=[
                keys.dead_letters(queue),
                keys.dead_letter_messages(queue),
                keys.queue(queue),
                keys.queue_messages(queue),
                keys.task_events,
            ],
            args=[mid, orjson.dumps(msg), keys.task_prefix, keys.tasks_status_prefix, now_ms, events_maxlen,
                  task_id, by, keys.queue_wakeups, queue],
        )  # fmt: skip
        outcome.tally(mid, task_id, reply)
    return outcome


async def delete_dead_letters(client: Any, keys: Keys, queue: str, ids: list[str]) -> int:
    """Delete dead letters of ``queue`` by Redis message id (one script call); how many were there."""
    if not ids:
        return 0
    script = client.register_script(script_source("dead_letter_delete"))
    return int(await script(keys=[keys.dead_letters(queue), keys.dead_letter_messages(queue)], args=ids))


async def promote_delayed(
    client: Any, keys: Keys, queue: str, ids: list[str], events_maxlen: int, *, by: str
) -> RetryOutcome:
    """Run delayed messages of ``queue`` (by Redis message id) now: a copy without its ETA onto the
    queue under a new Redis id, as Dramatiq's worker does at the ETA (``delayed_promote.lua``;
    a copy a worker still holds is refused by the task store when its ETA comes). A message that
    is no longer delayed is skipped; one whose task has ended or runs is refused with its status."""
    outcome = RetryOutcome()
    if not ids:
        return outcome
    raws = await client.hmget(keys.delay_queue_messages(queue), ids)
    script = client.register_script(script_source("delayed_promote"))
    now_ms = time.time_ns() // 1_000_000
    for mid, raw in zip(ids, raws, strict=True):
        msg = decode_message(raw)
        if msg is None:
            continue
        task_id = str(msg.get("message_id") or mid)
        new_id = str(uuid.uuid4())
        msg["queue_name"] = queue
        options = msg.setdefault("options", {})
        options.pop("eta", None)
        options["redis_message_id"] = new_id
        reply = await script(
            keys=[keys.delay_queue(queue), keys.delay_queue_messages(queue), keys.queue(queue),
                  keys.queue_messages(queue), keys.task_events],
            args=[mid, new_id, orjson.dumps(msg), keys.task_prefix, now_ms, events_maxlen, task_id, by,
                  keys.queue_wakeups, queue],
        )  # fmt: skip
        outcome.tally(mid, task_id, reply)
    return outcome


async def purge_queue(client: Any, keys: Keys, queue: str, events_maxlen: int) -> int:
    """Drop the ready messages of ``queue`` (at most PURGE_MAX); returns how many were dropped."""
    script = client.register_script(script_source("queue_purge"))
    total = 0
    while total < PURGE_MAX:
        dropped = int(
            await script(
                keys=[keys.queue(queue), keys.queue_messages(queue), keys.task_events],
                args=[
                    PURGE_BATCH,
                    keys.task_prefix,
                    keys.tasks_status_prefix,
                    time.time_ns() // 1_000_000,
                    events_maxlen,
                ],
            )
        )
        total += dropped
        if dropped < PURGE_BATCH:
            break
    return total


class RedisQueueAdmin:
    """:class:`shared.transport.api.QueueAdmin` of Dramatiq's Redis broker."""

    def __init__(self, client: Any, keys: Keys, events_maxlen: int) -> None:
        self.client = client
        self.keys = keys
        self.events_maxlen = events_maxlen

    async def stats(self, queues: list[str], paused: set[str]) -> list[dict[str, Any]]:
        """Every queue's counters in one pipelined round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            self.stats_commands(pipe, queues)
            replies = await pipe.execute()
        return await self.stats_from(replies, queues, paused)

    def stats_commands(self, pipe: Any, queues: list[str]) -> int:
        queue_stats_commands(pipe, self.keys, queues)
        return COMMANDS_PER_QUEUE * len(queues)

    async def stats_from(
        self, replies: list[Any], queues: list[str], paused: set[str]
    ) -> list[dict[str, Any]]:
        return decode_queue_stats(replies, queues, paused)

    async def delayed_messages(self, queue: str, limit: int) -> list[dict[str, Any]]:
        return await delayed_messages(self.client, self.keys, queue, limit)

    async def dead_letters(self, queue: str, limit: int) -> list[dict[str, Any]]:
        return await dead_letters(self.client, self.keys, queue, limit)

    async def retry_dead_letters(self, queue: str, ids: list[str] | None, *, by: str) -> RetryOutcome:
        return await retry_dead_letters(self.client, self.keys, queue, ids, self.events_maxlen, by=by)

    async def delete_dead_letters(self, queue: str, ids: list[str]) -> int:
        return await delete_dead_letters(self.client, self.keys, queue, ids)

    async def promote_delayed(self, queue: str, ids: list[str], *, by: str) -> RetryOutcome:
        return await promote_delayed(self.client, self.keys, queue, ids, self.events_maxlen, by=by)

    async def purge(self, queue: str) -> int:
        return await purge_queue(self.client, self.keys, queue, self.events_maxlen)
