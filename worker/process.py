"""``python -m worker.process``: one Dramatiq worker process (started and watched by the agent).

It consumes every queue of every registered task type with ``WORKER_THREADS`` threads. SIGTERM
(or SIGINT) stops consuming and lets in-flight messages finish within ``SHUTDOWN_TIMEOUT``;
messages still running then are left unacked, and Dramatiq's maintenance redelivers them.
SIGUSR1 pauses consumption (in-flight messages finish), SIGUSR2 resumes it; with
``WORKER_START_PAUSED=1`` it starts paused. Queues in the paused-queues set are not consumed
(from the process's first fetch on: see :class:`worker.queue_pause.PausedAtBoot`).
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

from shared import tracing
from shared.errors import ConfigError
from shared.logging import setup_logging
from shared.sentry import init_sentry
from shared.settings import Settings, load_settings
from shared.task_types import all_queues
from shared.transport.redis_broker import pause_consumers, resume_consumers
from worker.actors import register_actors
from worker.broker import OpsdeckBroker, WorkerBroker, build_broker
from worker.queue_pause import PausedAtBoot, QueuePauses
from worker.supervisor import RECYCLE_EXIT, START_PAUSED_ENV

log = logging.getLogger("worker.process")


class Signals:
    """What the process's signals asked for: stop (TERM, INT) and pause/resume (USR1, USR2)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.want_paused = os.environ.get(START_PAUSED_ENV) == "1"
        self._parent = os.getppid()

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        """First TERM/INT: drain; a second one: exit now (unless it is the agent's death repeated)."""
        if self.stop.is_set():
            if os.getppid() != self._parent:
                # the agent died: the kernel sends the parent-death signal once per exiting thread
                # of the agent, which is no second request to stop; keep draining
                return
            log.warning("second stop signal: exiting now")
            os._exit(1)
        self.stop.set()
        self.wake.set()

    def on_pause(self, signum: int, frame: FrameType | None) -> None:
        """USR1 pauses consumption, USR2 resumes it."""
        self.want_paused = signum == signal.SIGUSR1
        self.wake.set()


def main() -> None:
    """Run one Dramatiq worker until told to stop."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"worker process: {exc}")
    setup_logging(settings.log_level, json=settings.production, process=f"proc-{os.getpid()}")
    signals = Signals()
    signal.signal(signal.SIGTERM, signals.on_stop)
    signal.signal(signal.SIGINT, signals.on_stop)

    # Before the broker: the Dramatiq integration hooks broker construction.
    init_sentry(settings, component="worker", integrations=[DramatiqIntegration()])
    tracing.configure(settings, "opsdeck-worker")  # before the broker: it adds TaskTracing when on
    broker = build_broker(settings, worker_id=settings.worker_id)
    register_actors(broker, settings)
    for queue in all_queues():
        broker.declare_queue(queue)
    worker = dramatiq.Worker(
        broker, worker_threads=settings.worker_threads, worker_timeout=settings.worker_idle_wait_ms
    )
    # Ready for pause/resume signals only now (the agent started us with them ignored).
    signal.signal(signal.SIGUSR1, signals.on_pause)
    signal.signal(signal.SIGUSR2, signals.on_pause)
    # Consumers start fetching inside worker.start(): paused ones must be paused before that.
    broker.add_middleware(PausedAtBoot(broker.client, settings.keys, lambda: signals.want_paused))
    worker.start()
    log.info("consuming %s with %d threads", ", ".join(all_queues()), settings.worker_threads)
    exit_code = _supervise(worker, broker, settings, signals)
    log.info("stopping: draining in-flight work (up to %.0fs)", settings.shutdown_timeout)
    worker.stop(timeout=int(settings.shutdown_timeout * 1000))
    broker.close()
    log.info("stopped")
    sys.exit(exit_code)


def _supervise(worker: dramatiq.Worker, broker: WorkerBroker, settings: Settings, signals: Signals) -> int:
    """Apply pause/resume and per-queue pauses, report them, and watch for a lost Redis, until a
    stop signal; returns the exit code (RECYCLE_EXIT: restart me, Redis came back)."""
    keys = settings.keys
    queue_pauses = QueuePauses(broker, keys, worker)
    report_key = keys.worker_process(settings.worker_id, os.getpid())
    paused: bool | None = None
    exit_code = 0
    while not signals.stop.is_set():
        want = signals.want_paused
        if want != paused:
            if paused is not None or want:
                _pause(worker, broker) if want else _resume(worker, broker)
                log.info("paused: not taking new messages" if want else "running")
            paused = want
            if not paused:
                queue_pauses.reapply()
        with contextlib.suppress(redis.RedisError):  # the agent re-signals until this matches
            broker.client.hset(report_key, "paused", int(paused))
        if (
            isinstance(broker, OpsdeckBroker)
            and broker.connection_lost.is_set()
            and _redis_answers(broker.client)
        ):
            log.warning("Redis was unreachable and is back: restarting this process (see OpsdeckBroker)")
            exit_code = RECYCLE_EXIT
            signals.stop.set()
        if not paused:
            queue_pauses.refresh()
        signals.wake.wait(1.0)
        signals.wake.clear()
    return exit_code


def _pause(worker: dramatiq.Worker, broker: WorkerBroker) -> None:
    """Pause the whole process: consumers first, waiting ones woken (Dramatiq's ``Worker.pause``
    would otherwise wait for each waiting consumer's next wake-up), then the worker threads."""
    pause_consumers(broker, worker.consumers.values())
    worker.pause()


def _resume(worker: dramatiq.Worker, broker: WorkerBroker) -> None:
    resume_consumers(broker, worker.consumers.values())
    worker.resume()


def _redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


if __name__ == "__main__":
    main()
