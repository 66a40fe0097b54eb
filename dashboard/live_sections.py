"""The page sections of the live stream beyond the overview's: one table, :data:`SECTIONS`.

A page names what it shows as section keys (``<kind>[:<arg>][?<query>]``, the arg
percent-encoded): ``tasks?status=failed`` (the task list with those filters), ``task:<id>`` (one
task's state and timeline), ``queue:<name>`` (one queue's counters, delayed messages and dead
letters), ``worker:<id>`` (one worker's desired state and command history; its heartbeat and
processes are the ``workers`` section), ``audit?limit=50`` (the newest audit entries). The
poller (:mod:`dashboard.stream`) keeps one :class:`Section` per distinct key that some socket
subscribes to, reads it once per tick for all of them, and drops it when the last one leaves.

Adding a kind is one row in :data:`SECTIONS`: a label (what the page says is stale during an
outage) and a parser that turns ``(arg, query)`` into an object with ``async read(ctx)``
(ValueError for a key it refuses). ``read`` returns the section's JSON value; a value the page
cannot have (an unknown task) is ``{"error": message}`` from a NotFound; Redis errors propagate
(the poller reports the outage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, ValidationError

from dashboard.api_queues import MAX_LIST, read_queue_detail
from dashboard.api_tasks import TIMELINE_SCAN, TaskQuery, for_display
from dashboard.api_workers import AuditQuery, read_audit, read_worker_detail
from dashboard.bandit_view import BanditLive
from shared.keys import Keys
from shared.taskstore import TaskStore, readable_record
from shared.transport.api import QueueAdmin
from shared.web import truncate

#: Longest section key a socket may name.
MAX_KEY = 400
#: Distinct task-list filters read per tick (each a bounded scan of up to MAX_SCAN index entries).
MAX_TASK_LISTS = 20
#: Distinct audit-log pages read per tick (each examines up to dashboard.audit.SCAN_LIMIT entries).
MAX_AUDIT_LISTS = 20
#: Characters of a task's error shown per row of the live task list (as the page renders it).
LIST_ERROR_CHARS = 120
#: Timeline events kept per live task (the newest).
MAX_EVENTS = 200
#: Fields of a task the live task page updates (the payload does not change).
TASK_FIELDS = ("status", "attempts", "worker", "started_at", "finished_at", "result", "error", "traceback")


@dataclass(frozen=True)
class LiveContext:
    """What a section reads with: the dashboard's Redis client, key names, queues and task store."""

    redis: Any
    keys: Keys
    admin: QueueAdmin
    store: TaskStore


class Section(Protocol):
    """One subscribed key's reader (may keep state between ticks, e.g. a stream position)."""

    async def read(self, ctx: LiveContext) -> Any:
        """The section's value now."""


@dataclass(frozen=True)
class Kind:
    """A row of :data:`SECTIONS`."""

    label: str
    parse: Callable[[str, dict[str, str]], Section]
    #: Distinct keys of this kind one process reads per tick (None: only the poller's overall cap).
    most: int | None = None


def _query(query: dict[str, str], model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(query)
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


def _arg(arg: str, what: str) -> str:
    if not arg or len(arg) > 200:
        raise ValueError(f"a {what} is needed (1 to 200 characters)")
    return arg


class TaskList:
    """``tasks?<filters>``: the first page (or the cursor's page) of the task list."""

    def __init__(self, arg: str, query: dict[str, str]) -> None:
        self.query: TaskQuery = _query(query, TaskQuery)

    async def read(self, ctx: LiveContext) -> Any:
        q = self.query
        page = await ctx.store.scan(
            status=q.status,
            type_name=q.type,
            priority=q.priority,
            since_us=int(q.since.timestamp() * 1e6) if q.since else None,
            until_us=int(q.until.timestamp() * 1e6) if q.until else None,
            error_text=q.error,
            limit=q.limit,
            cursor=q.cursor,
        )
        rows = [
            {
                "id": r["id"],
                "created_at": r.get("created_at"),
                "type": r.get("type"),
                "priority": r.get("priority"),
                "status": r.get("status"),
                "attempts": r.get("attempts"),
                "worker": r.get("worker"),
                "error": truncate(r.get("error"), LIST_ERROR_CHARS),
            }
            for r in page.items
        ]
        return {
            "items": rows,
            "scanned": page.scanned,
            "bounded": page.bounded,
            "more": bool(page.next_cursor),
        }


class TaskDetail:
    """``task:<id>``: the task's changing fields and its timeline, read incrementally from the
    lifecycle stream (each tick reads only the events added since the last)."""

    def __init__(self, arg: str, query: dict[str, str]) -> None:
        self.task_id = _arg(arg, "task id")
        self._after: str | None = None  # the last stream entry examined
        self._events: list[dict[str, str]] = []

    async def read(self, ctx: LiveContext) -> Any:
        client, keys = ctx.redis, ctx.keys
        start = self._after
        if start is None:
            created_us = await client.hget(keys.task(self.task_id), "created_us")
            start = f"{max(0, int(created_us) // 1000 - 1)}" if created_us and created_us.isdigit() else "-"
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.task(self.task_id))
            pipe.xrange(keys.task_events, min=start, max="+", count=TIMELINE_SCAN)
            raw, entries = await pipe.execute()
        if not raw:
            return {"error": f"task {self.task_id} not found"}
        wanted = self.task_id.encode()
        for entry_id, fields in entries:
            self._after = "(" + entry_id.decode()
            if fields.get(b"id") == wanted:
                self._events.append({k.decode(): v.decode() for k, v in fields.items() if k != b"id"})
        del self._events[:-MAX_EVENTS]
        if self._after is None:
            self._after = start
        record = for_display(readable_record(self.task_id, raw))
        return {**{f: record.get(f) for f in TASK_FIELDS}, "timeline": self._events}


class QueueDetail:
    """``queue:<name>``: counters, delayed messages (with ETA) and dead letters (with errors)."""

    def __init__(self, arg: str, query: dict[str, str]) -> None:
        self.name = _arg(arg, "queue name")

    async def read(self, ctx: LiveContext) -> Any:
        return await read_queue_detail(ctx.redis, ctx.keys, ctx.admin, self.name, MAX_LIST)


class WorkerDetail:
    """``worker:<id>``: desired state and command history with replies (the heartbeat and the
    process table come with the ``workers`` section, so card and table show the same beat)."""

    def __init__(self, arg: str, query: dict[str, str]) -> None:
        self.worker_id = _arg(arg, "worker id")

    async def read(self, ctx: LiveContext) -> Any:
        data = await read_worker_detail(ctx.redis, ctx.keys, self.worker_id)
        return {"desired": data["desired"], "commands": data["commands"]}


class AuditLog:
    """``audit?limit=&worker=&issuer=&action=&target=&since=&until=&cursor=``: a page of the audit
    log (``GET /api/audit``'s answer), one row per command, its outcome updated in place."""

    def __init__(self, arg: str, query: dict[str, str]) -> None:
        self.query: AuditQuery = _query(query, AuditQuery)

    async def read(self, ctx: LiveContext) -> Any:
        return await read_audit(ctx.redis, ctx.keys, self.query)


#: Every page section kind: ``kind -> Kind(label, parser)``. One row per kind.
SECTIONS: dict[str, Kind] = {
    "tasks": Kind("the task list", TaskList, most=MAX_TASK_LISTS),
    "task": Kind("this task", TaskDetail),
    "queue": Kind("this queue", QueueDetail),
    "worker": Kind("this worker's commands", WorkerDetail),
    "audit": Kind("the audit log", AuditLog, most=MAX_AUDIT_LISTS),
    "bandit": Kind("the bandit", BanditLive),
}


def split_key(key: str) -> tuple[str, str, dict[str, str]]:
    """``kind[:arg][?query]`` as (kind, unquoted arg, query dict); ValueError when malformed."""
    if not key or len(key) > MAX_KEY:
        raise ValueError(f"a section key has 1 to {MAX_KEY} characters")
    path, _, query = key.partition("?")
    kind, _, arg = path.partition(":")
    pairs = parse_qsl(query, keep_blank_values=False)
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("a query field is repeated")
    return kind, unquote(arg), dict(pairs)


def kind_of(key: str) -> str:
    """The kind part of a section key (``task`` of ``task:abc``)."""
    return key.partition("?")[0].partition(":")[0]


def parse_key(key: str) -> tuple[Kind, Section]:
    """The kind and a fresh reader for ``key``; ValueError (with the reason) when refused."""
    kind_name, arg, query = split_key(key)
    kind = SECTIONS.get(kind_name)
    if kind is None:
        raise ValueError(f"unknown section {kind_name!r}")
    return kind, kind.parse(arg, query)
