"""The allow-list: every task type of Opsdeck, registered by one explicit list.

Coordinator validation, the OpenAPI enum, the dashboard, the worker's actor declaration, the
metrics zero-fill and the agent's queue list all read :data:`REGISTRY`. Importing a module
registers nothing: a type defined elsewhere (``shared.coaching``, ``shared.deploy.models``)
is allowed because it is named here, whatever else the process imported (Dramatiq's
``broker.declare_actor``, arq's ``functions=[...]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.coaching import COACH, FEEDBACK
from shared.deploy.models import DEPLOY, DEPLOY_NOTIFY, DEPLOY_RESTORE, DEPLOY_STEP
from shared.tasks import ECHO, FAIL, SLEEP, TaskRegistry, TaskType

#: The task types a client may submit (``POST /api/v1/tasks``), in display order.
TASK_TYPES: Final[tuple[TaskType, ...]] = (ECHO, SLEEP, FAIL, COACH, FEEDBACK, DEPLOY)
#: Types with an actor and a queue that only Opsdeck sends (rollout steps, restores, notifications).
INTERNAL_TASK_TYPES: Final[tuple[TaskType, ...]] = (DEPLOY_STEP, DEPLOY_RESTORE, DEPLOY_NOTIFY)

#: This process's allow-list; :meth:`~shared.tasks.TaskRegistry.register` adds to it (benchmarks).
REGISTRY: Final = TaskRegistry(TASK_TYPES, internal=INTERNAL_TASK_TYPES)
#: The allow-list by name, read-only and live.
BY_NAME: Final[Mapping[str, TaskType]] = REGISTRY.by_name


def register(task_type: TaskType) -> TaskType:
    """Add a task type to this process's allow-list (idempotent for the same definition)."""
    return REGISTRY.register(task_type)


def get_task_type(name: str) -> TaskType | None:
    """The allowed task type called ``name``, or None."""
    return REGISTRY.get(name)


def task_types() -> dict[str, TaskType]:
    """All allowed task types by name."""
    return REGISTRY.task_types()


def all_queues() -> list[str]:
    """Every queue of every type, most urgent class first (``default`` group first)."""
    return REGISTRY.all_queues()
