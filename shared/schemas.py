"""Response models both web apps answer with (and document in their OpenAPI): the error shape,
task records, deploy records and configured services."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.tasks import TaskStatus


# -- errors -----------------------------------------------------------------------------------
class ErrorField(BaseModel):
    """One offending field: where it is and what is wrong."""

    loc: list[str | int]
    msg: str


class ErrorDetail(BaseModel):
    """Machine-readable code, human message, offending fields."""

    code: str
    message: str
    fields: list[ErrorField] = []


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    error: ErrorDetail


# -- tasks ------------------------------------------------------------------------------------
class TaskRecord(BaseModel):
    """A task as stored: what was asked, what happened, when."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    queue: str | None = None
    priority: str | None = None
    status: TaskStatus
    payload: Any = None
    attempts: int = 0
    duplicates: int | None = Field(
        default=None,
        description="Executions that ran although another attempt was current or the task had "
        "ended (a process stalled past its lease); noted, not recorded as ends. Absent when none.",
    )
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    correlation_id: str | None = None
    trace_id: str | None = Field(
        default=None,
        description="OpenTelemetry trace id (32 hex digits) of the request that submitted the task, "
        "when tracing is on and the request was sampled: its worker attempts are spans of that trace.",
    )
    submitted_by: str | None = None
    idempotency_key: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None


class TaskPage(BaseModel):
    """A page of tasks, newest first."""

    items: list[TaskRecord]
    next_cursor: str | None


# -- deploys ----------------------------------------------------------------------------------
class GateRun(BaseModel):
    """Gates of one step: every check's result and whether all passed."""

    model_config = ConfigDict(extra="allow")

    step: int
    weight: int
    ok: bool
    results: list[dict[str, Any]] = []


class Measurement(BaseModel):
    """One sample of one gate in a step's analysis run (the record keeps the newest 500)."""

    step: int = Field(description="The step (0-based) whose run took it.")
    index: int = Field(description="The round of that run (0-based); (step, index, metric) is unique.")
    metric: str = Field(
        description="smoke[i] (the i-th smoke URL), error_rate, p99_seconds or a query's name."
    )
    value: float | None = Field(default=None, description="The measured value (a smoke URL's HTTP status).")
    verdict: Literal["success", "failure", "inconclusive", "error"]
    at: int = Field(description="When it was taken (ms since the epoch).")
    detail: str | None = None


class DeployRecord(BaseModel):
    """A deploy: what, who, where it is in the rollout, gate results and provider ids."""

    model_config = ConfigDict(extra="allow")

    id: str
    service: str
    version: str | None = None
    strategy: Literal["direct", "canary", "blue_green"]
    provider: str
    status: Literal["queued", "in_progress", "canary", "paused", "awaiting_confirmation", "promoting",
                    "succeeded", "failed", "rolled_back", "canceled"]  # fmt: skip
    trigger: str | None = None
    task_id: str | None = None
    steps: list[int]
    step: int
    weight: int
    gates: list[GateRun] = []
    provider_ids: dict[str, str] | None = None
    previous_stable: dict[str, Any] | None = None
    error: str | None = None
    analysis: dict[str, Any] | None = Field(
        default=None,
        description="The current step's analysis run: step, weight, rounds, interval, next, state "
        "(running, passed, failed, inconclusive), counts per gate, reasons.",
    )
    measurements: list[Measurement] = []
    paused_reason: str | None = Field(default=None, description="Why an inconclusive analysis paused it.")
    inconclusive_step: int | None = Field(default=None, description="The step a paused analysis waits on.")
    accepted_step: int | None = Field(default=None, description="The inconclusive step an operator accepted.")
    phase: str | None = Field(
        default=None,
        description="Blue-green only: preview, analysis, switching, switched (old version kept until "
        "retire_at), retired, discarded (pre-promotion analysis failed) or switched_back.",
    )
    preview_url: str | None = Field(
        default=None, description="The new version's own address ({preview_url})."
    )
    switched_at: str | None = Field(default=None, description="Blue-green: when all traffic moved.")
    retire_at: str | None = Field(default=None, description="Blue-green: until when a rollback is one write.")
    created_at: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None


class DeployList(BaseModel):
    """Deploys, newest first."""

    items: list[DeployRecord]


class StableVersion(BaseModel):
    """The version a service returns to on rollback."""

    version: str
    deploy_id: str | None = None
    provider_deploy_id: str | None = None
    at: str | None = None


class ServiceInfo(BaseModel):
    """A configured service with its stable and current versions."""

    name: str
    provider: str
    strategy: str
    steps: list[int]
    pause_seconds: float
    router: str
    stable: StableVersion | None = None
    current_version: str | None = None
    active_deploy: dict[str, Any] | None = None


class ServiceList(BaseModel):
    """Every service of the services file (empty when OPSDECK_SERVICES is unset)."""

    items: list[ServiceInfo]
