"""TaskStore middleware: every status transition of every task, written by one middleware.

It must be the *first* middleware of the broker: Dramatiq runs ``after_*`` hooks in reverse
order, so ours runs after ``Retries`` has decided between retrying and dead-lettering, and
the final status is durable in Redis before the message is acked (a kill between the two
re-runs the message, and the ``start`` script then skips a task that already ended).
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
from shared.keys import Keys
from shared.logging import bind_contextvars, clear_contextvars, get_logger
from shared.settings import Settings
from shared.store import MAX_TRACEBACK_CHARS, encode_result, script_source
from shared.tasks import TaskStatus
from worker.metrics import record_attempt

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


class TaskStore(Middleware):
    """Records queued → running → succeeded | failed | retrying | dead | canceled in Redis."""

    def __init__(self, client: redis.Redis, settings: Settings, *, worker_id: str) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix, settings.dramatiq_namespace)
        self.worker_label = f"{worker_id}/{os.getpid()}"
        self.counters_key = self.keys.worker_process(worker_id, os.getpid())
        self._start = FastScript(client, script_source("start"))
        self._finish = FastScript(client, script_source("finish"))
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
            ],
            [
                message.message_id, now_ms, self.worker_label, self.settings.task_ttl,
                self.settings.task_events_maxlen, self.keys.tasks_status_prefix,
                message.message_timestamp * 1000, message.actor_name, message.queue_name.removesuffix(".DQ"),
                options.get("priority", ""), orjson.dumps(payload), options.get("correlation_id", ""),
                attempt,
            ],
        )  # fmt: skip
        if outcome is not None and outcome != b"ok":
            self._skipped.id = message.message_id
            log.info("task skipped", status=outcome.decode())
            clear_contextvars()
            raise SkipMessage(f"task is {outcome.decode()}")

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
        # A message that is not failed gets acked: do it in the same script (see OpsdeckBroker).
        redis_message_id = message.options.get("redis_message_id", "")
        ack = not message.failed and bool(redis_message_id) and isinstance(broker, RedisBroker)
        queue = message.queue_name
        acks = self.keys.dramatiq_acks(broker.broker_id, queue) if ack else ""  # type: ignore[attr-defined]
        previous = self._write(
            self._finish,
            [self.keys.task(message.message_id), self.keys.task_events, self.counters_key, acks,
             self.keys.queue_messages(queue)],
            [
                message.message_id, status.value, now_ms, self.settings.task_ttl,
                self.settings.task_events_maxlen, self.keys.tasks_status_prefix, self.worker_label,
                int(status != TaskStatus.SUCCEEDED), message.actor_name,
                "" if duration_ms is None else duration_ms, self.keys.stats_minute_prefix,
                redis_message_id, getattr(self._started, "attempt", ""), *fields,
            ],
        )  # fmt: skip
        if ack and previous is not None:
            self._acked.id = redis_message_id
        if previous == b"running":  # the first end of this attempt: count it once
            record_attempt(
                message.actor_name, status, duration_ms / 1000 if duration_ms is not None else None
            )
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
