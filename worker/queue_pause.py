"""Per-queue pause inside one Dramatiq process: consumers of queues in the paused set idle."""

from __future__ import annotations

import logging

import dramatiq
import redis

from shared.keys import Keys

log = logging.getLogger("worker.queue_pause")


class QueuePauses:
    """Polled by the process's main loop: pauses and resumes the consumer of each listed queue."""

    def __init__(self, client: redis.Redis, keys: Keys, worker: dramatiq.Worker) -> None:
        self.client = client
        self.keys = keys
        self.worker = worker
        self.paused: set[str] = set()

    def refresh(self) -> None:
        """Read the paused set and (un)pause consumers to match; a Redis blip changes nothing."""
        try:
            wanted = {q.decode() for q in self.client.smembers(self.keys.paused_queues)}
        except redis.RedisError:
            return
        for queue in wanted - self.paused:
            consumer = self.worker.consumers.get(queue)
            if consumer is not None:
                consumer.pause()
                log.info("queue %s paused", queue)
        for queue in self.paused - wanted:
            consumer = self.worker.consumers.get(queue)
            if consumer is not None:
                consumer.resume()
                log.info("queue %s resumed", queue)
        self.paused = wanted

    def reapply(self) -> None:
        """After a whole-worker resume (which resumes every consumer), pause the listed queues again."""
        self.paused = set()
        self.refresh()
