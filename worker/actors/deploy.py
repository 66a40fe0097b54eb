"""Deploy actors: ``deploy`` (the public task type: record and start a rollout) and
``deploy_step`` (one message per step or operator action; see worker/deploy/machine.py)."""

from __future__ import annotations

from typing import Any

import dramatiq
import pydantic
from dramatiq import Broker
from dramatiq.middleware import CurrentMessage

from shared.deploy.models import DEPLOY, DEPLOY_STEP, DeployPayload, StepPayload
from shared.redis import sync_client
from shared.settings import Settings
from shared.tasks import Priority, queue_name
from worker.deploy.errors import DeployError
from worker.deploy.machine import Rollout
from worker.deploy.state import DeployState

#: Step messages wait at most this long in Dramatiq's time limit (polls hand over long before).
STEP_TIME_LIMIT_MS = 10 * 60 * 1000


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

    rollout = Rollout(DeployState(client, settings), settings, schedule)

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
