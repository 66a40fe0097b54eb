"""TaskLifecycle middleware: every status transition of every task, written by one middleware.

It must come before every middleware that changes a message's fate (only the TaskTracing, which
observes, comes before it): Dramatiq runs ``after_*`` hooks in reverse
order, so ours runs after ``Retries`` has decided between retrying and dead-lettering, and
the final status is durable in Redis before the message is acked (a kill between the two
re-runs the message, and the ``start`` script then skips a task that already ended).

Each running attempt holds a *lease* (``Keys.task_lease``) that its process renews on the broker
heartbeat's clock (:meth:`TaskLifecycle.renew_leases`). A delivery of a task whose current attempt's
lease is alive — Dramatiq's maintenance redelivers the messages of a process that stalled past
``BROKER_HEARTBEAT_TIMEOUT`` — is deferred (re-enqueued with a delay, then acked), not run. An
attempt whose process stalled past the lease is taken over; when the stalled one ends anyway,
``finish.lua`` records a duplicate execution (timeline note, counters), never a second end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from typing import Any

import orjson
import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import SkipMessage

from shared.fastscript import FastScript
from shared.ids import random_hex
from shared.logging import bind_contextvars, clear_contextvars, get_logger
from shared.settings import Settings
from shared.store import MAX_TRACEBACK_CHARS, encode_result, script_source
from shared.tasks import TaskStatus
from shared.transport.redis_keys import canonical_queue
from worker.metrics import record_attempt, record_duplicate

log = get_logger(__name__)

#: Level of the "task ended" line: successes are routine (debug), failures are not.
_LOG_LEVEL = {
    TaskStatus.SUCCEEDED: logging.DEBUG,
    TaskStatus.RETRYING: logging.INFO,
    TaskStatus.FAILED: logging.WARNING,
    TaskStatus.DEAD: logging.WARNING,
}

#: How long a status write keeps retrying through a Redis outage before giving up (seconds).
WRITE_RETRY_WINDOW = 60.0
#: Added to a live lease's remaining life when a delivery is deferred behind it (ms).
DEFER_MARGIN_MS = 250


class TaskLifecycle(Middleware):
    """Records queued → running → succeeded | failed | retrying | dead | canceled in Redis."""

    def __init__(self, client: redis.Redis, settings: Settings, *, worker_id: str) -> None:
        self.client = client
        self.settings = settings
        self.keys = settings.keys
        self.worker_label = f"{worker_id}/{os.getpid()}"
        self.counters_key = self.keys.worker_process(worker_id, os.getpid())
        self.leases_key = self.keys.worker_process_leases(worker_id, os.getpid())
        self.lease_ms = int(settings.effective_task_lease_ttl * 1000)
        self._start = FastScript(client, script_source("start"))
        self._finish = FastScript(client, script_source("finish"))
        self._renew = client.register_script(script_source("lease_renew"))
        #: task id → attempt id of every attempt this process is running (renewed by renew_leases)
        self._running: dict[str, str] = {}
        self._running_lock = threading.Lock()
        self._skipped = threading.local()
        self._acked = threading.local()
        self._started = threading.local()

    # -- hooks ----------------------------------------------------------------------------------
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Mark the task running; skip it when it was canceled or already ended."""
        self._skipped.id = None
        options = message.options
        clear_contextvars()  # every log line of this attempt carries the task and its request's id
        bind_contextvars(
            task_id=message.message_id,
            task_type=message.actor_name,
            correlation_id=options.get("correlation_id") or None,
        )
        self._started.at = time.perf_counter()
        # names this attempt, so a store call sent again after a lost reply is recognised
        attempt = self._started.attempt = random_hex()
        payload = message.args[0] if message.args else {}
        now_ms = time.time_ns() // 1_000_000
        outcome = self._write(
            self._start,
            [
                self.keys.task(message.message_id),
                self.keys.tasks_all,
                self.keys.tasks_by_type(message.actor_name),
                self.keys.task_events,
                self.counters_key,
                self.keys.task_lease(message.message_id),
                self.leases_key,
            ],
            [
                message.message_id, now_ms, self.worker_label, self.settings.task_ttl,
                self.settings.task_events_maxlen, self.keys.tasks_status_prefix,
                message.message_timestamp * 1000, message.actor_name, canonical_queue(message.queue_name),
                options.get("priority", ""), orjson.dumps(payload), options.get("correlation_id", ""),
                attempt, self.lease_ms, message.options.get("retries", 0),
            ],
        )  # fmt: skip
        if outcome == b"ok":
            with self._running_lock:
                self._running[message.message_id] = attempt
            return
        if outcome is None:
            return  # Redis stayed away: run it unrecorded rather than drop it (as before)
        self._skipped.id = message.message_id
        reason = outcome.decode()
        if reason.startswith("leased "):
            self._defer(broker, message, int(reason.split()[1]) + DEFER_MARGIN_MS)
            reason = "running elsewhere"
        log.info("task skipped", status=reason)
        clear_contextvars()
        raise SkipMessage(f"task is {reason}")

    def _defer(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        """Enqueue the delivery again, ``delay_ms`` later (the skip then acks this one; a kill in
        between leaves both, and the copy is recognised as stale or ended)."""
        fresh = message.copy()
        fresh.options.pop("redis_message_id", None)
        fresh.options.pop("eta", None)
        broker.enqueue(fresh.copy(queue_name=canonical_queue(message.queue_name)), delay=delay_ms)
        log.info("delivery deferred: another attempt holds the lease", defer_ms=delay_ms)

    def renew_leases(self) -> None:
        """Renew the lease of every attempt this process runs (called on the heartbeat's clock);
        an attempt another process has taken over is logged once."""
        with self._running_lock:
            running = [(task_id, attempt) for task_id, attempt in self._running.items() if attempt]
        if not running:
            return
        keys = [k for task_id, _ in running for k in (self.keys.task(task_id), self.keys.task_lease(task_id))]
        stale = self._renew(keys=keys, args=[self.lease_ms, self.worker_label, *(a for _, a in running)])
        lost = {a.decode() for a in stale}
        for task_id, attempt in running:
            if attempt in lost:
                with self._running_lock:
                    if self._running.get(task_id) == attempt:
                        self._running[task_id] = ""  # reported once; its end will be a duplicate
                log.warning("attempt taken over by another process after its lease expired", task_id=task_id)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Record the attempt's outcome (runs after Retries has decided)."""
        if exception is None:
            self._end(broker, message, TaskStatus.SUCCEEDED, ["result", encode_result(result)])
            return
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws")
        if throws and isinstance(exception, throws):
            status = TaskStatus.FAILED
        elif message.failed:
            status = TaskStatus.DEAD
        else:
            status = TaskStatus.RETRYING
        tb = "".join(traceback.format_exception(exception))[-MAX_TRACEBACK_CHARS:]
        error = f"{type(exception).__name__}: {exception}"[:2000]
        self._end(broker, message, status, ["error", error, "traceback", tb])

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """A skip by another middleware (e.g. AgeLimit) ends the task as failed."""
        if getattr(self._skipped, "id", None) == message.message_id:
            return
        self._end(broker, message, TaskStatus.FAILED, ["error", "skipped by middleware"])

    # -- helpers --------------------------------------------------------------------------------
    def _end(self, broker: Broker, message: MessageProxy, status: TaskStatus, fields: list[Any]) -> None:
        now_ms = time.time_ns() // 1_000_000
        started = getattr(self._started, "at", None)
        duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
        log.log(
            _LOG_LEVEL[status],
            "task ended",
            status=status.value,
            duration_ms=duration_ms,
            retries=message.options.get("retries", 0),
        )
        # A message that is not failed gets acked: do it in the same script (see OpsdeckBroker);
        # a duplicate execution's message is acked whatever its outcome.
        redis_message_id = message.options.get("redis_message_id", "")
        known = bool(redis_message_id) and isinstance(broker, RedisBroker)
        ack = known and not message.failed
        queue = message.queue_name
        acks = self.keys.dramatiq_acks(broker.broker_id, queue) if known else ""  # type: ignore[attr-defined]
        with self._running_lock:
            self._running.pop(message.message_id, None)
        previous = self._write(
            self._finish,
            [self.keys.task(message.message_id), self.keys.task_events, self.counters_key, acks,
             self.keys.queue_messages(queue), self.keys.task_lease(message.message_id), self.leases_key],
            [
                message.message_id, status.value, now_ms, self.settings.task_ttl,
                self.settings.task_events_maxlen, self.keys.tasks_status_prefix, self.worker_label,
                int(status != TaskStatus.SUCCEEDED), message.actor_name,
                "" if duration_ms is None else duration_ms, self.keys.stats_minute_prefix,
                redis_message_id, getattr(self._started, "attempt", ""), int(ack), *fields,
            ],
        )  # fmt: skip
        if ack and previous is not None:
            self._acked.id = redis_message_id
        if previous == b"running":  # the first end of this attempt: count it once
            record_attempt(
                message.actor_name, status, duration_ms / 1000 if duration_ms is not None else None
            )
        elif previous == b"duplicate":
            record_duplicate(message.actor_name)
            log.warning("duplicate execution: the task was taken over or had ended; end not recorded")
        clear_contextvars()

    def take_acked(self, redis_message_id: str) -> bool:
        """True (once) when this thread's finish script already acked that message."""
        if getattr(self._acked, "id", None) == redis_message_id:
            self._acked.id = None
            return True
        return False

    def _write(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a store script, retrying through a Redis outage for up to WRITE_RETRY_WINDOW."""
        deadline = time.monotonic() + WRITE_RETRY_WINDOW
        delay = 0.1
        while True:
            try:
                return script(keys=keys, args=args)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    log.error("task store write abandoned", after_s=WRITE_RETRY_WINDOW, error=str(exc))
                    return None
                log.warning("task store write failed; retrying", error=type(exc).__name__, retry_in_s=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
