"""JSON API for tasks: search with filters and server-side pages, detail with timeline, retry,
cancel, and failures grouped by exception type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from dashboard import audit
from dashboard.appkeys import KEYS, REDIS, SETTINGS, STORE, USER
from shared.errors import NotFound, ValidationFailed, pydantic_fields
from shared.jsondepth import MAX_JSON_DEPTH, TOO_DEEP, deeper_than, too_deep
from shared.keys import Keys
from shared.store import iso
from shared.task_types import get_task_type
from shared.tasks import Priority, TaskStatus
from shared.taskstore import MAX_ID_MATCHES, MAX_SCAN, TaskScan, payload_digest
from shared.web import json_response, parse_query, read_json, truncate

#: Largest page of ``GET /api/tasks``.
MAX_PAGE = 100
#: Lifecycle events examined to build one task's timeline.
TIMELINE_SCAN = 5000
#: Display bounds: payload/result JSON, error and traceback characters.
MAX_JSON_CHARS, MAX_ERROR_CHARS, MAX_TRACEBACK_CHARS = 16_384, 2_000, 8_192
#: Failed or dead tasks examined by ``GET /api/tasks/failures``.
MAX_FAILURES = 1000
#: A point in time of a query: ISO 8601 (with or without an offset, as a datetime-local input
#: sends it) or epoch seconds — pydantic accepts both, and the document says so.
Instant = Annotated[
    datetime,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "ISO 8601 date-time, or epoch seconds",
        }
    ),
]


class TaskFilter(BaseModel):
    """A filter of the tasks page: type, status, priority, time window, error text (what
    ``GET /api/tasks`` takes without its page, and what a bulk action over a filter names)."""

    model_config = ConfigDict(extra="forbid")
    type: str | None = Field(default=None, max_length=64)
    status: TaskStatus | None = None
    priority: Priority | None = None
    since: Instant | None = None
    until: Instant | None = None
    error: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description=f"Text in the error message (case-insensitive); a page examines at most {MAX_SCAN} "
        "index entries (scanned, scan_bounded in the answer), the cursor goes on from there",
    )


class TaskQuery(TaskFilter):
    """Query of ``GET /api/tasks``: the filter and the page."""

    cursor: str | None = Field(default=None, max_length=400)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


#: A task id or the start of one, as the lists show it (8 characters) or whole.
ID_PREFIX = r"^[0-9A-Za-z][0-9A-Za-z_.:-]*$"


class FindQuery(BaseModel):
    """Query of ``GET /api/tasks/find``: a task id or its first characters."""

    model_config = ConfigDict(extra="forbid")
    q: str = Field(min_length=1, max_length=64, pattern=ID_PREFIX, description="A task id or its start")
    limit: int = Field(default=20, ge=1, le=MAX_ID_MATCHES)


class Retry(BaseModel):
    """Body of ``POST /api/tasks/{id}/retry``: an exact replay, or an edited payload/priority."""

    model_config = ConfigDict(extra="forbid")
    payload: dict[str, Any] | None = None
    priority: Priority | None = None


class FailureQuery(BaseModel):
    """Query of ``GET /api/tasks/failures``."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=500, ge=1, le=MAX_FAILURES)


def _bounded_json(value: Any) -> Any:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError; the store's reads make this unreachable, kept cheap
        return {"_unreadable": "value cannot be shown as JSON"}
    return value if len(text) <= MAX_JSON_CHARS else {"truncated": True, "preview": text[:MAX_JSON_CHARS]}


def for_display(record: dict[str, Any]) -> dict[str, Any]:
    """A task record with payload, result, error and traceback bounded."""
    return {
        **record,
        "payload": _bounded_json(record.get("payload")),
        "result": _bounded_json(record.get("result")),
        "error": truncate(record.get("error"), MAX_ERROR_CHARS),
        "traceback": truncate(record.get("traceback"), MAX_TRACEBACK_CHARS),
    }


async def search(request: web.Request, query: TaskQuery) -> TaskScan:
    """A page of tasks, newest first, filtered, with the next page's cursor and the scan's counts."""
    return await request.app[STORE].scan(
        status=query.status,
        type_name=query.type,
        priority=query.priority,
        since_us=int(query.since.timestamp() * 1e6) if query.since else None,
        until_us=int(query.until.timestamp() * 1e6) if query.until else None,
        error_text=query.error,
        limit=query.limit,
        cursor=query.cursor,
    )


async def task_list(request: web.Request) -> web.Response:
    """``GET /api/tasks?type=&status=&priority=&since=&until=&error=&cursor=&limit=``."""
    page = await search(request, parse_query(request, TaskQuery))
    return json_response(
        {
            "items": [for_display(r) for r in page.items],
            "next_cursor": page.next_cursor,
            "scanned": page.scanned,
            "scan_limit": MAX_SCAN,
            "scan_bounded": page.bounded,
        }
    )


async def find_tasks(request: web.Request, prefix: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Tasks whose id starts with ``prefix`` (case-insensitive for hex ids), id order, each as
    ``{id, type, status, priority, created_at}``, and whether more match than ``limit``: one
    prefix lookup in the id index, one pipelined read of the matches. A whole id the index does
    not hold (recorded before it existed) is looked up directly."""
    store, client, keys = request.app[STORE], request.app[REDIS], request.app[KEYS]
    prefix = prefix.strip()
    ids, more = await store.find_ids(prefix, limit)
    if not ids and prefix.lower() != prefix:
        ids, more = await store.find_ids(prefix.lower(), limit)
    if not ids:
        ids = [prefix]  # a full id recorded before the index; an unknown one reads as nothing
    async with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(keys.task(task_id), "type", "status", "priority", "created_at")
        rows = await pipe.execute()
    found = []
    for task_id, (type_name, status, priority, created_at) in zip(ids, rows, strict=True):
        if type_name is None and status is None:
            continue  # expired (the agent trims the index) or no such task
        found.append(
            {
                "id": task_id,
                "type": (type_name or b"").decode(),
                "status": (status or b"").decode(),
                "priority": (priority or b"").decode(),
                "created_at": iso(int(created_at)) if created_at and created_at.isdigit() else None,
            }
        )
    return found, more


async def task_find(request: web.Request) -> web.Response:
    """``GET /api/tasks/find?q=<id or its start>&limit=``: the matching tasks (a prefix lookup)."""
    query = parse_query(request, FindQuery)
    matches, more = await find_tasks(request, query.q, query.limit)
    return json_response({"query": query.q, "matches": matches, "truncated": more})


async def timeline(request: web.Request, task_id: str) -> list[dict[str, Any]]:
    """The task's lifecycle events (from the capped events stream), oldest first."""
    client, keys = request.app[REDIS], request.app[KEYS]
    created_us = await client.hget(keys.task(task_id), "created_us")
    start = f"{max(0, int(created_us) // 1000 - 1)}" if created_us and created_us.isdigit() else "-"
    entries = await client.xrange(keys.task_events, min=start, max="+", count=TIMELINE_SCAN)
    out = []
    for _, fields in entries:
        if fields.get(b"id", b"").decode() == task_id:
            out.append({k.decode(): v.decode() for k, v in fields.items() if k != b"id"})
    return out


async def task_detail_data(request: web.Request, task_id: str) -> dict[str, Any]:
    """What the task page and API show: the bounded record and its timeline."""
    record = await request.app[STORE].get(task_id)
    return {**for_display(record), "timeline": await timeline(request, task_id)}


async def task_detail(request: web.Request) -> web.Response:
    """``GET /api/tasks/{id}``: record (payload, result, error, traceback) and timeline."""
    return json_response(await task_detail_data(request, request.match_info["id"]))


async def stored_payload(client: Any, keys: Keys, task_id: str) -> dict[str, Any]:
    """The payload of a stored task for an exact replay, held to today's rules: a 422 naming
    ``payload`` when it is no JSON object or nests deeper than MAX_JSON_DEPTH (older versions
    stored payloads up to orjson's limit; a read shows those as a marker, not resubmitted here)."""
    raw = await client.hget(keys.task(task_id), "payload")
    try:
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        payload = None
    if type(payload) is not dict:
        raise ValidationFailed(
            "the stored payload cannot be read; retry with an edited payload",
            fields=[{"loc": ["payload"], "msg": "unreadable stored payload"}],
        )
    if deeper_than(payload, MAX_JSON_DEPTH):
        raise ValidationFailed(
            f"the stored payload is nested deeper than {MAX_JSON_DEPTH} levels; retry with an edited payload",
            fields=[{"loc": ["payload"], "msg": TOO_DEEP}],
        )
    return payload


#: Idempotency scope of the dashboard's retries (TaskStore.submit's ``idempotency_scope``): a task
#: retried again with the same payload and priority before it ends again gives the task the first
#: retry made, whoever asks and however often (the retry button, a bulk retry, two operators), so
#: one failure is never run twice by retrying it twice.
RETRY_SCOPE = "dashboard:retry"


@dataclass(frozen=True, slots=True)
class Retried:
    """What :func:`retry_task` did: the new task (or the one an earlier identical retry made)."""

    task_id: str
    created: bool
    edited: bool


async def retry_task(
    app: web.Application,
    task_id: str,
    subject: str,
    *,
    payload: dict[str, Any] | None = None,
    priority: Priority | None = None,
    record: dict[str, Any] | None = None,
) -> Retried:
    """Submit a task again (its stored payload, or ``payload``), validated by its type's model as
    the API validates a submission: the path of the retry button and of the bulk retry. The
    idempotency key names the task, when it last ended and what is submitted (RETRY_SCOPE), so
    a second identical retry gives the first one's task (``created`` False)."""
    store = app[STORE]
    record = record if record is not None else await store.get(task_id)
    task_type = get_task_type(record.get("type") or "")
    if task_type is None:
        raise NotFound(f"task type {record.get('type')!r} is not registered here")
    edited = payload is not None
    if payload is None:
        payload = await stored_payload(app[REDIS], app[KEYS], task_id)
    try:
        payload_json = task_type.encode_payload(payload, app[SETTINGS])
    except ValidationError as exc:
        raise ValidationFailed(
            "payload is invalid for its type", fields=pydantic_fields(exc, "payload")
        ) from None
    priority = priority or Priority(record.get("priority") or "P2")
    digest = payload_digest(task_type.name, orjson.loads(payload_json), priority)[:32]
    submitted = await store.submit_json(
        task_type,
        payload_json,
        priority,
        subject=subject,
        correlation_id=os.urandom(16).hex(),
        idempotency_key=f"{task_id}:{record.get('finished_at') or ''}:{digest}",
        idempotency_scope=RETRY_SCOPE,
    )
    return Retried(submitted.task_id, submitted.created, edited)


async def retry(request: web.Request) -> web.Response:
    """``POST /api/tasks/{id}/retry``: submit the same type again (same or edited payload) → 202;
    200 with the task of an identical earlier retry (since the task last ended)."""
    user = request[USER]
    task_id = request.match_info["id"]
    body = await read_json(request, Retry, empty_ok=True)
    if body.payload is not None and deeper_than(body.payload, MAX_JSON_DEPTH):
        raise too_deep(["body", "payload"])  # the edge's check_depth says so first; kept here too
    done = await retry_task(request.app, task_id, user.subject, payload=body.payload, priority=body.priority)
    client, keys = request.app[REDIS], request.app[KEYS]
    edited = "edited payload" if done.edited else "exact replay"
    outcome = f"{edited} as {done.task_id}" if done.created else f"already retried as {done.task_id}"
    await audit.record(client, keys, "task.retry", f"task {task_id}", user.subject, reason=outcome)
    return json_response(
        {"id": done.task_id, "retry_of": task_id, "status_url": f"/api/tasks/{done.task_id}"},
        status=202 if done.created else 200,
    )


async def cancel(request: web.Request) -> web.Response:
    """``POST /api/tasks/{id}/cancel``: cancel a queued task (409 once it has started)."""
    user = request[USER]
    task_id = request.match_info["id"]
    record = await request.app[STORE].cancel(task_id)
    await audit.record(request.app[REDIS], request.app[KEYS], "task.cancel", f"task {task_id}", user.subject)
    return json_response(for_display(record))


async def failure_groups(request: web.Request, limit: int) -> list[dict[str, Any]]:
    """The newest failed and dead tasks grouped by exception type, biggest group first."""
    client, keys = request.app[REDIS], request.app[KEYS]
    ids: list[str] = []
    for status in (TaskStatus.DEAD, TaskStatus.FAILED):
        ids += [m.decode() for m in await client.zrevrange(keys.tasks_by_status(status), 0, limit - 1)]
    async with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(keys.task(task_id), "error", "type")
        rows = await pipe.execute()
    groups: dict[str, dict[str, Any]] = {}
    for task_id, (error, type_name) in zip(ids, rows, strict=True):
        text = (error or b"").decode()
        name = text.split(":", 1)[0].strip()[:200] or "unknown"
        group = groups.setdefault(
            name,
            {
                "exception": name,
                "count": 0,
                "types": set(),
                "task_ids": [],
                "last_error": truncate(text, 500),
            },
        )
        group["count"] += 1
        group["types"].add((type_name or b"").decode())
        if len(group["task_ids"]) < 5:
            group["task_ids"].append(task_id)
    out = sorted(groups.values(), key=lambda g: -g["count"])
    return [{**g, "types": sorted(g["types"])} for g in out]


async def failures(request: web.Request) -> web.Response:
    """``GET /api/tasks/failures?limit=``: failures grouped by exception type with counts."""
    query = parse_query(request, FailureQuery)
    return json_response({"groups": await failure_groups(request, query.limit)})
