"""Dramatiq's RabbitMQ broker as Opsdeck runs it: durable quorum (or classic) queues, publisher
confirms, fail-over over several node URLs, and delays that never outlive ``consumer_timeout``.

Nothing here re-implements what Dramatiq or RabbitMQ does: messages, acks, redelivery of a dead
consumer's messages (RabbitMQ does it when the channel closes), dead-lettering (``.XQ`` through
the queue's dead-letter arguments) and delays (``.DQ``, held by the worker until due) are
Dramatiq's. Opsdeck adds three things:

- **Queue type.** ``RABBITMQ_QUEUE_TYPE`` (``quorum``, the default, or ``classic``) becomes
  ``x-queue-type`` on every queue Dramatiq declares (the queue, its ``.DQ`` and its ``.XQ``). The
  outbox relay declares the same queues with the same arguments (:func:`queue_arguments` is the
  one place), so whoever declares first wins nothing: RabbitMQ refuses a queue declared twice
  with different arguments.
- **Long delays.** Dramatiq's delay queue is consumed at once and each message is held unacked
  by the worker until its ETA. RabbitMQ closes a channel whose delivery stays unacked longer than
  ``consumer_timeout`` (30 min by default; Bogdanp/dramatiq#827), which would redeliver every held
  message. So a delay longer than ``RABBITMQ_MAX_HOLD`` (default 10 min, keep it well under
  ``consumer_timeout``) is not published yet: it waits in Redis (``Keys.outbox_scheduled``, a
  sorted set scored by the time it may be published), and the outbox relay publishes it to the
  ``.DQ`` once less than ``RABBITMQ_MAX_HOLD`` remains (:mod:`shared.transport.outbox`).
- **Lost connections** are flagged on :attr:`OpsdeckRabbitBroker.connection_lost` like the Redis
  broker's, for the process's supervision loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from shared.transport.urls import is_rabbitmq, node_urls, redact

__all__ = ["is_rabbitmq", "node_urls", "redact"]

# pika logs every connection step at INFO and every channel the server closes (a passive declare
# of a queue not declared yet) as a WARNING; Dramatiq and Opsdeck report what matters themselves.
logging.getLogger("pika").setLevel(logging.WARNING)
logging.getLogger("pika.channel").setLevel(logging.ERROR)

#: Dramatiq's dead-letter TTL (ms), the same on both transports.
DEAD_MESSAGE_TTL_MS = 7 * 86_400_000
#: Values of ``RABBITMQ_QUEUE_TYPE``.
QUEUE_TYPES = ("quorum", "classic")


def queue_arguments(queue_name: str, queue_type: str) -> dict[str, Any]:
    """Arguments of ``queue_name`` (a queue or its ``.DQ``): dead letters to its ``.XQ``."""
    return {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": xq_name(queue_name),
    }


def dead_letter_queue_arguments(queue_type: str) -> dict[str, Any]:
    """Arguments of a ``.XQ``: dead letters expire after Dramatiq's TTL."""
    return {"x-queue-type": queue_type, "x-message-ttl": DEAD_MESSAGE_TTL_MS}


def declared_queues(queue_name: str, queue_type: str) -> list[tuple[str, dict[str, Any]]]:
    """Every queue Dramatiq declares for ``queue_name``, with its arguments."""
    canonical = q_name(queue_name)
    return [
        (canonical, queue_arguments(canonical, queue_type)),
        (dq_name(canonical), queue_arguments(dq_name(canonical), queue_type)),
        (xq_name(canonical), dead_letter_queue_arguments(queue_type)),
    ]


class LongDelays:
    """Where a delay longer than the hold limit waits until it may be published (Redis)."""

    def __init__(self, client: redis.Redis, key: str, max_hold_ms: int) -> None:
        self.client = client
        self.key = key
        self.max_hold_ms = max_hold_ms

    def park(self, message: Message[Any], eta_ms: int) -> None:
        """Keep ``message`` (already addressed to its ``.DQ``, with its ``eta``) until
        ``eta_ms - max_hold`` (raises RedisError: the caller's enqueue fails, as a publish would)."""
        entry = orjson.dumps({"q": message.queue_name, "m": message.encode().decode()})
        self.client.zadd(self.key, {entry: eta_ms - self.max_hold_ms})


class OpsdeckRabbitBroker(RabbitmqBroker):
    """Dramatiq's RabbitmqBroker with publisher confirms, Opsdeck's queue arguments and parked
    long delays (see the module docstring)."""

    def __init__(
        self,
        *,
        urls: list[str],
        queue_type: str,
        long_delays: LongDelays,
        client: redis.Redis,
        **options: Any,
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"RABBITMQ_QUEUE_TYPE must be one of {QUEUE_TYPES}, not {queue_type!r}")
        super().__init__(url=urls if len(urls) > 1 else urls[0], confirm_delivery=True, **options)
        self.queue_type = queue_type
        self.long_delays = long_delays
        #: The state store (Redis), as ``OpsdeckBroker.client`` is for the Redis broker.
        self.client = client
        #: Consumers are pushed to by RabbitMQ: no wake-ups (see shared.transport.wakeup).
        self.wakeups: None = None
        #: Queues being paused (shared.transport.redis_broker.pause_consumers): their consumers
        #: take nothing more, so a busy queue's thread sees an empty answer and stops.
        self.held: set[str] = set()
        self.connection_lost = threading.Event()
        self.connect_backoff = _ConnectBackoff()

    # -- declarations: one set of arguments, shared with the outbox relay ------------------------
    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return queue_arguments(queue_name, self.queue_type)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments=dead_letter_queue_arguments(self.queue_type)
        )

    # -- enqueue: long delays wait in Redis -------------------------------------------------------
    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Dramatiq's enqueue; a delay over the hold limit is parked instead (see LongDelays)."""
        if delay is not None and delay > self.long_delays.max_hold_ms:
            self.declare_queue(message.queue_name)
            eta = current_millis() + delay
            parked = message.copy(queue_name=dq_name(message.queue_name), options={"eta": eta})
            self.emit_before("enqueue", parked, delay)
            self.long_delays.park(parked, eta)
            self.emit_after("enqueue", parked, delay)
            return parked
        try:
            return super().enqueue(message, delay=delay)
        except ConnectionClosed:
            self.connection_lost.set()
            raise

    @property
    def consumer_class(self) -> Any:
        return _NotingRabbitConsumer


#: Backoff of consumers that cannot connect (s): first, cap. Dramatiq itself retries every second,
#: for every consumer (two dozen per process): with a broker down that is a log line per consumer
#: per second; this stretches it to one per consumer per BACKOFF_CAP.
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 5.0


class _ConnectBackoff:
    """One backoff per broker, shared by its consumers: reset by the first connection that works."""

    def __init__(self) -> None:
        self._delay = 0.0
        self._lock = threading.Lock()

    def failed(self) -> float:
        with self._lock:
            self._delay = min(BACKOFF_CAP, max(BACKOFF_FIRST, self._delay * 2))
            return self._delay

    def succeeded(self) -> None:
        self._delay = 0.0


class _NotingRabbitConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, flagging its broker when the connection is lost and backing
    off while no node accepts a connection."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        try:
            super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        except ConnectionClosed:
            broker.connection_lost.set()
            time.sleep(broker.connect_backoff.failed())  # then Dramatiq's own second
            raise
        broker.connect_backoff.succeeded()

    def __next__(self) -> Any:
        if self.queue_name in self.broker.held:
            time.sleep(0.01)  # paused: an empty answer makes the thread stop consuming
            return None
        try:
            message = super().__next__()  # type: ignore[no-untyped-call]
        except ConnectionClosed:
            self.broker.connection_lost.set()
            raise
        if message is not None and self.queue_name in self.broker.held:
            # arrived as the pause began: left unacked, RabbitMQ requeues it when the paused
            # thread closes its consumer
            return None
        return message
