"""Bulk actions on the broker's messages: retry or delete selected dead letters of a queue, retry
every dead letter of every queue, run selected delayed messages now. All through the transport's
:class:`shared.transport.api.QueueAdmin` (so the same on Redis and RabbitMQ; what a broker cannot
do answers 409 ``unsupported`` naming why), each one audited command with its summary, at most
BULK_MAX messages."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.api_bulk import BULK_MAX, summary
from dashboard.api_queues import checked_queue_name, queue_rows
from dashboard.appkeys import KEYS, QUEUES, REDIS, USER
from shared.errors import ValidationFailed
from shared.transport.api import RetryOutcome
from shared.transport.queues import DEAD_LETTER_MAX
from shared.web import json_response, read_json


class DeadBulk(BaseModel):
    """Body of ``POST /api/queue/{name}/dead/bulk``: retry or delete the selected dead letters."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["retry", "delete"]
    ids: list[str] = Field(
        min_length=1, max_length=BULK_MAX, description="Task ids (or Redis message ids) of the dead letters"
    )


class DelayedRun(BaseModel):
    """Body of ``POST /api/queue/{name}/delayed/run``: the delayed messages to run now."""

    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(
        min_length=1, max_length=BULK_MAX, description="Task ids (or Redis message ids) of delayed messages"
    )


def resolve(ids: list[str], listed: list[dict[str, Any]]) -> tuple[list[str], int]:
    """The broker's ids (``message_id``, else ``id``) of the listed messages that ``ids`` name by
    task id or by that id; and how many of ``ids`` name none of them."""
    by_any: dict[str, str] = {}
    for m in listed:
        own = str(m.get("message_id") or m["id"])
        by_any[str(m["id"])] = by_any[own] = own
    found = list(dict.fromkeys(by_any[i] for i in ids if i in by_any))
    return found, sum(i not in by_any for i in dict.fromkeys(ids))


def outcome_summary(verb: str, outcome: RetryOutcome, missing: int) -> tuple[str, Counter[str]]:
    """The summary of a retry or run-now: done, and the refusals by reason."""
    skipped = Counter(r["reason"] for r in outcome.refused)
    if missing:
        skipped["not found"] += missing
    return summary(verb, outcome.requeued, skipped), skipped


async def dead_bulk(request: web.Request) -> web.Response:
    """``POST /api/queue/{name}/dead/bulk`` ``{action, ids}``: retry or delete selected dead letters."""
    user = request[USER]
    name = await checked_queue_name(request)
    body = await read_json(request, DeadBulk)
    admin = request.app[QUEUES]
    found, missing = resolve(body.ids, await admin.dead_letters(name, DEAD_LETTER_MAX))
    if body.action == "retry":
        outcome = await admin.retry_dead_letters(name, found, by=user.subject) if found else RetryOutcome()
        text, skipped = outcome_summary("retried", outcome, missing)
        done = outcome.requeued
    else:
        done = await admin.delete_dead_letters(name, found)  # RabbitMQ: Unsupported (409)
        gone = missing + len(found) - done
        skipped = Counter({"not found": gone}) if gone else Counter()
        text = summary("deleted", done, skipped)
    await audit.record(
        request.app[REDIS], request.app[KEYS], f"dead_letters.bulk_{body.action}",
        f"queue {name}: {len(body.ids)} selected", user.subject, reason=text,
    )  # fmt: skip
    return json_response({"queue": name, "done": done, "skipped": dict(skipped), "summary": text})


async def retry_all(request: web.Request) -> web.Response:
    """``POST /api/dead/retry``: every dead letter of every queue runs again (a new attempt series
    each); refused (422) when more than BULK_MAX are dead across the queues."""
    user = request[USER]
    rows = [r for r in await queue_rows(request) if r.get("dead") is None or r["dead"] > 0]
    total = sum(r["dead"] or 0 for r in rows)
    if total > BULK_MAX:
        raise ValidationFailed(
            f"{total} dead letters across the queues; one command retries at most {BULK_MAX}: "
            "retry queue by queue (the queue page) or select them",
            fields=[{"loc": ["body"], "msg": f"more than {BULK_MAX} dead letters"}],
        )
    admin = request.app[QUEUES]
    outcome, per_queue = RetryOutcome(), {}
    for row in rows:
        got = await admin.retry_dead_letters(row["name"], None, by=user.subject)
        outcome.requeued += got.requeued
        outcome.refused += got.refused
        if got.requeued or got.refused:
            per_queue[row["name"]] = got.requeued
    text, skipped = outcome_summary("retried", outcome, 0)
    text += f" across {len(per_queue)} queue{'s' if len(per_queue) != 1 else ''}"
    await audit.record(
        request.app[REDIS],
        request.app[KEYS],
        "dead_letters.retry_all",
        "every queue",
        user.subject,
        reason=text,
    )
    return json_response(
        {"done": outcome.requeued, "queues": per_queue, "skipped": dict(skipped), "refused": outcome.refused,
         "summary": text}
    )  # fmt: skip


async def delayed_run(request: web.Request) -> web.Response:
    """``POST /api/queue/{name}/delayed/run`` ``{ids}``: run delayed messages now (promote)."""
    user = request[USER]
    name = await checked_queue_name(request)
    body = await read_json(request, DelayedRun)
    admin = request.app[QUEUES]
    found, missing = resolve(body.ids, await admin.delayed_messages(name, DEAD_LETTER_MAX))
    outcome = await admin.promote_delayed(name, found, by=user.subject)  # RabbitMQ: Unsupported (409)
    gone = missing + len(found) - outcome.requeued - len(outcome.refused)  # no longer delayed: ran already
    text, skipped = outcome_summary("promoted", outcome, gone)
    await audit.record(
        request.app[REDIS], request.app[KEYS], "delayed.run_now", f"queue {name}: {len(body.ids)} selected",
        user.subject, reason=text,
    )  # fmt: skip
    return json_response({"queue": name, "done": outcome.requeued, "skipped": dict(skipped), "summary": text})
