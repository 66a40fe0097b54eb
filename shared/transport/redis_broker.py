"""Dramatiq's Redis broker as Opsdeck's worker processes run it: the same protocol (script, keys,
message encoding; :mod:`shared.transport.contract` checks them), with faster paths, acks folded
into the task store's final-status script, wake-ups for idle consumers and lost-connection notes.

``worker.broker.build_broker`` puts Opsdeck's middleware on it.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import dramatiq
import orjson
import redis
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, MiddlewareError

from shared.fastscript import FastScript
from shared.transport.contract import RedisBroker, _RedisConsumer, current_millis, dispatch_script
from shared.transport.wakeup import Wakeups

#: Seconds a consumer of a held (paused) queue sleeps before its empty answer; a guard against a
#: busy loop, its thread normally stops at the first one.
HELD_SLEEP = 0.01

#: Chance (per million dispatch calls) that a call also runs Dramatiq's queue maintenance;
#: the agent also runs it on a clock, so this only matters for agents that died.
MAINTENANCE_CHANCE = 10_000


class AckTaker(Protocol):
    """What the broker asks of the task store: did its final-status script ack this message?"""

    def take_acked(self, redis_message_id: str) -> bool:
        """True (once) when the calling thread's finish script already acked that message."""


class OpsdeckBroker(RedisBroker):
    """Dramatiq's Redis broker with two changes that keep its protocol (same script, same keys):

    - an ack the task store already performed (inside its final-status script, atomically with
      the status) is not sent a second time;
    - the dispatch script runs through :class:`~shared.fastscript.FastScript`, skipping
      redis-py's per-command machinery on every fetch, ack and enqueue;
    - a signal calls only the middleware that override its hook (Dramatiq's ``emit_before`` and
      ``emit_after`` look up and call every middleware's, most of them the base class's no-op,
      four signals per message);
    - it notes when a consumer lost its Redis connection (:attr:`connection_lost`). Dramatiq's
      consumer thread then drops the delayed messages it holds in memory while they stay in this
      broker's ack set, where nothing redelivers them while the process lives; the process
      therefore restarts itself once Redis is back (see ``worker.process``), and the agent's
      queue maintenance requeues them.
    """

    def __init__(self, *, store: AckTaker, **options: Any) -> None:
        #: Per hook name, the middleware that override it (see _hooks_of).
        self._hooks: dict[str, list[Middleware]] = {}
        self._hooks_count = -1
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._store = store
        self.connection_lost = threading.Event()
        #: Wake-ups for idle consumers (None: they poll, as Dramatiq's do).
        self.wakeups: Wakeups | None = None
        self._fast_dispatch = FastScript(self.client, dispatch_script())

    def _dispatch(self, command: str) -> Any:
        """Like RedisBroker._dispatch (same arguments, same script), through FastScript."""
        script, keys = self._fast_dispatch, [self.namespace]

        def do_dispatch(queue_name: str, *args: Any) -> Any:
            return script(
                keys=keys,
                args=[
                    command, current_millis(), queue_name, self.broker_id, self.heartbeat_timeout,
                    self.dead_message_ttl, self._should_do_maintenance(command),
                    self._max_unpack_size(), *args,  # type: ignore[no-untyped-call]
                ],
            )  # fmt: skip

        return do_dispatch

    # -- signals: Broker.emit_before / emit_after, skipping hooks nobody overrides --------------
    def add_middleware(self, middleware: Middleware, **options: Any) -> None:
        """Dramatiq's add_middleware; the hooks are looked up again."""
        super().add_middleware(middleware, **options)
        self._hooks = {}

    def _hooks_of(self, name: str) -> list[Middleware]:
        """The middleware whose class overrides hook ``name``, in the broker's order (looked up
        again when the list changed). One without the hook at all stays in: calling it fails
        and is logged, as in Dramatiq's own loop."""
        middleware = self.middleware
        if len(middleware) != self._hooks_count:
            self._hooks, self._hooks_count = {}, len(middleware)
        hooks = self._hooks.get(name)
        if hooks is None:
            base = getattr(Middleware, name, _MISSING)
            hooks = self._hooks[name] = [m for m in middleware if getattr(type(m), name, None) is not base]
        return hooks

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's emit_before over the middleware that override the hook."""
        name = "before_" + signal
        for middleware in self._hooks_of(name):
            try:
                getattr(middleware, name)(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's emit_after (reverse order) over the middleware that override the hook."""
        name = "after_" + signal
        for middleware in reversed(self._hooks_of(name)):
            try:
                getattr(middleware, name)(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    @property
    def consumer_class(self) -> Any:
        """Dramatiq's Redis consumer, reporting lost connections to the broker."""
        return _NotingConsumer

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> Any:
        """Dramatiq's enqueue, then a wake-up for the queue's idle consumers (see the wakeup module)."""
        reply = self._dispatch("enqueue")(queue_name, message_id, data)
        if self.wakeups is not None:
            with contextlib.suppress(redis.RedisError):  # the consumers' next poll finds it anyway
                self.client.publish(self.wakeups.channel, queue_name)
        return reply

    def do_ack(self, queue_name: str, message_id: str) -> Any:
        """Ack ``message_id`` unless the task store's finish script already did."""
        if self._store.take_acked(message_id):
            return None
        return self._dispatch("ack")(queue_name, message_id)


_MISSING = object()

#: A run of digits orjson may read differently from ``json``: an integer beyond 64 bits (orjson
#: reads it as a float) or a float with more digits than a double keeps.
_LONG_NUMBER = re.compile(rb"\d{19}")


class MessageEncoder(dramatiq.JSONEncoder):
    """Dramatiq's JSON encoder, decoding with orjson (several times faster than ``json.loads``,
    on every message fetched). Whatever orjson would read differently goes to ``json.loads`` as
    before: NaN and Infinity (orjson refuses them), lone surrogates (refused), long numbers."""

    def decode(self, data: bytes) -> Any:
        """The message's fields, exactly as Dramatiq's own encoder reads them."""
        if not _LONG_NUMBER.search(data):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        return super().decode(data)


class _NotingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, which flags its broker when Redis could not be reached and, when
    its last fetch found the queue empty, waits for a wake-up (:mod:`shared.transport.wakeup`) instead of
    polling again.

    Around a fetch while wake-ups are live, Dramatiq's own backoff sleep after an empty answer is
    cut to 1 ms (the wait replaces it), so a wake-up is never followed by a sleep. A consumer whose
    prefetch is full (busy, not idle) does not fetch and keeps Dramatiq's backoff, as before."""

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        self._idle_empty = False
        self._fetching = False
        self._poll_timeout = timeout
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]

    @property
    def timeout(self) -> int:
        """Dramatiq's cap on the sleep after an empty fetch (ms): 1 around a fetch while wake-ups
        are live, else the configured idle wait."""
        return 1 if self._fetching else self._poll_timeout

    @timeout.setter
    def timeout(self, value: int) -> None:
        self._poll_timeout = value

    def __next__(self) -> Any:
        wakeups = self.broker.wakeups
        if wakeups is not None and wakeups.held(self.queue_name):
            time.sleep(HELD_SLEEP)  # paused: an empty answer makes the thread stop consuming
            return None
        live = wakeups is not None and wakeups.live
        fetches = not self.message_cache and self.outstanding_message_count < self.prefetch
        if self._idle_empty and fetches and live:
            wakeups.wait(self.queue_name)
            if wakeups.held(self.queue_name):
                return None
        self._fetching = fetches and live
        try:
            message = super().__next__()  # type: ignore[no-untyped-call]
        except ConnectionClosed:
            self.broker.connection_lost.set()
            raise
        finally:
            self._fetching = False
        self._idle_empty = message is None and fetches
        return message


def pause_consumers(broker: Any, consumers: Iterable[Any]) -> None:
    """Pause Dramatiq consumer threads now, those waiting for a wake-up included: each stops taking
    messages at once, not when the next message would wake it (and run). ``broker``: either of
    Opsdeck's brokers (the RabbitMQ one has no wake-ups)."""
    consumers = list(consumers)
    for consumer in consumers:
        consumer.pause()
    held: set[str] | None = getattr(broker, "held", None)  # the RabbitMQ broker's
    if held is not None:
        held.update(consumer.queue_name for consumer in consumers)
    wakeups: Wakeups | None = getattr(broker, "wakeups", None)
    if wakeups is not None:
        wakeups.hold(consumer.queue_name for consumer in consumers)


def resume_consumers(broker: Any, consumers: Iterable[Any]) -> None:
    """Resume consumer threads paused by :func:`pause_consumers`."""
    consumers = list(consumers)
    held: set[str] | None = getattr(broker, "held", None)
    if held is not None:
        held.difference_update(consumer.queue_name for consumer in consumers)
    wakeups: Wakeups | None = getattr(broker, "wakeups", None)
    if wakeups is not None:
        wakeups.release(consumer.queue_name for consumer in consumers)
    for consumer in consumers:
        consumer.resume()


class WakeupsLifecycle(Middleware):
    """Starts the wake-up subscriber with the worker and releases waiting consumers on shutdown."""

    def __init__(self, wakeups: Wakeups) -> None:
        self.wakeups = wakeups

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        """Subscribe once the worker runs."""
        self.wakeups.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Stop waiting: consumers must see the shutdown now, not after their wait."""
        self.wakeups.stop()
