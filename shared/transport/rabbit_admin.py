"""The dashboard's and the agent's side of the RabbitMQ transport: :class:`RabbitQueueAdmin`
(:class:`shared.transport.api.QueueAdmin`) and :class:`RabbitUpkeep`
(:class:`shared.transport.api.BrokerUpkeep`).

RabbitMQ keeps the messages; Opsdeck's Redis keeps the task records, the outbox and the parked
long delays (see :mod:`shared.transport.rabbitmq` and :mod:`shared.transport.outbox`). What each
side can know:

- **Counters** come from RabbitMQ. With the management API (``RABBITMQ_MANAGEMENT_URL``) one HTTP
  GET gives every queue's ready and unacknowledged counts: ready = the queue's ready messages,
  in progress = its unacknowledged ones (delivered to a worker, prefetched or running), delayed =
  everything in its ``.DQ`` (ready or held unacked by a worker until its ETA), dead = everything in
  its ``.XQ``. The GET asks for the queues' own totals (``disable_stats``): a classic queue's
  are current, a quorum queue's are refreshed every ``collect_statistics_interval`` (5 s by
  default), so they lag by up to that much. Without it, AMQP can only tell a queue's *ready*
  count (a passive declare); the other columns are None and the row says ``"counts":
  "ready-only"``. Delays parked in Redis (longer than ``RABBITMQ_MAX_HOLD``) are not counted in
  ``delayed``; :meth:`RabbitQueueAdmin.delayed_messages` lists them.
- **Messages** cannot be browsed in RabbitMQ without consuming them, so the dead letters and
  the delayed messages are read from the task records: the tasks that ended ``dead`` or
  ``failed`` (what Dramatiq dead-letters into the ``.XQ``) and the tasks ``retrying`` (their next
  attempt waits in the ``.DQ``, or parked in Redis), of that queue.
- **Retrying a dead letter** requeues its *task* (ids are task ids): one script makes the
  record queued and puts the task's message, rebuilt exactly as the submit script builds it,
  into the outbox. RabbitMQ's copy stays in the ``.XQ`` until its TTL (7 days), so the ``dead``
  counter keeps counting it until then.
- **Purge** takes the queue's ready messages off with ``basic.get`` and acks each batch once its
  queued records are canceled (a batch whose ack is lost is delivered again and skipped by the
  worker: its tasks are canceled). Messages a worker holds already are not touched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import aiohttp
import orjson
import pika
import pika.exceptions
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity
from dramatiq.common import dq_name, q_name, xq_name

from shared.errors import Unavailable, Unsupported
from shared.keys import Keys
from shared.store import MAX_TRACEBACK_CHARS
from shared.transport.api import RetryOutcome
from shared.transport.queues import DEAD_LETTER_MAX, PURGE_BATCH, PURGE_MAX, priority_of, script_source
from shared.transport.rabbitmq import redact

#: Statuses whose tasks' messages Dramatiq dead-lettered into the ``.XQ`` (rejected after the
#: last retry, or failed with an exception the actor ``throws``): the RabbitMQ dead letters.
DEAD_STATUSES = ("dead", "failed")
#: Index entries read per round trip when walking a status index for one queue's tasks.
SCAN_CHUNK = 500
#: Most entries of one status index examined per request (the other queues' tasks included).
SCAN_MAX = 10_000
#: Most parked long delays examined per request.
PARKED_SCAN_MAX = 10_000
#: The management API's columns Opsdeck reads.
MANAGEMENT_COLUMNS = "name,messages_ready,messages_unacknowledged"
#: Seconds one broker request (HTTP or AMQP) may take.
DEFAULT_TIMEOUT = 3.0
#: ``counts`` of a stats row: every column known, or only ``ready`` (no management API).
COUNTS_ALL, COUNTS_READY_ONLY = "all", "ready-only"


class RabbitUnreachable(Unavailable):
    """RabbitMQ (or its management API) cannot be reached or refused the request (503)."""

    code = "broker_unavailable"


# -- the management API, shared by the async admin and the sync upkeep ------------------------------
@dataclass(frozen=True)
class Management:
    """Where ``GET /api/queues/<vhost>`` is and how to authenticate (from ``RABBITMQ_MANAGEMENT_URL``,
    e.g. ``http://user:pass@127.0.0.1:15672``, optionally with a path prefix)."""

    queues_url: str
    authorization: str | None
    #: The URL without its password (for error messages).
    shown: str

    @classmethod
    def parse(cls, management_url: str, vhost: str) -> Management:
        parts = urlsplit(management_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an HTTP URL: {redact(management_url)!r}")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + parts.path.rstrip("/")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode()
        # disable_stats: the queues' own totals, without the rates and samples the management
        # database aggregates (cheaper, and fresher: a classic queue's counts are current)
        query = f"disable_stats=true&enable_queue_totals=true&columns={MANAGEMENT_COLUMNS}"
        url = f"{base}/api/queues/{quote(vhost, safe='')}?{query}"
        return cls(queues_url=url, authorization=authorization, shown=redact(management_url))

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}


def vhost_of(broker_url: str) -> str:
    """The virtual host an ``amqp://`` URL names (``/`` when its path is empty or ``/``, as pika)."""
    path = urlsplit(broker_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_counts(rows: Any) -> dict[str, tuple[int, int]]:
    """``{queue: (ready, unacknowledged)}`` from the management API's queue list (a figure the
    API has not collected yet counts 0)."""
    if not isinstance(rows, list):
        raise RabbitUnreachable("RabbitMQ management API: the queue list is not a JSON array")
    return {
        str(row["name"]): (int(row.get("messages_ready") or 0), int(row.get("messages_unacknowledged") or 0))
        for row in rows
        if isinstance(row, dict) and "name" in row
    }


def _total(counts: dict[str, tuple[int, int]], name: str) -> int:
    ready, unacked = counts.get(name, (0, 0))
    return ready + unacked


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _json(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode(errors="replace")


class RabbitQueueAdmin:
    """:class:`shared.transport.api.QueueAdmin` of the RabbitMQ transport (see the module docstring).

    ``client``: the app's async Redis client (task records, outbox, parked delays); ``urls``: the
    AMQP node URLs (``BROKER_URL`` split by :func:`shared.transport.rabbitmq.node_urls`), tried in
    order; ``management_url``: ``RABBITMQ_MANAGEMENT_URL`` or None. The AMQP connection and the
    HTTP session are opened on first use and kept; :meth:`aclose` closes them."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        events_maxlen: int,
        *,
        urls: Sequence[str],
        management_url: str | None = None,
        vhost: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not urls:
            raise ValueError("RabbitQueueAdmin needs at least one AMQP URL")
        self.client = client
        self.keys = keys
        self.events_maxlen = events_maxlen
        self.urls = list(urls)
        self.vhost = vhost if vhost is not None else vhost_of(self.urls[0])
        self.management = Management.parse(management_url, self.vhost) if management_url else None
        self.timeout = timeout
        self._retry = client.register_script(script_source("rabbit_dead_retry"))
        self._cancel = client.register_script(script_source("rabbit_purge_cancel"))
        self._session: aiohttp.ClientSession | None = None
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()  # one passive-declare round at a time on the shared channel
        self._connecting = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the AMQP connection and the HTTP session (the Redis client is its owner's)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self._drop_connection()

    # -- counters ----------------------------------------------------------------------------------
    async def stats(self, queues: list[str], paused: set[str]) -> list[dict[str, Any]]:
        """Rows ``{name, priority, ready, in_progress, delayed, dead, paused, counts}``."""
        return await self.stats_from([], queues, paused)

    def stats_commands(self, pipe: Any, queues: list[str]) -> int:
        """Nothing: the counters are RabbitMQ's, read by :meth:`stats_from`."""
        return 0

    async def stats_from(
        self, replies: list[Any], queues: list[str], paused: set[str]
    ) -> list[dict[str, Any]]:
        """The counters from RabbitMQ: one management GET, else one passive declare per queue
        (ready only); raises :class:`RabbitUnreachable` when the broker cannot be asked."""
        if self.management is not None:
            counts = await self._management_counts(self.management)
            return [
                {
                    "name": q,
                    "priority": priority_of(q),
                    "ready": counts.get(q, (0, 0))[0],
                    "in_progress": counts.get(q, (0, 0))[1],
                    "delayed": _total(counts, dq_name(q)),
                    "dead": _total(counts, xq_name(q)),
                    "paused": q in paused,
                    "counts": COUNTS_ALL,
                }
                for q in queues
            ]
        ready = await self._ready_counts(queues)
        return [
            {
                "name": q,
                "priority": priority_of(q),
                "ready": ready[q],
                "in_progress": None,
                "delayed": None,
                "dead": None,
                "paused": q in paused,
                "counts": COUNTS_READY_ONLY,
            }
            for q in queues
        ]

    async def _management_counts(self, management: Management) -> dict[str, tuple[int, int]]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(management.queues_url, headers=management.headers) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    raise RabbitUnreachable(
                        f"RabbitMQ management API at {management.shown} answered {resp.status}: {detail}"
                    )
                rows = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RabbitUnreachable(
                f"RabbitMQ management API at {management.shown} cannot be reached ({_why(exc)})"
            ) from exc
        return management_counts(rows)

    async def _ready_counts(self, queues: list[str]) -> dict[str, int]:
        """Each queue's ready count by passive declare (a queue not declared yet counts 0)."""
        async with self._lock:
            try:
                return await self._declare_passively(queues)
            except (AMQPError, OSError, TimeoutError):
                await self._drop_connection()  # a connection gone stale (a broker restart): once more
            try:
                return await self._declare_passively(queues)
            except (AMQPError, OSError, TimeoutError) as exc:
                await self._drop_connection()
                raise RabbitUnreachable(f"RabbitMQ cannot be asked for queue depths ({_why(exc)})") from exc

    async def _declare_passively(self, names: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in names:
            channel = await self._shared_channel()
            try:
                queue = await channel.declare_queue(q_name(name), passive=True, timeout=self.timeout)
            except ChannelNotFoundEntity:  # RabbitMQ closed the channel; the next name opens another
                counts[name] = 0
                continue
            counts[name] = int(queue.declaration_result.message_count or 0)
        return counts

    # -- AMQP connection -----------------------------------------------------------------------------
    async def _connected(self) -> AbstractConnection:
        """The kept connection, or a new one to the first node that answers."""
        async with self._connecting:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            await self._drop_connection()
            failures = []
            for url in self.urls:
                try:
                    self._connection = await aio_pika.connect(url, timeout=self.timeout)
                    return self._connection
                except (AMQPError, OSError, TimeoutError) as exc:
                    failures.append(f"{redact(url)}: {_why(exc)}")
            raise RabbitUnreachable("RabbitMQ cannot be reached (" + "; ".join(failures) + ")")

    async def _shared_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await (await self._connected()).channel()
        return self._channel

    async def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # it is gone either way
                await connection.close()

    # -- messages, from the task records -----------------------------------------------------------
    async def _tasks_of(
        self, status: str, queue: str, want: int, fields: tuple[str, ...]
    ) -> list[tuple[str, list[bytes | None]]]:
        """Up to ``want`` tasks of ``queue`` in ``status``, newest created first, with ``fields``
        of each record (at most SCAN_MAX index entries examined)."""
        index = self.keys.tasks_by_status(status)
        found: list[tuple[str, list[bytes | None]]] = []
        seen: set[str] = set()
        start = 0
        while len(found) < want and start < SCAN_MAX:
            ids = [m.decode() for m in await self.client.zrevrange(index, start, start + SCAN_CHUNK - 1)]
            if not ids:
                break
            start += len(ids)
            async with self.client.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hmget(self.keys.task(task_id), "queue", *fields)
                replies = await pipe.execute()
            for task_id, values in zip(ids, replies, strict=True):
                if values[0] == queue.encode() and task_id not in seen and len(found) < want:
                    seen.add(task_id)
                    found.append((task_id, values[1:]))
        return found

    async def dead_letters(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` dead letters of ``queue``, read from the records of its tasks that
        ended dead or failed (RabbitMQ's ``.XQ`` cannot be browsed): ``id`` is the task id,
        ``dead_at`` when it ended (ms), ``retries`` Dramatiq's retry count (the record's round, as the
        Redis broker's dead letters count), ``traceback`` the recorded one
        (else the error), ``args`` ``[payload]``."""
        fields = ("type", "finished_at", "updated_at", "round", "traceback", "error", "payload")
        rows: list[dict[str, Any]] = []
        for status in DEAD_STATUSES:
            for task_id, (actor, finished, updated, round_, tb, error, payload) in await self._tasks_of(
                status, queue, limit, fields
            ):
                rows.append(
                    {
                        "id": task_id,
                        "actor": _text(actor),
                        "dead_at": _int(finished) or _int(updated) or 0,
                        "retries": _int(round_) or 0,
                        "traceback": (_text(tb) or _text(error) or "")[-MAX_TRACEBACK_CHARS:] or None,
                        "args": [_json(payload)],
                        "status": status,
                    }
                )
        rows.sort(key=lambda r: r["dead_at"], reverse=True)
        return rows[:limit]

    async def delayed_messages(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` delayed messages of ``queue``, soonest first: the long delays parked in
        Redis (their ETA known) and the tasks waiting for a retry (``retrying``; their message sits
        in the ``.DQ``, which cannot be browsed, so their ETA is None and they come last).

        Not seen: a delayed message that has no task record of its own (a message an actor sent
        with a delay, e.g. a deploy's next step) unless it is parked."""
        parked = await self._parked(dq_name(q_name(queue)), limit)
        rows = parked[:limit]
        listed = {r["id"] for r in rows}
        if len(rows) < limit:
            for task_id, (actor, round_, attempts) in await self._tasks_of(
                "retrying", queue, limit + len(listed), ("type", "round", "attempts")
            ):
                if task_id in listed or len(rows) >= limit:
                    continue
                next_round = _int(round_)
                rows.append(
                    {
                        "id": task_id,
                        "actor": _text(actor),
                        "eta": None,
                        "retries": next_round + 1 if next_round is not None else _int(attempts) or 0,
                        "held": "rabbitmq",
                    }
                )
        return rows

    async def _parked(self, delay_queue: str, limit: int) -> list[dict[str, Any]]:
        """The long delays parked for ``delay_queue`` (``<queue>.DQ``), soonest first."""
        rows: list[dict[str, Any]] = []
        start = 0
        while len(rows) < limit and start < PARKED_SCAN_MAX:
            entries = await self.client.zrange(self.keys.outbox_scheduled, start, start + SCAN_CHUNK - 1)
            if not entries:
                break
            start += len(entries)
            for raw in entries:
                entry = _json(raw)
                if not isinstance(entry, dict) or entry.get("q") != delay_queue:
                    continue
                message = _json(str(entry.get("m", "")).encode())
                if not isinstance(message, dict):
                    continue
                options = message.get("options") or {}
                rows.append(
                    {
                        "id": message.get("message_id"),
                        "actor": message.get("actor_name"),
                        "eta": options.get("eta"),
                        "retries": options.get("retries", 0),
                        "held": "redis",
                    }
                )
        return rows

    # -- changes -------------------------------------------------------------------------------------
    async def retry_dead_letters(self, queue: str, ids: list[str] | None, *, by: str) -> RetryOutcome:
        """Requeue dead (or failed) tasks of ``queue`` as a new attempt series: ``ids`` are task
        ids (None: every dead letter of the queue, up to DEAD_LETTER_MAX). One script per task
        makes the record queued and puts its rebuilt message into the outbox; a task that is no
        longer dead or failed is refused with its status; an unknown one is skipped."""
        outcome = RetryOutcome()
        if ids is None:
            ids = []
            for status in DEAD_STATUSES:
                ids += [t for t, _ in await self._tasks_of(status, queue, DEAD_LETTER_MAX - len(ids), ())]
        for task_id in ids:
            reply = await self._retry(
                keys=[self.keys.task(task_id), self.keys.task_events, self.keys.outbox],
                args=[task_id, queue, self.keys.tasks_status_prefix, _now_ms(), self.events_maxlen, by],
            )
            outcome.tally(task_id, task_id, reply)
        return outcome

    async def delete_dead_letters(self, queue: str, ids: list[str]) -> int:
        """Not with RabbitMQ: its ``.XQ`` cannot be browsed, so one message cannot be taken out of
        it (they expire by the queue's ``x-message-ttl``, 7 days); raises Unsupported (409)."""
        raise Unsupported(
            f"dead letters of {queue} cannot be deleted one by one with RabbitMQ as the broker (its "
            "dead-letter queue cannot be browsed; its messages expire after 7 days); retry them instead"
        )

    async def promote_delayed(self, queue: str, ids: list[str], *, by: str) -> RetryOutcome:
        """Not with RabbitMQ: a delayed message sits in the ``.DQ`` (or held by a worker until its
        ETA), which cannot be browsed; raises Unsupported (409)."""
        raise Unsupported(
            f"delayed messages of {queue} cannot be run early with RabbitMQ as the broker (its delay "
            "queue cannot be browsed); they run at their ETA"
        )

    async def purge(self, queue: str) -> int:
        """Take the ready messages off ``queue`` (at most PURGE_MAX), cancel their queued tasks,
        ack them; returns how many messages were dropped."""
        connection = await self._connected()
        try:
            channel = await connection.channel()
        except (AMQPError, OSError, TimeoutError) as exc:
            await self._drop_connection()
            raise RabbitUnreachable(f"RabbitMQ: no channel for the purge of {queue} ({_why(exc)})") from exc
        total = 0
        try:
            try:
                source = await channel.declare_queue(q_name(queue), passive=True, timeout=self.timeout)
            except ChannelNotFoundEntity:
                return 0  # never declared: nothing in it
            while total < PURGE_MAX:
                batch: list[AbstractIncomingMessage] = []
                while len(batch) < min(PURGE_BATCH, PURGE_MAX - total):
                    message = await source.get(no_ack=False, fail=False, timeout=self.timeout)
                    if message is None:
                        break
                    batch.append(message)
                if not batch:
                    break
                task_ids = [i for i in (_message_id(m.body) for m in batch) if i]
                if task_ids:
                    await self._cancel(
                        keys=[self.keys.task_events],
                        args=[self.keys.task_prefix, self.keys.tasks_status_prefix, _now_ms(),
                              self.events_maxlen, *task_ids],
                    )  # fmt: skip
                await batch[-1].ack(multiple=True)
                total += len(batch)
                if len(batch) < PURGE_BATCH:
                    break
        except (AMQPError, OSError, TimeoutError) as exc:  # the unacked batch returns to the queue
            raise RabbitUnreachable(
                f"RabbitMQ: the purge of {queue} stopped after {total} ({_why(exc)})"
            ) from exc
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):  # what is still unacked is requeued
                    await channel.close()
        return total


def _message_id(body: bytes) -> str | None:
    """The task id (Dramatiq's ``message_id``) of a message body; None when it is not one."""
    message = _json(body)
    if not isinstance(message, dict):
        return None
    mid = message.get("message_id")
    return mid if isinstance(mid, str) and mid else None


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RabbitUpkeep:
    """:class:`shared.transport.api.BrokerUpkeep` of the RabbitMQ transport.

    ``urls``: the AMQP node URLs, tried in order; ``management_url``: ``RABBITMQ_MANAGEMENT_URL``
    or None. Depths come from one management GET (urllib) when it is set, else from passive
    declares over one kept pika connection (reopened after a failure). Errors are raised as
    :class:`RabbitUnreachable` (a :class:`shared.errors.Unavailable`) naming what failed."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        management_url: str | None = None,
        vhost: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not urls:
            raise ValueError("RabbitUpkeep needs at least one AMQP URL")
        self.urls = list(urls)
        self.vhost = vhost if vhost is not None else vhost_of(self.urls[0])
        self.management = Management.parse(management_url, self.vhost) if management_url else None
        self.timeout = timeout
        self._connection: Any = None
        self._channel: Any = None

    def maintain(self, queues: Iterable[str]) -> None:
        """Nothing to do: RabbitMQ itself redelivers the unacked messages of a consumer whose
        connection closed (a killed process), and expires dead letters by the ``.XQ``'s
        ``x-message-ttl``. Parked long delays are released by the outbox relay."""
        return None

    def depths(self, queues: list[str]) -> dict[str, dict[str, int]]:
        """``{queue: {ready, delayed, dead}}``. With the management API: ready messages of the
        queue, all of its ``.DQ`` and of its ``.XQ``. Without it, ready counts only: the ``.DQ``'s
        messages held by workers until their ETA are not counted (the ``.XQ``'s are all ready)."""
        if self.management is not None:
            counts = self._management_counts(self.management)
            return {
                q: {
                    "ready": counts.get(q, (0, 0))[0],
                    "delayed": _total(counts, dq_name(q)),
                    "dead": _total(counts, xq_name(q)),
                }
                for q in queues
            }
        names = [n for q in queues for n in (q_name(q), dq_name(q), xq_name(q))]
        ready = self._ready_counts(names)
        return {
            q: {"ready": ready[q_name(q)], "delayed": ready[dq_name(q)], "dead": ready[xq_name(q)]}
            for q in queues
        }

    def close(self) -> None:
        """Close the kept connection (if any)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):  # it is gone either way
                connection.close()

    def _management_counts(self, management: Management) -> dict[str, tuple[int, int]]:
        request = urllib.request.Request(management.queues_url, headers=management.headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked
                rows = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RabbitUnreachable(
                f"RabbitMQ management API at {management.shown} answered {exc.code}"
            ) from exc
        except (OSError, orjson.JSONDecodeError) as exc:  # URLError is an OSError
            raise RabbitUnreachable(
                f"RabbitMQ management API at {management.shown} cannot be reached ({_why(exc)})"
            ) from exc
        return management_counts(rows)

    def _ready_counts(self, names: list[str]) -> dict[str, int]:
        try:
            return self._declare_passively(names)
        except (pika.exceptions.AMQPError, OSError):
            self.close()  # a connection gone stale (a broker restart): once more on a new one
        try:
            return self._declare_passively(names)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            nodes = ", ".join(redact(u) for u in self.urls)
            raise RabbitUnreachable(
                f"RabbitMQ ({nodes}) cannot be asked for queue depths ({_why(exc)})"
            ) from exc

    def _declare_passively(self, names: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in names:
            if name in counts:
                continue
            channel = self._open_channel()
            try:
                frame = channel.queue_declare(queue=name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                self._channel = None  # RabbitMQ closed it; the next name opens another
                counts[name] = 0
                continue
            counts[name] = int(frame.method.message_count)
        return counts

    def _open_channel(self) -> Any:
        if self._connection is None or not self._connection.is_open:
            self._connection = None
            parameters = []
            for url in self.urls:
                p = pika.URLParameters(url)
                p.socket_timeout = self.timeout
                p.stack_timeout = self.timeout
                p.blocked_connection_timeout = self.timeout
                parameters.append(p)
            self._connection = pika.BlockingConnection(parameters)
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel
