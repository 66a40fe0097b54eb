"""BrokerHeartbeat: keep this process's Dramatiq heartbeat fresh even when every consumer is busy.

Dramatiq's Redis broker refreshes a process's heartbeat only when it dispatches a command;
another process's maintenance requeues the unacked messages of any broker whose heartbeat is
older than ``heartbeat_timeout``. Opsdeck shortens that timeout so a killed process's messages
come back within seconds, so a live process must prove it is alive on a clock of its own.
The same clock renews the leases of the attempts the process runs (``on_beat``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Middleware
from dramatiq.brokers.redis import RedisBroker

from shared.keys import Keys

log = logging.getLogger(__name__)


class BrokerHeartbeat(Middleware):
    """A daemon thread that ZADDs this broker's id to Dramatiq's heartbeat set every ``interval`` s."""

    def __init__(self, keys: Keys, *, interval: float, on_beat: Callable[[], None] | None = None) -> None:
        self.keys = keys
        self.interval = interval
        self.on_beat = on_beat
        self._stop = threading.Event()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        """Start beating once the worker runs."""
        threading.Thread(target=self._beat, args=(broker,), name="broker-heartbeat", daemon=True).start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Stop beating once the worker has drained (during the drain, in-flight attempts still
        need the heartbeat and their leases renewed)."""
        self._stop.set()

    def _beat(self, broker: Any) -> None:
        redis_broker = isinstance(broker, RedisBroker)  # RabbitMQ needs no heartbeat: only the leases
        while not self._stop.wait(self.interval):
            try:
                if redis_broker:
                    broker.client.zadd(
                        self.keys.broker_heartbeats, {broker.broker_id: int(time.time() * 1000)}
                    )
                if self.on_beat is not None:
                    self.on_beat()
            except Exception as exc:  # Redis blip: try again next beat
                log.debug("broker heartbeat failed: %s", exc)
