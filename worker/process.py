"""``python -m worker.process``: one Dramatiq worker process (started and watched by the agent).

It consumes every queue of every registered task type with ``WORKER_THREADS`` threads. SIGTERM
(or SIGINT) stops consuming and lets in-flight messages finish within ``SHUTDOWN_TIMEOUT``;
messages still running then are left unacked, and Dramatiq's maintenance redelivers them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import dramatiq
from sentry_sdk.integrations.dramatiq import DramatiqIntegration

from shared.errors import ConfigError
from shared.logging import setup_logging
from shared.sentry import init_sentry
from shared.settings import load_settings
from shared.tasks import all_queues
from worker.actors import register_actors
from worker.broker import build_broker

log = logging.getLogger("worker.process")


def main() -> None:
    """Run one Dramatiq worker until told to stop."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"worker process: {exc}")
    setup_logging(settings.log_level, json=settings.production, process=f"proc-{os.getpid()}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting now")
            os._exit(1)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Before the broker: the Dramatiq integration hooks broker construction.
    init_sentry(settings, component="worker", integrations=[DramatiqIntegration()])
    broker = build_broker(settings, worker_id=settings.worker_id)
    register_actors(broker, settings)
    for queue in all_queues():
        broker.declare_queue(queue)
    worker = dramatiq.Worker(
        broker, worker_threads=settings.worker_threads, worker_timeout=settings.worker_idle_wait_ms
    )
    worker.start()
    log.info("consuming %s with %d threads", ", ".join(all_queues()), settings.worker_threads)
    stop.wait()
    log.info("stopping: draining in-flight work (up to %.0fs)", settings.shutdown_timeout)
    worker.stop(timeout=int(settings.shutdown_timeout * 1000))
    broker.close()
    log.info("stopped")


if __name__ == "__main__":
    main()
