"""The outbox relay: submissions recorded in Redis reach RabbitMQ once confirmed, never lost.

With RabbitMQ as the broker a submission touches two systems. The coordinator answers 202 only
when the task is durable, so the submit script writes the task record *and* an outbox entry
(``Keys.outbox``, a Redis stream: ``q`` the queue to publish to, ``m`` Dramatiq's message) in the
one atomic call it makes today; nothing is published in the request. Relays (one in every
coordinator and every worker agent) read the stream through one consumer group
(``XREADGROUP``), publish each batch with publisher confirms (aio-pika; every publish of the batch
in flight at once, then every confirm awaited) and ``XACK`` + ``XDEL`` an entry only once RabbitMQ
confirmed it. A relay that dies leaves its read-but-unconfirmed entries pending under its name;
another relay takes them over once they are ``OUTBOX_CLAIM_AFTER`` old (``XAUTOCLAIM``). So an
entry is published at least once; one published twice (a relay killed between the confirm and
the ack) runs once, because the worker's start script recognises a task whose attempt already
runs or ended.

The relay also publishes the parked long delays (:class:`shared.transport.rabbitmq.LongDelays`)
whose time has come: one script moves them from the sorted set into the outbox atomically.

While RabbitMQ is unreachable the relay retries with capped exponential backoff; entries wait in
Redis (their count is in ``/health`` and ``opsdeck_outbox_entries``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq import spec
from dramatiq.common import q_name
from redis.exceptions import RedisError, ResponseError

from shared.settings import Settings
from shared.transport.queues import script_source
from shared.transport.rabbitmq import declared_queues
from shared.transport.urls import node_urls, redact, spread

log = logging.getLogger(__name__)

#: The consumer group every relay reads the outbox through.
GROUP = "relay"
#: Entries read (and published) per batch.
BATCH = 500
#: How long one read blocks waiting for new entries (ms); also the clock of claims and releases.
BLOCK_MS = 1000
#: Backoff after a failure (s): first, cap.
BACKOFF_FIRST, BACKOFF_CAP = 0.2, 5.0
#: One stream entry as redis-py reads it: id and fields.
Entry = tuple[bytes, dict[bytes, bytes]]
#: Parked long delays moved to the outbox per release call.
RELEASE_BATCH = 500
#: AMQP delivery mode of a message written to disk.
PERSISTENT = 2


class Unconfirmed(Exception):
    """RabbitMQ returned (unroutable) or nacked a publish: its entry stays in the outbox."""


def relay_name() -> str:
    """This process's consumer name in the group."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class RelayState:
    """What a relay knows about itself (for ``/health`` and metrics)."""

    connected: bool = False
    published: int = 0
    last_error: str | None = None
    last_publish: float | None = None
    #: Node URLs (redacted) in the order they are tried.
    nodes: list[str] = field(default_factory=list)


class OutboxRelay:
    """Publishes outbox entries to RabbitMQ (see the module docstring). ``run`` until cancelled."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        outbox: str,
        scheduled: str,
        urls: Sequence[str],
        queue_type: str,
        claim_after_ms: int,
        max_hold_ms: int,
        consumer: str | None = None,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.client = client
        self.block_ms = block_ms
        self.outbox = outbox
        self.scheduled = scheduled
        self.urls = list(urls)
        self.queue_type = queue_type
        self.claim_after_ms = claim_after_ms
        self.max_hold_ms = max_hold_ms
        self.consumer = consumer or relay_name()
        self.state = RelayState(nodes=[redact(u) for u in self.urls])
        self._release = client.register_script(script_source("outbox_release"))
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._node = 0
        self._backlog = (
            True  # own pending entries may exist (a restart under the same name, a failed publish)
        )
        self._next_claim = 0.0
        self._connecting = asyncio.Lock()

    async def run(self) -> None:
        """Relay until cancelled; failures are logged once per change and retried with backoff."""
        delay = BACKOFF_FIRST
        await self._ensure_group()
        while True:
            try:
                moved = await self.step()
                delay = BACKOFF_FIRST
                if not moved:
                    continue
            except asyncio.CancelledError:
                await self.close()
                raise
            except Exception as exc:
                self._note_failure(exc)
                await self._drop_connection()
                await asyncio.sleep(delay)
                delay = min(BACKOFF_CAP, delay * 2)

    async def step(self) -> int:
        """One round: release due long delays, take over stale entries, read and publish a batch;
        returns how many entries were published."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.block_ms / 1000
            await self._release(
                keys=[self.scheduled, self.outbox], args=[_now_ms() + self.max_hold_ms, RELEASE_BATCH]
            )
            await self._claim()
        entries = await self._read()
        if not entries:
            return 0
        channel = await self._ensure_channel()
        await self._publish(channel, entries)
        ids = [entry_id for entry_id, _ in entries]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.outbox, GROUP, *ids)
            pipe.xdel(self.outbox, *ids)
            await pipe.execute()
        self.state.published += len(ids)
        self.state.last_publish = time.time()
        return len(ids)

    async def close(self) -> None:
        await self._drop_connection()

    # -- Redis side --------------------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        while True:
            try:
                await self.client.xgroup_create(self.outbox, GROUP, id="0", mkstream=True)
                return
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    return
                raise
            except RedisError as exc:
                self._note_failure(exc)
                await asyncio.sleep(BACKOFF_FIRST)

    async def _claim(self) -> None:
        """Take over entries another relay read and did not confirm in time."""
        # redis-py answers a JUSTID claim with the claimed ids alone
        claimed = await self.client.xautoclaim(
            self.outbox, GROUP, self.consumer, self.claim_after_ms, start_id="0-0", count=BATCH, justid=True
        )
        if claimed:
            log.info("outbox: took over %d entries of a relay that stopped", len(claimed))
            self._backlog = True

    async def _read(self) -> list[Entry]:
        """Own pending entries first (after a failure or a takeover), then new ones."""
        if self._backlog:
            reply = await self.client.xreadgroup(GROUP, self.consumer, {self.outbox: "0"}, count=BATCH)
            entries = reply[0][1] if reply else []
            gone = [i for i, f in entries if not f]  # deleted after its confirm, ack not recorded
            if gone:
                await self.client.xack(self.outbox, GROUP, *gone)
            live = [(i, f) for i, f in entries if f]
            if live:
                return live
            self._backlog = False
        reply = await self.client.xreadgroup(
            GROUP, self.consumer, {self.outbox: ">"}, count=BATCH, block=self.block_ms
        )
        return reply[0][1] if reply else []

    # -- RabbitMQ side -----------------------------------------------------------------------------
    async def probe(self) -> None:
        """Make sure the relay has a channel to RabbitMQ (connect now if it has none); raises
        when no node answers (for ``/health``: bound it with ``asyncio.timeout``)."""
        await self._ensure_channel()

    async def _ensure_channel(self) -> AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        async with self._connecting:  # the relay's loop and a health probe may both ask
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            return await self._connect()

    async def _connect(self) -> AbstractChannel:
        await self._drop_connection()
        url = self.urls[self._node % len(self.urls)]
        self._node += 1  # the next reconnect tries the next node
        self._connection = await aio_pika.connect(url, timeout=5)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._declared = set()
        self.state.connected = True
        if self.state.last_error is not None:
            log.info("outbox: publishing to RabbitMQ again (%s)", redact(url))
            self.state.last_error = None
        return self._channel

    async def _publish(self, channel: AbstractChannel, entries: list[Entry]) -> None:
        """Publish every entry, all in flight at once; raises unless RabbitMQ confirmed them all
        (:class:`Unconfirmed` for one it returned unroutable or nacked).

        Through aio-pika's own aiormq channel with ``wait=False``: aio-pika's ``Exchange.publish``
        has aiormq hold the channel's lock until each frame is written, so a batch went out about
        one message per three loop turns. Measured 2026-12-03 on the 2-vCPU VM relaying 4,500
        entries into a quorum queue on a private node (cProfile, deterministic counts): 13,757
        loop turns and 3.44 M Python calls through aio-pika, 4,700 turns and 2.39 M calls this
        way; the rate (noisy, others' tests running) went from 934-1,011 to 1,230-1,534 entries/s.
        ``mandatory`` publishes
        that RabbitMQ cannot route come back as a return, which aio-pika hands back as a result,
        not an error: counted here as unconfirmed, so the entry stays in the outbox."""
        self._backlog = True  # until the batch is confirmed and acked, it is ours and pending
        for queue in {fields[b"q"].decode() for _, fields in entries}:
            await self._declare(channel, queue)
        underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, aiormq.Channel)  # aio-pika's channel is aiormq's (wait=False is its)
        results = await asyncio.gather(
            *(
                underlay.basic_publish(
                    fields[b"m"],
                    routing_key=fields[b"q"].decode(),
                    properties=spec.Basic.Properties(delivery_mode=PERSISTENT),
                    mandatory=True,
                    timeout=30,
                    wait=False,
                )
                for _, fields in entries
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
            if not isinstance(result, spec.Basic.Ack):
                self._declared = set()  # a queue may be gone: declare again before the retry
                raise Unconfirmed(f"RabbitMQ did not confirm a publish ({type(result).__name__})")
        self._backlog = False

    async def _declare(self, channel: AbstractChannel, queue: str) -> None:
        canonical = q_name(queue)
        if canonical in self._declared:
            return
        for name, arguments in declared_queues(canonical, self.queue_type):
            await channel.declare_queue(name, durable=True, arguments=arguments)
        self._declared.add(canonical)

    async def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self.state.connected = False
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:
                log.debug("outbox: closing the connection failed", exc_info=True)

    def _note_failure(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"[:200]
        if text != self.state.last_error:
            log.warning("outbox: cannot publish (%s); entries stay in Redis, retrying", text)
        self.state.last_error = text


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def outbox_depth(client: aioredis.Redis, outbox: str) -> dict[str, Any]:
    """Entries waiting in the outbox and how many of them a relay read but has not confirmed."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(outbox)
        pipe.xpending(outbox, GROUP)
        try:
            length, pending = await pipe.execute()
        except ResponseError:  # no group yet: no relay ever ran
            return {"entries": await client.xlen(outbox), "pending": 0}
    return {"entries": int(length), "pending": int(pending["pending"]) if pending else 0}


def relay_for(settings: Settings, client: aioredis.Redis) -> OutboxRelay:
    """The relay of these settings (``client``: a Redis client of its own; a read blocks on it)."""
    assert settings.broker_url is not None
    keys = settings.keys
    return OutboxRelay(
        client,
        outbox=keys.outbox,
        scheduled=keys.outbox_scheduled,
        urls=spread(node_urls(settings.broker_url)),
        queue_type=settings.rabbitmq_queue_type,
        claim_after_ms=int(settings.outbox_claim_after * 1000),
        max_hold_ms=int(settings.rabbitmq_max_hold * 1000),
        # a blocking read must end well inside the socket timeout
        block_ms=max(50, min(BLOCK_MS, int(settings.redis_timeout * 500))),
    )


class RelayThread:
    """A relay on an event loop of its own, in a daemon thread (for the synchronous worker agent)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.relay: OutboxRelay | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the relay (entries it read and did not confirm are taken over later)."""
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)

    def _run(self) -> None:
        from shared.redis import async_client

        async def main() -> None:
            client = async_client(self.settings, max_connections=4)
            self.relay = relay_for(self.settings, client)
            try:
                await self.relay.run()
            finally:
                await client.aclose()

        self._task = self._loop.create_task(main())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()
