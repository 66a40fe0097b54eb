"""Bulk task actions: retry, cancel or delete the tasks an operator selected (or every task
matching a filter of the tasks page), and clean finished records by age.

Each is one audited command whose reason is its result summary ("retried 12, skipped 1 (not
failed)"). Each is bounded: at most BULK_MAX tasks per command (the error says so when a filter
matches more) and CLEAN_MAX records per clean; the indexes are read in ZRANGE pages, never with
KEYS. A retry goes through :func:`dashboard.api_tasks.retry_task`, the retry button's path (one
new task per failure however often it is asked); a cancel through the task store's cancel
script (a task that has started or ended is skipped and counted); a delete or clean removes only
finished records (:meth:`shared.taskstore.TaskStore.delete_finished`).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Literal
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.api_tasks import TaskFilter, TaskQuery, retry_task, search
from dashboard.appkeys import KEYS, REDIS, STORE, USER
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.task_types import task_types
from shared.tasks import TaskStatus
from shared.web import json_response, parse_query, read_json

#: Most tasks one bulk command acts on (a filter matching more is refused, naming the bound).
BULK_MAX = 1000
#: Most index entries a filter's matching walks (beyond: refused, narrow the filter).
BULK_SCAN_MAX = 50_000
#: Most records one clean deletes (a clean matching more is refused, naming the bound).
CLEAN_MAX = 10_000
#: Index entries read per ZRANGE page by a clean.
CLEAN_PAGE = 500
#: Statuses a retry takes (a queued, running or retrying task would run twice) and a delete
#: or clean removes (a task that has not finished still has its message with the broker).
RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELED})
FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELED})
VERBS = {"retry": "retried", "cancel": "canceled", "delete": "deleted"}


class Bulk(BaseModel):
    """Body of ``POST /api/tasks:bulk``: an action and either the selected ids or a filter."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["retry", "cancel", "delete"]
    ids: list[str] | None = Field(
        default=None, min_length=1, max_length=BULK_MAX, description=f"Selected task ids (at most {BULK_MAX})"
    )
    filter: TaskFilter | None = Field(
        default=None, description=f"Every task matching it instead (refused when more than {BULK_MAX} match)"
    )


class Clean(BaseModel):
    """Body of ``POST /api/tasks:clean``: which finished records, how old; ``preview`` counts only."""

    model_config = ConfigDict(extra="forbid")
    type: str | None = Field(default=None, max_length=64, description="One task type (default: every type)")
    status: TaskStatus | None = Field(
        default=None, description="One finished status (default: succeeded, failed, dead and canceled)"
    )
    older_than_hours: float = Field(gt=0, le=24 * 366, description="Created longer ago than this")
    preview: bool = Field(
        default=False, strict=True, description="Count what would be deleted, delete nothing (true/false)"
    )


def summary(verb: str, done: int, skipped: Counter[str]) -> str:
    """``retried 12, skipped 3 (2 not failed, 1 not found)``; ``skipped 1 (not failed)`` for one reason."""
    text = f"{verb} {done}"
    total = sum(skipped.values())
    if total:
        reasons = [f"{n} {why}" if len(skipped) > 1 else why for why, n in skipped.most_common()]
        text += f", skipped {total} ({', '.join(reasons)})"
    return text


async def matching_ids(request: web.Request, flt: TaskFilter) -> list[str]:
    """Ids of the tasks matching ``flt``, newest first (the tasks page's search, page after page);
    ValidationFailed when more than BULK_MAX match or the walk passes BULK_SCAN_MAX entries."""
    ids: list[str] = []
    scanned, cursor = 0, None
    while True:
        query = TaskQuery(**flt.model_dump(exclude_none=True), limit=100, cursor=cursor)
        page = await search(request, query)
        ids += [r["id"] for r in page.items if "id" in r]
        scanned += page.scanned
        if len(ids) > BULK_MAX:
            raise ValidationFailed(
                f"more than {BULK_MAX} tasks match this filter; one bulk command acts on at most "
                f"{BULK_MAX}: narrow the filter (status, type, time window)",
                fields=[{"loc": ["body", "filter"], "msg": f"matches more than {BULK_MAX} tasks"}],
            )
        cursor = page.next_cursor
        if cursor is None:
            return ids
        if scanned >= BULK_SCAN_MAX:
            raise ValidationFailed(
                f"this filter examined {scanned} tasks without reaching the end; narrow it (a time window)",
                fields=[{"loc": ["body", "filter"], "msg": f"examines more than {BULK_SCAN_MAX} tasks"}],
            )


async def count(request: web.Request) -> web.Response:
    """``GET /api/tasks/count?type=&status=&priority=&since=&until=&error=``: how many tasks a bulk
    command on this filter would act on (what the page shows before it asks to confirm)."""
    flt = parse_query(request, TaskFilter)
    try:
        ids = await matching_ids(request, flt)
    except ValidationFailed as exc:
        return json_response({"count": None, "limit": BULK_MAX, "too_many": True, "message": exc.message})
    return json_response({"count": len(ids), "limit": BULK_MAX, "too_many": False})


async def statuses(request: web.Request, ids: list[str]) -> list[str | None]:
    """The status of each task (None when unknown or expired), one pipelined round trip."""
    keys = request.app[KEYS]
    async with request.app[REDIS].pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(keys.task(task_id), "status")
        replies = await pipe.execute()
    return [r.decode() if r else None for r in replies]


async def bulk_retry(request: web.Request, ids: list[str], subject: str) -> tuple[int, Counter[str]]:
    """Retry the failed, dead or canceled ones through the retry button's path."""
    done, skipped = 0, Counter[str]()
    for task_id, status in zip(ids, await statuses(request, ids), strict=True):
        if status is None:
            skipped["not found"] += 1
        elif status not in RETRYABLE:
            skipped["not failed"] += 1
        else:
            try:
                retried = await retry_task(request.app, task_id, subject)
            except (NotFound, ValidationFailed) as exc:
                skipped[exc.message[:80]] += 1
                continue
            if retried.created:
                done += 1
            else:
                skipped["already retried"] += 1
    return done, skipped


async def bulk_cancel(request: web.Request, ids: list[str]) -> tuple[int, Counter[str]]:
    """Cancel the queued or retry-waiting ones (the cancel script decides; an ended one is skipped)."""
    done, skipped = 0, Counter[str]()
    store = request.app[STORE]
    for task_id, status in zip(ids, await statuses(request, ids), strict=True):
        if status is None:
            skipped["not found"] += 1
        elif status == TaskStatus.CANCELED:
            skipped["already canceled"] += 1
        elif status in FINISHED:
            skipped["finished"] += 1
        else:
            try:
                await store.cancel(task_id)
                done += 1
            except NotFound:
                skipped["not found"] += 1
            except Conflict:
                skipped["running" if status == TaskStatus.RUNNING else "started"] += 1
    return done, skipped


async def bulk_delete(request: web.Request, ids: list[str]) -> tuple[int, Counter[str]]:
    """Delete the finished records (a task that has not finished is skipped)."""
    outcomes = await request.app[STORE].delete_finished(ids)
    skipped = Counter(
        "not found" if o == "unknown" else "not finished" for o in outcomes.values() if o != "deleted"
    )
    return sum(o == "deleted" for o in outcomes.values()), skipped


async def bulk(request: web.Request) -> web.Response:
    """``POST /api/tasks:bulk`` ``{action, ids | filter}``: one audited command, its summary."""
    user = request[USER]
    body = await read_json(request, Bulk)
    if (body.ids is None) == (body.filter is None):
        raise ValidationFailed(
            "give either ids (the selected tasks) or filter (every task matching it)",
            fields=[{"loc": ["body", "ids"], "msg": "exactly one of ids and filter"}],
        )
    if body.ids is not None:
        ids, target = list(dict.fromkeys(body.ids)), f"{len(set(body.ids))} selected tasks"
    else:
        assert body.filter is not None
        ids = await matching_ids(request, body.filter)
        query = urlencode(body.filter.model_dump(mode="json", exclude_none=True))
        target = f"{len(ids)} tasks matching {query or 'no filter'}"
    if body.action == "retry":
        done, skipped = await bulk_retry(request, ids, user.subject)
    elif body.action == "cancel":
        done, skipped = await bulk_cancel(request, ids)
    else:
        done, skipped = await bulk_delete(request, ids)
    text = summary(VERBS[body.action], done, skipped)
    client, keys = request.app[REDIS], request.app[KEYS]
    await audit.record(client, keys, f"tasks.bulk_{body.action}", target, user.subject, reason=text)
    return json_response(
        {"action": body.action, "matched": len(ids), "done": done, "skipped": dict(skipped), "summary": text}
    )


async def old_records(request: web.Request, body: Clean) -> list[str]:
    """Ids of the finished records ``body`` names, oldest first (ZRANGEBYSCORE pages of each
    status index up to the cut-off; with a type, each page's types in one pipelined read);
    ValidationFailed past CLEAN_MAX."""
    client, keys = request.app[REDIS], request.app[KEYS]
    if body.type is not None and body.type not in task_types():
        raise ValidationFailed(
            f"unknown task type {body.type!r}", fields=[{"loc": ["body", "type"], "msg": "not a task type"}]
        )
    if body.status is not None and body.status not in FINISHED:
        raise ValidationFailed(
            "only finished records are cleaned",
            fields=[{"loc": ["body", "status"], "msg": "one of succeeded, failed, dead, canceled"}],
        )
    cutoff_us = int((time.time() - body.older_than_hours * 3600) * 1e6)
    found: list[str] = []
    for status in [body.status] if body.status else sorted(FINISHED):
        offset = 0
        while True:
            page = await client.zrangebyscore(
                keys.tasks_by_status(status), "-inf", cutoff_us, start=offset, num=CLEAN_PAGE
            )
            offset += len(page)
            ids = [m.decode() for m in page]
            if body.type is not None and ids:
                async with client.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.hget(keys.task(task_id), "type")
                    types = await pipe.execute()
                ids = [i for i, t in zip(ids, types, strict=True) if t == body.type.encode()]
            found += ids
            if len(found) > CLEAN_MAX:
                raise ValidationFailed(
                    f"more than {CLEAN_MAX} records match; one clean deletes at most {CLEAN_MAX}: choose an "
                    "older age, one type or one status",
                    fields=[{"loc": ["body", "older_than_hours"], "msg": f"matches more than {CLEAN_MAX}"}],
                )
            if len(page) < CLEAN_PAGE:
                break
    return found


async def clean(request: web.Request) -> web.Response:
    """``POST /api/tasks:clean`` ``{type, status, older_than_hours, preview}``: delete finished
    records created longer ago than that (preview: only count them); one audited command."""
    user = request[USER]
    body = await read_json(request, Clean)
    ids = await old_records(request, body)
    what = f"{body.status or 'finished'} {body.type or 'tasks'} older than {body.older_than_hours:g} h"
    answer = {"preview": body.preview, "matched": len(ids), "deleted": 0, "limit": CLEAN_MAX, "what": what}
    if body.preview:
        return json_response(answer)
    done, skipped = await bulk_delete(request, ids)
    text = summary("deleted", done, skipped)
    await audit.record(request.app[REDIS], request.app[KEYS], "tasks.clean", what, user.subject, reason=text)
    return json_response({**answer, "deleted": done, "summary": text})
