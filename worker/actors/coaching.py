"""Coaching actors: ``coach`` (answer a chat turn) and ``bandit_update`` (the ``feedback`` type).

Each task type's Dramatiq actor carries the type's name (``coach``, ``feedback``), as every type
does; the ``feedback`` actor is the :func:`bandit_update` function. Both are idempotent: a turn
is claimed by its task id and a rating applies once per ``session_id:turn_number`` (see
:mod:`worker.coach.pipeline`). Validation errors and :class:`CoachingError` never retry;
anything else (Redis blips, :class:`TurnPending`) retries with backoff.

Latency: an idle Dramatiq consumer sleeps up to ``WORKER_IDLE_WAIT_MS`` between polls of its
queue. Chat turns are answered while a user waits, so the consumers of the ``coach`` group's
P0 and P1 queues (chat is P1) poll at most every ``COACH_IDLE_WAIT_MS`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dramatiq import Broker
from structlog.contextvars import get_contextvars

from shared.coaching import COACH, FEEDBACK, CoachPayload, FeedbackPayload
from shared.settings import Settings
from shared.tasks import Priority, TaskType, queue_name
from worker.actors.builtin import declare
from worker.coach.pipeline import CoachingError, CoachPipeline
from worker.coach.probe import LLMProbes, TierProber

#: Queues whose consumers use ``COACH_IDLE_WAIT_MS``.
FAST_QUEUES = frozenset(queue_name(COACH.queue_group, p) for p in (Priority.P0, Priority.P1))


def _declare(broker: Broker, settings: Settings, task_type: TaskType, fn: Callable[..., Any]) -> None:
    declare(broker, settings, task_type, fn, throws=(CoachingError,), priority=Priority.P1)


def _fast_idle_polls(broker: Broker, idle_wait_ms: int) -> None:
    """Make consumers of :data:`FAST_QUEUES` poll at most every ``idle_wait_ms`` when idle."""
    consume = broker.consume

    def patched(queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        if queue_name in FAST_QUEUES:
            timeout = min(timeout, idle_wait_ms)
        return consume(queue_name, prefetch, timeout)

    broker.consume = patched  # type: ignore[method-assign]


def register(broker: Broker, settings: Settings) -> CoachPipeline:
    """Declare the coaching actors on ``broker``; returns the process's pipeline."""
    pipeline = CoachPipeline(broker.client, settings)  # type: ignore[attr-defined]

    def coach(payload: dict[str, Any]) -> dict[str, Any]:
        """Answer one chat turn: features → select → generate → guard → store."""
        turn = CoachPayload.model_validate(payload)
        task_id = str(get_contextvars().get("task_id") or f"direct:{turn.session_id}:{turn.turn_number}")
        return pipeline.run_turn(turn, task_id)

    def bandit_update(payload: dict[str, Any]) -> dict[str, Any]:
        """Apply one rating to the shared bandit, once, with the turn's stored context."""
        return pipeline.rate(FeedbackPayload.model_validate(payload))

    _declare(broker, settings, COACH, coach)
    _declare(broker, settings, FEEDBACK, bandit_update)
    _fast_idle_polls(broker, settings.coach_idle_wait_ms)
    if pipeline.llm is not None and settings.llm_probe_interval > 0:
        worker = f"{settings.worker_id}/{os.getpid()}"
        client = broker.client  # type: ignore[attr-defined]
        prober = TierProber(pipeline.llm, client, settings.keys, settings.llm_probe_interval, worker)
        broker.add_middleware(LLMProbes(prober))
    return pipeline
