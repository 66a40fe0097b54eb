"""Task types, priorities and queue names; the registry class of the allow-list both sides share.

The allow-list itself is one explicit list in :mod:`shared.task_types`; importing a module
registers nothing. A task type names the Dramatiq actor that runs it and the pydantic model its payload must
satisfy. The coordinator validates with that model and enqueues by actor name; the worker
registers an actor of the same name. Unknown types are rejected before anything is enqueued.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from shared.settings import Settings


class Priority(enum.StrEnum):
    """Priority classes; each maps to its own queue and workers drain P0 first."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """0 for P0 (most urgent) to 3 for P3."""
        return int(self.value[1])


class TaskStatus(enum.StrEnum):
    """Lifecycle of a task record."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELED = "canceled"


#: Statuses after which a task never runs again (unless an operator retries it).
TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD, TaskStatus.CANCELED})


@cache
def queue_name(group: str, priority: Priority) -> str:
    """The Dramatiq queue of a queue group at a priority, e.g. ``default.p0``."""
    return f"{group}.{priority.value.lower()}"


#: Task type names and queue groups: safe as Dramatiq actor and queue names and in key names.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


@cache
def accepts_any_object(model: type[BaseModel]) -> bool:
    """True for a model that takes any JSON object unchanged (no fields, extra allowed, no
    validators, serializers or computed fields), e.g. ``EchoPayload``: validating it is a copy."""
    decorators = model.__pydantic_decorators__
    return (
        not model.model_fields
        and not model.model_computed_fields
        and model.model_config.get("extra") == "allow"
        and not (decorators.validators or decorators.field_validators or decorators.root_validators)
        and not (decorators.model_validators or decorators.model_serializers or decorators.field_serializers)
    )


@dataclass(frozen=True, slots=True)
class TaskType:
    """One allowed task type: its actor, payload model, queue group and retry policy."""

    name: str
    payload_model: type[BaseModel]
    description: str
    queue_group: str = "default"
    #: Retries after the first attempt; None uses ``TASK_MAX_RETRIES``.
    max_retries: int | None = None
    #: Name of the Dramatiq actor that runs this type (the type name itself).
    actor_name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actor_name", self.name)  # a slot, not a property: read per request

    def queues(self) -> list[str]:
        """This type's queues, most urgent first."""
        return [queue_name(self.queue_group, p) for p in Priority]

    def encode_payload(self, payload: dict[str, Any], context: Settings | None = None) -> bytes:
        """The payload as validated by the type's model, encoded as JSON (what the message and the
        task record carry); pydantic's ValidationError when the model refuses it. ``context``: the
        process's settings, the models' validation context (``deploy`` checks its service against
        ``settings.services``)."""
        model = self.payload_model
        if accepts_any_object(model):
            return orjson.dumps(payload)
        validated = model.__pydantic_validator__.validate_python(payload, context=context)
        return model.__pydantic_serializer__.to_json(validated)


class TaskRegistry:
    """An allow-list of task types by name, built from an explicit list (see :mod:`shared.task_types`).

    ``internal`` types have actors and queues but are not submittable: :meth:`get` does not find
    them, :meth:`all_queues` includes their queues.
    """

    def __init__(self, types: Iterable[TaskType] = (), *, internal: Iterable[TaskType] = ()) -> None:
        self._by_name: dict[str, TaskType] = {}
        self._internal: dict[str, TaskType] = {}
        #: The allow-list by name, read-only and live.
        self.by_name: Mapping[str, TaskType] = MappingProxyType(self._by_name)
        for task_type in types:
            self.register(task_type)
        for task_type in internal:
            self._internal[self._check(task_type).name] = task_type

    def _check(self, task_type: TaskType) -> TaskType:
        for what, value in (("name", task_type.name), ("queue group", task_type.queue_group)):
            if not NAME_PATTERN.fullmatch(value):
                raise ValueError(f"task type {what} {value!r} must match {NAME_PATTERN.pattern}")
        existing = self._by_name.get(task_type.name) or self._internal.get(task_type.name)
        if existing is not None and existing != task_type:
            raise ValueError(f"task type {task_type.name!r} is already registered differently")
        return task_type

    def register(self, task_type: TaskType) -> TaskType:
        """Add a task type to the allow-list (idempotent for the same definition)."""
        self._by_name[self._check(task_type).name] = task_type
        return task_type

    def get(self, name: str) -> TaskType | None:
        """The allowed task type called ``name``, or None."""
        return self._by_name.get(name)

    def task_types(self) -> dict[str, TaskType]:
        """All allowed task types by name."""
        return dict(self._by_name)

    def internal(self) -> dict[str, TaskType]:
        """The internal (not submittable) task types by name."""
        return dict(self._internal)

    def all_queues(self) -> list[str]:
        """Every queue of every type (internal ones too), most urgent class first (``default`` first)."""
        types = (*self._by_name.values(), *self._internal.values())
        groups = sorted({t.queue_group for t in types}, key=lambda g: (g != "default", g))
        return [queue_name(g, p) for p in Priority for g in groups]


# -- built-in diagnostic task types ----------------------------------------------------------
class EchoPayload(BaseModel):
    """Any JSON object; the result is the payload itself."""

    model_config = ConfigDict(extra="allow")


class SleepPayload(BaseModel):
    """Sleep for ``seconds`` (0 to 300), then succeed."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=300)


class FailPayload(BaseModel):
    """Raise with ``message``: retried per policy, then dead."""

    model_config = ConfigDict(extra="forbid")
    message: str = Field(default="requested failure", max_length=1000)


ECHO = TaskType("echo", EchoPayload, "Returns its payload as the result.")
SLEEP = TaskType("sleep", SleepPayload, "Sleeps for payload.seconds (0-300) and succeeds.")
FAIL = TaskType("fail", FailPayload, "Raises payload.message; retried per policy, then dead.")


class TaskSubmission(BaseModel):
    """Body of ``POST /api/v1/tasks``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64, description="A registered task type.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Validated by the type's model.")
    priority: Priority = Field(default=Priority.P2, description="P0 (most urgent) to P3.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Same key (per token subject) returns the first task and enqueues nothing.",
    )
