"""Deploy statuses, the ``deploy`` task type and the deploy record codec.

A deploy is a task like any other (``{"type": "deploy", "payload": {"service": ...}}``); its
actor creates a *deploy record* and drives it through one ``deploy_step`` message per step.
A deploy's id is the id of the ``deploy`` task that started it, so ``/api/v1/tasks/{id}`` and
``/api/v1/deploys/{id}`` name the same rollout.

    queued → in_progress → canary → … → promoting → succeeded
    blue-green (``phase``): in_progress (preview) → canary (pre-promotion analysis, 0 %) →
                 promoting (switched: 100 %, old version kept) → succeeded (old version retired)
                 │            │  ↕ paused
                 │            │  ↕ awaiting_confirmation (``confirm``; promote goes on, a timeout aborts)
                 │            │  ↕ paused, inconclusive analysis (``inconclusive_step``; promote goes on)
                 └────────────┴──→ failed | rolled_back | canceled
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.deploy.config import SERVICE_NAME, ServiceConfig, ServicesFile, Strategy, blue_green_problem
from shared.store import decode_hash, iso
from shared.tasks import TaskType

#: Versions: commit SHAs, image references, semver, ...
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$"
#: A deploy id (a UUID).
ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class DeployStatus(enum.StrEnum):
    """Lifecycle of a deploy record."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    CANARY = "canary"
    PAUSED = "paused"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELED = "canceled"


#: Statuses of a deploy that still holds its service.
ACTIVE_STATUSES = frozenset(
    {DeployStatus.QUEUED, DeployStatus.IN_PROGRESS, DeployStatus.CANARY, DeployStatus.PAUSED,
     DeployStatus.AWAITING_CONFIRMATION, DeployStatus.PROMOTING}
)  # fmt: skip
#: Statuses after which a deploy never changes again (except a manual rollback of a success).
TERMINAL_STATUSES = frozenset(
    {DeployStatus.SUCCEEDED, DeployStatus.FAILED, DeployStatus.ROLLED_BACK, DeployStatus.CANCELED}
)

#: Operator actions on a deploy (``POST /api/v1/deploys/{id}/<action>``).
Action = Literal["promote", "pause", "resume", "abort", "rollback"]


def configured_services(context: object) -> dict[str, ServiceConfig]:
    """The services of a payload's validation context (the settings: ``settings.services``), or none."""
    services = getattr(context, "services", None)
    return services.services if isinstance(services, ServicesFile) else {}


class DeployPayload(BaseModel):
    """Payload of the ``deploy`` task: which service, optionally which version and strategy."""

    model_config = ConfigDict(extra="forbid")

    service: str = Field(pattern=SERVICE_NAME, description="A service of the services file.")
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)
    strategy: Strategy | None = None
    recorded: bool = Field(
        default=False, description="Set by POST /api/v1/deploys, which writes the record itself."
    )

    @field_validator("service")
    @classmethod
    def _known(cls, name: str, info: ValidationInfo) -> str:
        """A service of the services file: the validation context is the process's settings
        (``model_validate(..., context=settings)``); without them no service is configured."""
        services = configured_services(info.context)
        if not services:
            raise ValueError("no services configured (OPSDECK_SERVICES is unset or empty)")
        if name not in services:
            raise ValueError(f"unknown service {name!r}; configured: {', '.join(sorted(services))}")
        return name

    @field_validator("strategy")
    @classmethod
    def _possible(cls, strategy: str | None, info: ValidationInfo) -> str | None:
        """A blue-green rollout of a service that can have one (:func:`blue_green_problem`)."""
        config = configured_services(info.context).get(info.data.get("service") or "")
        problem = blue_green_problem(config) if config is not None and strategy == "blue_green" else None
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return strategy


class StepPayload(BaseModel):
    """Payload of a ``deploy_step`` message: run step ``step`` of a deploy, or apply an action."""

    model_config = ConfigDict(extra="forbid")

    deploy_id: str = Field(pattern=ID_PATTERN)
    step: int = Field(default=0, ge=0, le=100)
    #: ``timeout``: internal, sent delayed by ``confirm_timeout_seconds`` when a rollout starts to
    #: wait for a confirmation; it aborts the rollout if it is still waiting then.
    #: ``retire``: internal, sent delayed by ``blue_green.scale_down_delay_seconds`` after a
    #: blue-green switch; the old version is retired and the rollout succeeds.
    action: Literal["run", "abort", "rollback", "promote", "resume", "timeout", "analyze", "retire"] = "run"
    #: ``analyze``: internal, the index of the analysis round (one sample of every gate) of step
    #: ``step`` to take; sent delayed by the gates' interval while the step's pause lasts.
    sample: int | None = Field(default=None, ge=0, le=100000)


#: The public task type (``POST /api/v1/tasks`` with ``"type": "deploy"``; listed in shared.task_types).
DEPLOY = TaskType(
    "deploy",
    DeployPayload,
    "Starts a rollout of payload.service (see /api/v1/deploys).",
    queue_group="deploy",
    max_retries=2,
)
#: Internal: one message per step or operator action; not in the allow-list, so not submittable.
DEPLOY_STEP = TaskType("deploy_step", StepPayload, "One step of a rollout.", queue_group="deploy")


class RestorePayload(BaseModel):
    """Payload of a ``deploy_restore`` message: put a recorded earlier deployment back live."""

    model_config = ConfigDict(extra="forbid")

    deploy_id: str = Field(pattern=ID_PATTERN)


class NotifyPayload(BaseModel):
    """Payload of a ``deploy_notify`` message: one event of a deploy to tell the team about."""

    model_config = ConfigDict(extra="forbid")

    deploy_id: str = Field(pattern=ID_PATTERN)
    #: What happened, unique per deploy (``started``, ``canary:2``, ``paused:1``, ``rolled_back``).
    event: str = Field(pattern=r"^[a-z_]{1,40}(:[0-9]{1,3})?$")


#: Internal: ``opsdeck deploy rollback`` to a version, tag or provider deployment (worker/deploy/restore.py).
DEPLOY_RESTORE = TaskType(
    "deploy_restore", RestorePayload, "Put an earlier deployment back live.", queue_group="deploy"
)
#: Internal: one team notification per deploy event (worker/deploy/notify.py), retried with backoff.
DEPLOY_NOTIFY = TaskType(
    "deploy_notify", NotifyPayload, "Tell the team about a deploy event.", queue_group="deploy", max_retries=8
)

#: Record fields holding JSON documents.
JSON_FIELDS = frozenset(
    {"steps", "gates", "provider_ids", "previous_stable", "history", "analysis", "measurements"}
)
#: Record fields holding integers.
INT_FIELDS = frozenset(
    {
        "step",
        "weight",
        "next_sent",
        "transient_errors",
        "created_at",
        "started_at",
        "updated_at",
        "finished_at",
        "confirm_step",
        "confirmed_step",
        "confirm_deadline",
        "inconclusive_step",
        "accepted_step",
        "switched_at",
        "retire_at",
        "retired_at",
    }
)
#: Timestamps (ms) rendered as ISO 8601.
TIME_FIELDS = ("created_at", "started_at", "updated_at", "finished_at", "confirm_deadline", "switched_at",
               "retire_at", "retired_at")  # fmt: skip


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Record fields as Redis hash values (JSON for documents, "" for None)."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key in JSON_FIELDS:
            out[key] = orjson.dumps(value).decode()
        elif value is None:
            out[key] = ""
        else:
            out[key] = str(value.value if isinstance(value, enum.Enum) else value)
    return out


def decode_deploy(raw: dict[bytes, bytes] | dict[str, str], *, iso_times: bool = True) -> dict[str, Any]:
    """A deploy hash as a dict (JSON parsed, ints converted, "" as None, times as ISO 8601)."""
    out = decode_hash(raw, JSON_FIELDS, INT_FIELDS, empty_as_none=True)
    if iso_times:
        for field in TIME_FIELDS:
            out[field] = iso(out.get(field))
    return out
