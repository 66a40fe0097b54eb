"""Per-queue pause inside one Dramatiq process: consumers of queues in the paused set idle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq import Middleware

from shared.keys import Keys
from shared.transport.redis_broker import pause_consumers, resume_consumers

log = logging.getLogger("worker.queue_pause")


class QueuePauses:
    """Polled by the process's main loop: pauses and resumes the consumer of each listed queue."""

    def __init__(self, broker: Any, keys: Keys, worker: dramatiq.Worker) -> None:
        """``broker``: either of Opsdeck's brokers (its ``client`` is the state store)."""
        self.broker = broker
        self.client = broker.client
        self.keys = keys
        self.worker = worker
        self.paused: set[str] = set()

    def refresh(self) -> None:
        """Read the paused set and (un)pause consumers to match; a Redis blip changes nothing."""
        try:
            wanted = {q.decode() for q in self.client.smembers(self.keys.paused_queues)}
        except redis.RedisError:
            return
        pause = self._consumers(wanted - self.paused)
        resume = self._consumers(self.paused - wanted)
        pause_consumers(self.broker, pause)
        resume_consumers(self.broker, resume)
        for consumer in pause:
            log.info("queue %s paused", consumer.queue_name)
        for consumer in resume:
            log.info("queue %s resumed", consumer.queue_name)
        self.paused = wanted

    def _consumers(self, queues: set[str]) -> list[Any]:
        return [c for q in sorted(queues) if (c := self.worker.consumers.get(q)) is not None]

    def reapply(self) -> None:
        """After a whole-worker resume (which resumes every consumer), pause the listed queues again."""
        self.paused = set()
        self.refresh()


class PausedAtBoot(Middleware):
    """Pauses a consumer thread as it boots, before its first fetch, when its queue is in the
    paused set or the whole process starts paused (``start_paused()``).

    Dramatiq starts consuming inside ``Worker.start``, before the process's loop first applies the
    pauses (:meth:`QueuePauses.refresh`, the whole-process pause); without this, a process that
    starts (an agent start, a restart, a scale-up) while a queue is paused takes that queue's
    waiting messages (a prefetch's worth) in that moment, and runs them."""

    def __init__(self, client: redis.Redis, keys: Keys, start_paused: Callable[[], bool]) -> None:
        self.client = client
        self.keys = keys
        self.start_paused = start_paused

    def after_consumer_thread_boot(self, broker: Any, thread: Any) -> None:
        """In the consumer thread, before it consumes (a Redis blip pauses nothing, as in refresh)."""
        if not self.start_paused():
            try:
                paused = self.client.sismember(self.keys.paused_queues, thread.queue_name)
            except redis.RedisError:
                return
            if not paused:
                return
        pause_consumers(broker, [thread])
