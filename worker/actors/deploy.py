"""Deploy actors: ``deploy`` (the public task type: record and start a rollout),
``deploy_step`` (one message per step or operator action; see worker/deploy/machine.py),
``deploy_restore`` (a rollback to a recorded deployment; worker/deploy/restore.py) and
``deploy_notify`` (one team notification per deploy event; worker/deploy/notify.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pydantic
import redis
from dramatiq import Broker
from dramatiq.middleware import CurrentMessage

from shared.deploy.models import (
    DEPLOY,
    DEPLOY_NOTIFY,
    DEPLOY_RESTORE,
    DEPLOY_STEP,
    DeployPayload,
    NotifyPayload,
    RestorePayload,
    StepPayload,
)
from shared.redis import sync_client
from shared.settings import Settings
from shared.tasks import Priority, queue_name
from worker.deploy.errors import DeployError
from worker.deploy.machine import Rollout
from worker.deploy.notify import Notifier, NotifyFailed
from worker.deploy.restore import Restore
from worker.deploy.state import DeployState

#: Step messages wait at most this long in Dramatiq's time limit (polls hand over long before).
STEP_TIME_LIMIT_MS = 10 * 60 * 1000
#: Backoff between two deliveries of a notification (Dramatiq's exponential backoff, ms).
NOTIFY_MIN_BACKOFF_MS, NOTIFY_MAX_BACKOFF_MS = 1000, 5 * 60 * 1000


def register(broker: Broker, settings: Settings) -> None:
    """Declare ``deploy`` and ``deploy_step`` on ``broker``."""
    client = sync_client(settings, retries=1)
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())  # the deploy task's id is its deploy id
    keys = settings.keys
    step_queue = queue_name(DEPLOY_STEP.queue_group, Priority.P1)

    def schedule(payload: dict[str, Any], delay: float) -> None:
        broker.get_actor(DEPLOY_STEP.actor_name).send_with_options(
            args=(payload,), delay=int(delay * 1000) or None
        )

    def later(actor: str) -> Callable[[dict[str, Any], float], None]:
        def send(payload: dict[str, Any], delay: float) -> None:
            broker.get_actor(actor).send_with_options(args=(payload,), delay=int(delay * 1000) or None)

        return send

    state = DeployState(client, settings)
    notifier = Notifier(client, settings, later(DEPLOY_NOTIFY.actor_name))
    rollout = Rollout(state, settings, schedule)
    restore = Restore(state, settings, later(DEPLOY_RESTORE.actor_name))
    # every status change of a deploy: maybe news for the team
    rollout.on_transition = restore.on_transition = notifier.transition

    def deploy(payload: dict[str, Any]) -> dict[str, Any]:
        """Record the deploy (if the API did not) and send its first step."""
        message = CurrentMessage.get_current_message()
        task_id = message.message_id if message is not None else ""
        submitted_by = client.hget(keys.task(task_id), "submitted_by") if task_id else None
        trigger = submitted_by.decode() if submitted_by else "task"
        return rollout.start(DeployPayload.model_validate(payload, context=settings), task_id, trigger)

    def deploy_step(payload: dict[str, Any]) -> None:
        """Run one step of a rollout, or apply an operator action."""
        rollout.handle(StepPayload.model_validate(payload))

    def deploy_restore(payload: dict[str, Any]) -> None:
        """Put a recorded earlier deployment back live (``opsdeck deploy rollback``)."""
        restore.handle(RestorePayload.model_validate(payload).deploy_id)

    def deploy_notify(payload: dict[str, Any]) -> str:
        """Deliver one deploy event to the configured channels (NotifyFailed: retried with backoff)."""
        event = NotifyPayload.model_validate(payload)
        message = CurrentMessage.get_current_message()
        return notifier.deliver(event.deploy_id, event.event, message.message_id if message else "")

    common: dict[str, Any] = {
        "broker": broker,
        "min_backoff": int(settings.retry_min_backoff * 1000),
        "max_backoff": int(settings.retry_max_backoff * 1000),
        "throws": (pydantic.ValidationError, DeployError),
    }
    dramatiq.actor(
        actor_name=DEPLOY.actor_name, queue_name=queue_name(DEPLOY.queue_group, Priority.P2),
        max_retries=DEPLOY.max_retries, **common,
    )(deploy)  # fmt: skip
    dramatiq.actor(
        actor_name=DEPLOY_STEP.actor_name, queue_name=step_queue, max_retries=settings.task_max_retries,
        time_limit=STEP_TIME_LIMIT_MS, **common,
    )(deploy_step)  # fmt: skip
    dramatiq.actor(
        actor_name=DEPLOY_RESTORE.actor_name, queue_name=queue_name(DEPLOY_RESTORE.queue_group, Priority.P0),
        max_retries=settings.task_max_retries, time_limit=STEP_TIME_LIMIT_MS, **common,
    )(deploy_restore)  # fmt: skip
    # P3: after every step and operator action; NotifyFailed is retried, unlike other DeployErrors
    dramatiq.actor(
        actor_name=DEPLOY_NOTIFY.actor_name, queue_name=queue_name(DEPLOY_NOTIFY.queue_group, Priority.P3),
        max_retries=DEPLOY_NOTIFY.max_retries, min_backoff=NOTIFY_MIN_BACKOFF_MS,
        max_backoff=NOTIFY_MAX_BACKOFF_MS, time_limit=60_000, broker=broker,
        throws=(pydantic.ValidationError,), retry_when=_retry_notify,
    )(deploy_notify)  # fmt: skip


def _retry_notify(retries: int, exc: Exception) -> bool:
    """Retry a failed delivery (up to DEPLOY_NOTIFY.max_retries), not a malformed message."""
    return isinstance(exc, NotifyFailed | redis.RedisError) and retries < (DEPLOY_NOTIFY.max_retries or 0)
