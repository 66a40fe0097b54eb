"""Request and response models of the coordinator API (they also generate /openapi.json); the
records the dashboard answers with too live in :mod:`shared.schemas`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.coaching import MAX_MESSAGE_CHARS, SESSION_PATTERN
from shared.tasks import TaskStatus


class TaskAccepted(BaseModel):
    """Answer to a submission (202 new, 200 replay of an idempotency key)."""

    id: str
    status: str
    status_url: str


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
    #: Redis only: INFO memory's used_memory and maxmemory (bytes; 0 = no limit).
    used_memory_bytes: int | None = None
    maxmemory_bytes: int | None = None


class HealthReport(BaseModel):
    """Overall health with its components."""

    status: Literal["healthy", "degraded", "unhealthy", "ready", "not_ready", "ok"]
    version: str
    components: dict[str, Component] = {}


# -- deploys ----------------------------------------------------------------------------------
class DeployCreate(BaseModel):
    """Body of ``POST /api/v1/deploys``: a configured service, optionally a version and strategy."""

    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, max_length=63, description="A service of the services file.")
    version: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$", description="Commit, image or tag."
    )
    strategy: Literal["direct", "canary", "blue_green"] | None = Field(
        default=None, description="Default: the service's."
    )


class DeployAccepted(BaseModel):
    """Answer to a new deploy: its id, where to follow it, and the task that starts it."""

    id: str
    status: str
    status_url: str
    task_id: str


class DeployListQuery(BaseModel):
    """Query of ``GET /api/v1/deploys``."""

    model_config = ConfigDict(extra="forbid")

    service: str | None = Field(default=None, min_length=1, max_length=63)
    limit: int = Field(default=50, ge=1, le=200)


# -- coaching (chat, feedback, bandit) ---------------------------------------------------------
class ChatRequest(BaseModel):
    """Body of ``POST /api/v1/chat`` (and of each ``/ws/chat`` message)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(pattern=SESSION_PATTERN, description="Conversation id (letters, digits, . _ -).")
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="What the prospect said.")
    user_id: str = Field(min_length=1, max_length=128, description="The seller being coached.")


class ChatQuery(BaseModel):
    """Query of ``POST /api/v1/chat``."""

    model_config = ConfigDict(extra="forbid")

    wait: float = Field(default=0, ge=0, le=10, description="Seconds to wait for the suggestion (0-10).")


class WsQuery(BaseModel):
    """Query of ``GET /ws/chat``: a token for browsers, whose WebSocket API cannot set headers."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(default=None, max_length=4096, description="Bearer token (tasks:write).")


class ChatAccepted(BaseModel):
    """The turn was enqueued (202): poll ``status_url`` or wait for the suggestion."""

    id: str
    status: str
    status_url: str
    session_id: str
    turn_number: int


class ChatSuggestion(BaseModel):
    """One coaching suggestion and the path that produced it."""

    text: str
    arm: Literal["npc", "tools", "knowledge"]
    entry_id: str
    title: str
    source: Literal["builtin", "llm", "cache", "fallback"]
    model: str | None = None


class ChatAnswer(ChatAccepted):
    """The turn ended within ``wait`` (200): the suggestion, or the error when the task failed."""

    arm: str | None = None
    exploration: bool | None = None
    propensity: float | None = None
    suggestion: ChatSuggestion | None = None
    error: str | None = None


class BanditArmStats(BaseModel):
    """One arm: decisions that chose it, ratings applied, mean learned reward (priors excluded)."""

    pulls: int
    updates: int
    mean_reward: float | None


class AlphaScheduleView(BaseModel):
    """``BANDIT_ALPHA_SCHEDULE``: α from ``start`` to ``end`` over ``decisions`` decisions after warm-up."""

    kind: Literal["linear"]
    start: float
    end: float
    decisions: int


class BanditCheckpoint(BaseModel):
    """One kept checkpoint: its id, the applied count it was taken at, and its window's reward."""

    id: int
    applied: int
    created_ms: int
    reward: dict[str, Any] = Field(
        description="Rewards (0-1) of the ratings since the checkpoint before: count, mean, std, per arm."
    )


class BanditSummary(BaseModel):
    """``GET /api/v1/bandit``."""

    phase: Literal["warmup", "learned"]
    alpha: float = Field(
        description="Exploration weight of the next decision (BANDIT_ALPHA or the schedule's)."
    )
    alpha_schedule: AlphaScheduleView | None = None
    decisions: int
    warmup: int
    arms: dict[str, BanditArmStats]
    window: dict[str, Any] = Field(description="Statistics of the last 1000 ratings (rewards 0-1).")
    applied: int = Field(description="Ratings applied since the bandit was created (rollbacks included).")
    checkpoints: list[BanditCheckpoint] = Field(description="Kept checkpoints, newest first.")
    rollbacks: list[dict[str, Any]] = Field(
        description="The last rollback records, newest first: at_ms, trigger (auto|manual), checkpoint, "
        "checkpoint_applied, applied, epoch and reason (the check that decided it, or who asked)."
    )
    rollbacks_total: dict[str, int] = Field(description="Rollbacks by trigger (auto, manual), ever.")
    last_check: dict[str, Any] | None = Field(
        description="The last automatic rollback check: both z statistics, the critical value, why, outcome."
    )


class BanditRollbackRequest(BaseModel):
    """``POST /api/v1/bandit/rollback``: the kept checkpoint to go back to."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: int = Field(ge=1, strict=True, description="A checkpoint id from GET /api/v1/bandit.")


class BanditRollback(BaseModel):
    """The rollback record (as listed in ``GET /api/v1/bandit``'s ``rollbacks``)."""

    at_ms: int
    trigger: Literal["auto", "manual"]
    checkpoint: int
    checkpoint_applied: int
    applied: int
    epoch: int
    reason: dict[str, Any]
