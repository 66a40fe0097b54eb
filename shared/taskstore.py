"""Async access to task records (coordinator and dashboard): submit, read, list, cancel and delete."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared import tracing
from shared.batcher import SubmitBatcher, Submitted
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import uuid4_text
from shared.ratelimit import SUBMIT_CLASS
from shared.resp import CRLF, EMPTY, PREFIXES, BulkCache, bulk, prefix
from shared.settings import Settings
from shared.store import decode_record, script_source
from shared.tasks import Priority, TaskStatus, TaskType, queue_name

log = logging.getLogger(__name__)

#: Largest page of ``GET /api/v1/tasks``.
MAX_LIMIT = 200
#: Index entries examined per list call when filters discard most of them.
MAX_SCAN = 2000
#: Most ids one prefix lookup (:meth:`TaskStore.find_ids`) returns.
MAX_ID_MATCHES = 50
#: Task ids per ``task_delete.lua`` call of :meth:`TaskStore.delete_finished`.
DELETE_CHUNK = 200
#: Arguments per task of ``submit.lua`` (after its fixed ones; see the script's header).
SUBMIT_TASK_ARGS = 14
#: The two trace-context arguments of a submission made while no span is current (or tracing is off).
NO_TRACE = EMPTY + EMPTY
#: The two trace-context arguments of a submission made inside an unsampled root request.
UNSAMPLED_TRACE = bulk([tracing.UNSAMPLED_TRACEPARENT.encode(), b""])


def payload_digest(type_name: str, payload: dict[str, Any], priority: Priority) -> str:
    """Digest of what was asked, to tell a replay from a different request with the same key."""
    canonical = orjson.dumps([type_name, payload, priority.value], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class TaskScan:
    """A page of :meth:`TaskStore.scan`: the tasks, the next page's cursor (None at the end), the
    index entries examined, and whether the scan stopped at MAX_SCAN before the page was full
    (more may match after ``next_cursor``)."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    scanned: int
    bounded: bool


class TaskStore:
    """Async access to task records (submission goes through a ScriptBatcher)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = keys = settings.keys
        #: The submit class's bucket (submit.lua checks it for submissions asking for it), or None.
        self.submit_limit = limit = settings.rate_limits.get(SUBMIT_CLASS)
        header = [
            keys.task_prefix, keys.tasks_all, keys.tasks_status_prefix, keys.tasks_type_prefix,
            keys.legacy_idempotency_prefix, keys.task_events, settings.dramatiq_namespace, settings.task_ttl,
            settings.task_events_maxlen, keys.queue_wakeups,
            limit.interval_us if limit else 0, limit.limit_us if limit else 0,
            keys.outbox if settings.rabbitmq else "", keys.tasks_ids,
        ]  # fmt: skip
        self.batcher = SubmitBatcher(
            client, settings.redis_timeout, [str(v).encode() for v in header], SUBMIT_TASK_ARGS
        )
        self._cancel = client.register_script(script_source("cancel"))
        self._delete = client.register_script(script_source("task_delete"))
        #: RESP of the names that repeat across submissions (queues, types, priorities, subjects)
        self._named = BulkCache()
        #: RESP of each subject's submit bucket key
        self._buckets = BulkCache()
        #: Whether submissions carry the current trace context (decided once: tracing.enabled()).
        self._traced = tracing.enabled()

    async def aclose(self) -> None:
        """Close the submission connection (the client is its owner's to close)."""
        await self.batcher.aclose()

    def submit(
        self,
        task_type: TaskType,
        payload: dict[str, Any],
        priority: Priority,
        *,
        subject: str,
        correlation_id: str,
        idempotency_key: str | None = None,
        rate_limit: bool = False,
        idempotency_scope: str | None = None,
    ) -> asyncio.Future[Submitted]:
        """Record and enqueue one task atomically (await the result). A seen idempotency key
        gives the first task (``created`` False), or Conflict when it named a different request.

        ``rate_limit``: take a token of ``subject``'s submit bucket in the same call (when the
        submit class has one); RateLimited, and nothing recorded, when it is empty.
        ``idempotency_scope``: whose keys ``idempotency_key`` is one of (default ``subject``; the
        dashboard's retries share one scope, so two operators retrying a task make one task)."""
        return self.submit_json(
            task_type,
            orjson.dumps(payload),
            priority,
            subject=subject,
            correlation_id=correlation_id,
            idempotency_key=idempotency_key,
            rate_limit=rate_limit,
            idempotency_scope=idempotency_scope,
        )

    def submit_json(
        self,
        task_type: TaskType,
        payload_json: bytes,
        priority: Priority,
        *,
        subject: str,
        correlation_id: str,
        idempotency_key: str | None = None,
        rate_limit: bool = False,
        idempotency_scope: str | None = None,
    ) -> asyncio.Future[Submitted]:
        """:meth:`submit` with the payload as JSON already (a validated ``encode_payload``)."""
        task_id = uuid4_text().encode()
        created = str(time.time_ns() // 1000).encode()
        named = self._named
        idem = key = digest = EMPTY
        if idempotency_key:  # the digest tells a replay from a different request with the same key
            idem = bulk([self.keys.idempotency(idempotency_scope or subject, idempotency_key).encode()])
            key = bulk([idempotency_key.encode()])
            digest = bulk([payload_digest(task_type.name, orjson.loads(payload_json), priority).encode()])
        bucket = (
            self._buckets[self.keys.rate_limit(SUBMIT_CLASS, subject)]
            if rate_limit and self.submit_limit is not None
            else EMPTY
        )
        cid = correlation_id.encode()
        queue = queue_name(task_type.queue_group, priority)
        trace = NO_TRACE
        traced = self._traced and not tracing.edge_unsampled()
        if self._traced and not traced:  # an unsampled root: the same two arguments every time
            trace = UNSAMPLED_TRACE
        elif traced:
            traceparent, tracestate = tracing.current_context()
            if traceparent:
                trace = bulk([traceparent.encode(), tracestate.encode()])
        # submit.lua's per-task arguments as RESP (shared.resp): the repeating ones from the
        # cache, the others behind their length prefixes, in one join. The script writes the
        # record's constant and derived fields and the Dramatiq message itself.
        submitted = self.batcher.submit(
            b"".join((
                PREFIXES[len(task_id)], task_id, CRLF, PREFIXES[len(created)], created, CRLF, idem,
                named[queue], named[task_type.name], named[priority],
                prefix(len(payload_json)), payload_json, CRLF, prefix(len(cid)), cid, CRLF,
                named[subject], key, digest, bucket, trace,
            ))
        )  # fmt: skip
        if traced:
            tracing.span_until(
                submitted, "tasks submit", {"db.system": "redis", "messaging.destination.name": queue}
            )
        return submitted

    async def get(self, task_id: str) -> dict[str, Any]:
        """The task record as the API shows it; NotFound when unknown or expired."""
        raw = await self.client.hgetall(self.keys.task(task_id))
        if not raw:
            raise NotFound(f"task {task_id} not found")
        return readable_record(task_id, raw)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a queued (or retry-waiting) task; Conflict once it has started or ended."""
        now_ms = time.time_ns() // 1_000_000
        reply = await self._cancel(
            keys=[self.keys.task(task_id), self.keys.task_events],
            args=[
                task_id,
                now_ms,
                self.settings.dramatiq_namespace,
                self.keys.tasks_status_prefix,
                self.settings.task_events_maxlen,
            ],
        )
        outcome = reply.decode() if isinstance(reply, bytes) else str(reply)
        if outcome == "":
            raise NotFound(f"task {task_id} not found")
        if outcome != TaskStatus.CANCELED:
            raise Conflict(f"task {task_id} is {outcome}; only queued tasks can be canceled")
        return await self.get(task_id)

    async def delete_finished(self, task_ids: list[str]) -> dict[str, str]:
        """Delete the records of finished tasks (succeeded, failed, dead, canceled) with their
        index entries, ``DELETE_CHUNK`` per script call; per id ``"deleted"``, ``"unknown"``, or
        the status of a task that has not finished (left alone)."""
        keys = self.keys
        out: dict[str, str] = {}
        for start in range(0, len(task_ids), DELETE_CHUNK):
            chunk = task_ids[start : start + DELETE_CHUNK]
            replies = await self._delete(
                keys=[keys.tasks_all, keys.tasks_ids],
                args=[keys.task_prefix, keys.tasks_status_prefix, keys.tasks_type_prefix, *chunk],
            )
            for task_id, reply in zip(chunk, replies, strict=True):
                text = reply.decode() if isinstance(reply, bytes) else str(reply)
                out[task_id] = "deleted" if text == "1" else text or "unknown"
        return out

    async def find_ids(self, prefix: str, limit: int = MAX_ID_MATCHES) -> tuple[list[str], bool]:
        """Ids of recorded tasks that start with ``prefix``, in id order, at most ``limit``, and
        whether there are more: one ``ZRANGEBYLEX`` on :attr:`~shared.keys.Keys.tasks_ids` (no
        scan). Ids whose record has expired may be among them until the agent trims the index."""
        low = prefix.encode()
        raw = await self.client.zrangebylex(
            self.keys.tasks_ids, b"[" + low, b"[" + low + b"\xff", start=0, num=limit + 1
        )
        ids = [m.decode() for m in raw]
        return ids[:limit], len(ids) > limit

    async def list(
        self,
        *,
        status: TaskStatus | None,
        type_name: str | None,
        limit: int,
        cursor: str | None,
        priority: Priority | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of tasks, newest first, and the cursor of the next page (None at the end);
        :meth:`scan` without the error text filter and the scan's counts."""
        page = await self.scan(
            status=status,
            type_name=type_name,
            limit=limit,
            cursor=cursor,
            priority=priority,
            since_us=since_us,
            until_us=until_us,
        )
        return page.items, page.next_cursor

    async def scan(
        self,
        *,
        status: TaskStatus | None,
        type_name: str | None,
        limit: int,
        cursor: str | None,
        priority: Priority | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        error_text: str | None = None,
    ) -> TaskScan:
        """A page of tasks, newest first.

        Filters: status, type and priority, a creation window ``since_us``..``until_us`` (µs,
        inclusive) and text in the error message (``error_text``, case-insensitive). The
        narrowest index (status, else type, else all) is walked by score, at most MAX_SCAN
        entries per call; the cursor resumes after the last entry examined."""
        keys = self.keys
        needle = error_text.casefold() if error_text else None
        index = (
            keys.tasks_by_status(status)
            if status
            else keys.tasks_by_type(type_name)
            if type_name
            else keys.tasks_all
        )
        low: int | str = since_us if since_us is not None else "-inf"
        max_score, after_id = (
            decode_cursor(cursor) if cursor else (str(until_us) if until_us is not None else "+inf", None)
        )
        items: list[dict[str, Any]] = []
        scanned = 0
        last: tuple[float, str] | None = None
        while len(items) < limit and scanned < MAX_SCAN:
            chunk = min(MAX_LIMIT, limit - len(items) + 50, MAX_SCAN - scanned)
            raw_entries = await self.client.zrevrangebyscore(
                index, max_score, low, start=0, num=chunk, withscores=True
            )
            entries = [
                (m.decode(), s)
                for m, s in raw_entries
                if not (after_id and s == float(max_score) and m.decode() >= after_id)
            ]
            if not entries:
                last = None
                break
            async with self.client.pipeline(transaction=False) as pipe:
                for member, _ in entries:
                    pipe.hgetall(keys.task(member))
                records = await pipe.execute()
            for (member, score), raw in zip(entries, records, strict=True):
                scanned += 1
                last = (score, member)
                if not raw:
                    continue  # expired; the agent's housekeeping trims the index
                record = readable_record(member, raw)
                if not _matches(record, type_name, status, priority, needle):
                    continue
                items.append(record)
                if len(items) == limit:
                    break
            if last is not None:
                max_score, after_id = repr(last[0]), last[1]
            if len(raw_entries) < chunk and len(items) < limit:
                last = None
                break
        next_cursor = encode_cursor(*last) if last is not None else None
        bounded = next_cursor is not None and len(items) < limit
        return TaskScan(items, next_cursor, scanned, bounded)


def _matches(
    record: dict[str, Any],
    type_name: str | None,
    status: TaskStatus | None,
    priority: Priority | None,
    needle: str | None,
) -> bool:
    """Whether a record passes :meth:`TaskStore.scan`'s filters (``needle``: casefolded error text)."""
    if type_name and record.get("type") != type_name:
        return False
    if status and record.get("status") != status:
        return False
    if priority and record.get("priority") != priority:
        return False
    return needle is None or needle in str(record.get("error") or "").casefold()


def readable_record(task_id: str, raw: dict[bytes, bytes]) -> dict[str, Any]:
    """:func:`~shared.store.decode_record`, which reads any stored hash; should it still fail on
    one, the record is shown as its id and a note (logged without a traceback: nothing renders
    one inside a request), never as a failed read of a whole list."""
    try:
        return decode_record(raw)
    except Exception as exc:  # one record must not fail a page of them
        log.warning("task %s: unreadable record (%s)", task_id, type(exc).__name__)
        return {"id": task_id, "_unreadable": f"record could not be read ({type(exc).__name__})"}


def encode_cursor(score: float, member: str) -> str:
    """Opaque cursor for the entry after which the next page starts."""
    return base64.urlsafe_b64encode(f"{score!r}|{member}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Inverse of encode_cursor; ValidationFailed on garbage."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member = raw.split("|", 1)
        float(score)
    except ValueError:
        raise ValidationFailed(
            "invalid cursor", fields=[{"loc": ["query", "cursor"], "msg": "not a cursor from this API"}]
        ) from None
    return score, member
