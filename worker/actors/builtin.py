"""Built-in diagnostic actors: ``echo``, ``sleep`` and ``fail`` (alert drills and load tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pydantic
from dramatiq import Broker

from shared.settings import Settings
from shared.tasks import ECHO, FAIL, SLEEP, Priority, TaskType, queue_name


class RequestedFailure(Exception):
    """Raised by the ``fail`` task on purpose."""


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload as the result."""
    return dict(ECHO.payload_model.model_validate(payload).model_dump())


def sleep(payload: dict[str, Any]) -> dict[str, float]:
    """Sleep for ``payload.seconds`` and succeed."""
    seconds = SLEEP.payload_model.model_validate(payload).seconds  # type: ignore[attr-defined]
    time.sleep(seconds)
    return {"slept": seconds}


def fail(payload: dict[str, Any]) -> None:
    """Raise ``payload.message`` (retried per policy, then dead)."""
    message = FAIL.payload_model.model_validate(payload).message  # type: ignore[attr-defined]
    raise RequestedFailure(message)


def declare(
    broker: Broker,
    settings: Settings,
    task_type: TaskType,
    fn: Callable[..., Any],
    *,
    throws: tuple[type[BaseException], ...] = (),
    priority: Priority = Priority.P2,
) -> None:
    """Declare ``fn`` as the actor of ``task_type`` with the retry policy from settings.

    Validation errors (and ``throws``) never retry; anything else retries with exponential
    backoff and jitter between RETRY_MIN_BACKOFF and RETRY_MAX_BACKOFF. ``priority`` only sets
    the queue of a bare ``actor.send()``; Opsdeck enqueues on the task's own priority queue.
    """
    retries = settings.task_max_retries if task_type.max_retries is None else task_type.max_retries
    dramatiq.actor(
        actor_name=task_type.actor_name,
        queue_name=queue_name(task_type.queue_group, priority),
        broker=broker,
        max_retries=retries,
        min_backoff=int(settings.retry_min_backoff * 1000),
        max_backoff=int(settings.retry_max_backoff * 1000),
        throws=(pydantic.ValidationError, *throws),
    )(fn)


def register(broker: Broker, settings: Settings) -> None:
    """Declare the built-in actors."""
    declare(broker, settings, ECHO, echo)
    declare(broker, settings, SLEEP, sleep)
    declare(broker, settings, FAIL, fail)
