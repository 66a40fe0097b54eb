"""Response and query models of the coordinator API (they also generate /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.tasks import TaskStatus


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


class TaskAccepted(BaseModel):
    """Answer to a submission (202 new, 200 replay of an idempotency key)."""

    id: str
    status: str
    status_url: str


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
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    correlation_id: str | None = None
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


class TaskListQuery(BaseModel):
    """Query of ``GET /api/v1/tasks``."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = None
    type: str | None = Field(default=None, min_length=1, max_length=64)
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)


class Component(BaseModel):
    """Health of one dependency."""

    status: Literal["ok", "degraded", "down"]
    latency_ms: float | None = None
    detail: str | None = None


class HealthReport(BaseModel):
    """Overall health with its components."""

    status: Literal["healthy", "degraded", "unhealthy", "ready", "not_ready", "ok"]
    version: str
    components: dict[str, Component] = {}
