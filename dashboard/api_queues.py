"""JSON API for queues: depth, delayed (with ETA), dead letters; pause, resume, purge, retry."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.appkeys import KEYS, QUEUES, REDIS, USER
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.keys import Keys
from shared.transport.api import QueueAdmin
from shared.transport.queues import known_queues
from shared.web import json_response, parse_query, read_json

#: Most delayed messages and dead letters listed per queue.
MAX_LIST = 100


class Purge(BaseModel):
    """Body of ``POST /api/queue/{name}/purge``: ``confirm`` must repeat the queue's name."""

    model_config = ConfigDict(extra="forbid")
    confirm: str = Field(max_length=200)


class ListQuery(BaseModel):
    """Query of ``GET /api/queue/{name}``."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=MAX_LIST)


async def queue_rows(request: web.Request) -> list[dict[str, Any]]:
    """Every known queue's counters (one pipelined round trip after the paused set)."""
    return await read_queue_rows(request.app[REDIS], request.app[KEYS], request.app[QUEUES])


async def read_queue_rows(client: Any, keys: Keys, admin: QueueAdmin) -> list[dict[str, Any]]:
    """:func:`queue_rows` without a request (the live stream reads it too)."""
    paused = {q.decode() for q in await client.smembers(keys.paused_queues)}
    return await admin.stats(known_queues(paused), paused)


async def checked_queue_name(request: web.Request) -> str:
    """The route's queue name; 404 unless it is a known queue."""
    name = request.match_info["name"]
    paused = {q.decode() for q in await request.app[REDIS].smembers(request.app[KEYS].paused_queues)}
    if name not in known_queues(paused):
        raise NotFound(f"unknown queue {name!r}")
    return name


async def queue_stats(request: web.Request) -> web.Response:
    """``GET /api/queue/stats``: ready, in progress, delayed, dead and paused per queue."""
    return json_response({"queues": await queue_rows(request)})


async def queue_detail_data(request: web.Request, name: str, limit: int) -> dict[str, Any]:
    """One queue's counters, its delayed messages (with ETA) and its newest dead letters."""
    return await read_queue_detail(request.app[REDIS], request.app[KEYS], request.app[QUEUES], name, limit)


async def read_queue_detail(
    client: Any, keys: Keys, admin: QueueAdmin, name: str, limit: int
) -> dict[str, Any]:
    """:func:`queue_detail_data` without a request (the live stream reads it too); NotFound when
    ``name`` is not a known queue."""
    row = next((r for r in await read_queue_rows(client, keys, admin) if r["name"] == name), None)
    if row is None:
        raise NotFound(f"unknown queue {name!r}")
    dead = await admin.dead_letters(name, limit)
    if dead:  # each dead letter's error, from its task's record (one round trip for the page)
        async with client.pipeline(transaction=False) as pipe:
            for letter in dead:
                pipe.hget(keys.task(letter["id"]), "error")
            errors = await pipe.execute()
        for letter, error in zip(dead, errors, strict=True):
            letter["error"] = error.decode() if error else None
    return {**row, "delayed_messages": await admin.delayed_messages(name, limit), "dead_letters": dead}


async def queue_detail(request: web.Request) -> web.Response:
    """``GET /api/queue/{name}?limit=``: counters, delayed messages and dead letters."""
    name = await checked_queue_name(request)
    query = parse_query(request, ListQuery)
    return json_response(await queue_detail_data(request, name, query.limit))


async def pause(request: web.Request) -> web.Response:
    """``POST /api/queue/{name}/pause``: workers stop consuming it (within ~1 s)."""
    return await _set_paused(request, paused=True)


async def resume(request: web.Request) -> web.Response:
    """``POST /api/queue/{name}/resume``: workers consume it again."""
    return await _set_paused(request, paused=False)


async def _set_paused(request: web.Request, *, paused: bool) -> web.Response:
    user = request[USER]
    name = await checked_queue_name(request)
    client, keys = request.app[REDIS], request.app[KEYS]
    await (client.sadd if paused else client.srem)(keys.paused_queues, name)
    action = "queue.pause" if paused else "queue.resume"
    await audit.record(client, keys, action, f"queue {name}", user.subject)
    return json_response({"queue": name, "paused": paused})


async def purge(request: web.Request) -> web.Response:
    """``POST /api/queue/{name}/purge`` ``{"confirm": "<name>"}``: drop its ready messages."""
    user = request[USER]
    name = await checked_queue_name(request)
    body = await read_json(request, Purge)
    if body.confirm != name:
        raise ValidationFailed(
            "confirm must repeat the queue name",
            fields=[{"loc": ["body", "confirm"], "msg": f"expected {name!r}"}],
        )
    client, keys = request.app[REDIS], request.app[KEYS]
    dropped = await request.app[QUEUES].purge(name)
    await audit.record(
        client, keys, "queue.purge", f"queue {name}", user.subject, reason=f"{dropped} dropped"
    )
    return json_response({"queue": name, "purged": dropped})


async def retry_dead(request: web.Request) -> web.Response:
    """``POST /api/queue/{name}/dead/{message_id}/retry`` or ``.../dead/retry`` (all): requeue as a
    new attempt series. One message whose task has since ended otherwise is refused (409, with
    the reason); "all" requeues the others and lists what it refused."""
    user = request[USER]
    name = await checked_queue_name(request)
    message_id = request.match_info.get("message_id")
    client, keys = request.app[REDIS], request.app[KEYS]
    ids = [message_id] if message_id else None
    outcome = await request.app[QUEUES].retry_dead_letters(name, ids, by=user.subject)
    if message_id and outcome.refused:
        raise Conflict(f"dead letter {message_id} not retried: {outcome.refused[0]['reason']}")
    if message_id and not outcome.requeued:
        raise NotFound(f"dead letter {message_id} not found in {name}")
    target = f"queue {name}" + (f" message {message_id}" if message_id else "")
    reason = f"{outcome.requeued} requeued" + (f", {len(outcome.refused)} refused" if outcome.refused else "")
    await audit.record(client, keys, "dead_letters.retry", target, user.subject, reason=reason)
    return json_response({"queue": name, "requeued": outcome.requeued, "refused": outcome.refused})
