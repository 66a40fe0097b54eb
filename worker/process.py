"""``python -m worker.process``: one Dramatiq worker process (started and watched by the agent).

It consumes every queue of every registered task type with ``WORKER_THREADS`` threads. SIGTERM
(or SIGINT) stops consuming and lets in-flight messages finish within ``SHUTDOWN_TIMEOUT``;
messages still running then are left unacked, and Dramatiq's maintenance redelivers them.
SIGUSR1 pauses consumption (in-flight messages finish), SIGUSR2 resumes it; with
``WORKER_START_PAUSED=1`` it starts paused. Queues in the paused-queues set are not consumed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType

import dramatiq
import redis
from sentry_sdk.integrations.dramatiq import DramatiqIntegration

from shared.errors import ConfigError
from shared.keys import Keys
from shared.logging import setup_logging
from shared.sentry import init_sentry
from shared.settings import load_settings
from shared.tasks import all_queues
from worker.actors import register_actors
from worker.broker import build_broker
from worker.queue_pause import QueuePauses
from worker.supervisor import RECYCLE_EXIT, START_PAUSED_ENV

log = logging.getLogger("worker.process")


def main() -> None:
    """Run one Dramatiq worker until told to stop."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"worker process: {exc}")
    setup_logging(settings.log_level, json=settings.production, process=f"proc-{os.getpid()}")
    stop = threading.Event()
    wake = threading.Event()
    want_paused = [os.environ.get(START_PAUSED_ENV) == "1"]

    parent = os.getppid()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            if os.getppid() != parent:
                # the agent died: the kernel sends the parent-death signal once per exiting thread
                # of the agent, which is no second request to stop; keep draining
                return
            log.warning("second stop signal: exiting now")
            os._exit(1)
        stop.set()
        wake.set()

    def on_pause(signum: int, frame: FrameType | None) -> None:
        want_paused[0] = signum == signal.SIGUSR1
        wake.set()

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
    # Ready for pause/resume signals only now (the agent started us with them ignored).
    signal.signal(signal.SIGUSR1, on_pause)
    signal.signal(signal.SIGUSR2, on_pause)
    worker.start()
    log.info("consuming %s with %d threads", ", ".join(all_queues()), settings.worker_threads)
    keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
    queue_pauses = QueuePauses(broker.client, keys, worker)
    report_key = keys.worker_process(settings.worker_id, os.getpid())
    paused: bool | None = None
    exit_code = 0
    while not stop.is_set():
        if want_paused[0] != paused:
            if paused is not None or want_paused[0]:
                (worker.pause if want_paused[0] else worker.resume)()
                log.info("paused: not taking new messages" if want_paused[0] else "running")
            paused = want_paused[0]
            if not paused:
                queue_pauses.reapply()
        with contextlib.suppress(redis.RedisError):  # the agent re-signals until this matches
            broker.client.hset(report_key, "paused", int(paused))
        if broker.connection_lost.is_set() and _redis_answers(broker.client):
            log.warning("Redis was unreachable and is back: restarting this process (see OpsdeckBroker)")
            exit_code = RECYCLE_EXIT
            stop.set()
        if not paused:
            queue_pauses.refresh()
        wake.wait(1.0)
        wake.clear()
    log.info("stopping: draining in-flight work (up to %.0fs)", settings.shutdown_timeout)
    worker.stop(timeout=int(settings.shutdown_timeout * 1000))
    broker.close()
    log.info("stopped")
    sys.exit(exit_code)


def _redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


if __name__ == "__main__":
    main()
