"""Response models of the dashboard's JSON API (they generate ``/api/openapi.json``).

Task and deploy records, the services list and the error shape are the coordinator's
(:mod:`shared.schemas`); heartbeats and commands are :mod:`shared.stats` and :mod:`shared.control`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from dashboard.history import Range
from shared.control import Command, CommandRecord
from shared.schemas import TaskPage, TaskRecord
from shared.stats import Heartbeat


class Health(BaseModel):
    """``GET /health``: the process answers."""

    status: Literal["ok"]
    version: str


class StreamStats(BaseModel):
    """The live-stream poller's counters."""

    ticks: int = Field(description="Full reads of the live state.")
    probes: int = Field(description="Reads of the worker registry between ticks.")
    clients: int = Field(description="Open WebSocket viewers of this process.")
    round_trips: int = Field(description="Redis round trips of the poller so far.")
    sections: int = Field(description="Distinct page sections (task:<id>, queue:<name>, …) read per tick.")
    section_reads: int = Field(description="Reads of page sections so far (one per section per tick).")


# -- workers ----------------------------------------------------------------------------------
class LiveWorker(Heartbeat):
    """A worker whose heartbeat is fresh: its heartbeat and when it was last seen."""

    last_seen: float = Field(description="Epoch seconds of the last heartbeat.")


class DownWorker(BaseModel):
    """A registered worker whose heartbeat expired."""

    id: str
    state: Literal["down"]
    last_seen: float


class WorkerList(BaseModel):
    """``GET /api/worker/status``."""

    workers: list[LiveWorker | DownWorker]


class ExpiredCommand(Command):
    """A command whose reply record has expired."""

    status: Literal["expired"]


class WorkerDetail(BaseModel):
    """One worker: heartbeat (null when down), desired state, newest commands with their replies."""

    id: str
    state: str
    last_seen: float | None
    heartbeat: Heartbeat | None
    desired: dict[str, str] = Field(description="What the agent obeys when it (re)starts.")
    commands: list[CommandRecord | ExpiredCommand]


class CommandAccepted(BaseModel):
    """A control command was issued (or, for a repeated Idempotency-Key, found)."""

    command_id: str
    created: bool = Field(description="False when the Idempotency-Key named an earlier command.")
    status_url: str


class AuditEntry(BaseModel):
    """One control action or command: what, on what, by whom, and how it ended (a worker
    command's status goes pending → accepted → done | failed in place, as the agent replies)."""

    at: float = Field(description="When it was issued (epoch seconds).")
    command_id: str | None
    action: str | None
    target: str
    worker: str | None
    processes: int | None
    issuer: str | None = Field(description="The user name of a password login, else the token's sub.")
    status: str
    reason: str | None
    updated_at: float = Field(description="When the status was last written (epoch seconds).")


class AuditLog(BaseModel):
    """``GET /api/audit``: one entry per command, newest first, a page at a time."""

    entries: list[AuditEntry]
    next_cursor: str | None = Field(description="The next (older) page's cursor; None at the end.")
    scanned: int = Field(description="Audit entries this page examined.")
    scan_limit: int
    scan_bounded: bool = Field(description="The page stopped at scan_limit before it was full.")


# -- queues -----------------------------------------------------------------------------------
class QueueRow(BaseModel):
    """One Dramatiq queue's counters."""

    name: str
    priority: str = Field(description="P0..P3, or - for a queue without a priority suffix.")
    ready: int
    in_progress: int | None = Field(
        description="None when the broker cannot tell (RabbitMQ without its management API)."
    )
    delayed: int | None
    dead: int | None
    paused: bool
    counts: str = Field(
        default="all", description="all, or ready-only (RabbitMQ without its management API)."
    )


class QueueStats(BaseModel):
    """``GET /api/queue/stats``."""

    queues: list[QueueRow]


class DelayedMessage(BaseModel):
    """A message waiting for its ETA (epoch ms)."""

    id: str
    actor: str | None
    eta: float | None
    retries: int


class DeadLetter(BaseModel):
    """A message that exhausted its retries."""

    id: str
    actor: str | None
    dead_at: int
    retries: int
    traceback: str | None
    args: Any


class QueueDetail(QueueRow):
    """One queue: counters, delayed messages (soonest first), newest dead letters."""

    delayed_messages: list[DelayedMessage]
    dead_letters: list[DeadLetter]


class QueuePaused(BaseModel):
    """After pause or resume."""

    queue: str
    paused: bool


class QueuePurged(BaseModel):
    """After a purge: ready messages dropped."""

    queue: str
    purged: int


class DeadRefused(BaseModel):
    """A dead letter that was not retried, and why (its task has since ended otherwise)."""

    id: str = Field(description="The dead letter's Redis message id.")
    task_id: str
    reason: str


class DeadRequeued(BaseModel):
    """After a dead-letter retry: messages put back on the queue (each task runs again as a new
    attempt series) and those refused."""

    queue: str
    requeued: int
    refused: list[DeadRefused] = Field(default_factory=list)


# -- tasks ------------------------------------------------------------------------------------
class TaskDetail(TaskRecord):
    """A task (payload, result, error and traceback bounded) with its lifecycle events."""

    timeline: list[dict[str, str]] = Field(description="Lifecycle events, oldest first.")


class TaskRetried(BaseModel):
    """A retry was submitted as a new task."""

    id: str
    retry_of: str
    status_url: str


class TaskSearchPage(TaskPage):
    """``GET /api/tasks``: a page of tasks, newest first, and how much of the index it examined."""

    scanned: int = Field(description="Index entries examined for this page.")
    scan_limit: int = Field(description="Most index entries one page examines.")
    scan_bounded: bool = Field(
        description="The page stopped at scan_limit before it was full: more may match after next_cursor."
    )


class TaskMatch(BaseModel):
    """A task whose id starts with the query."""

    id: str
    type: str
    status: str
    priority: str
    created_at: str | None


class TaskMatches(BaseModel):
    """``GET /api/tasks/find``: tasks whose id starts with ``query``, in id order."""

    query: str
    matches: list[TaskMatch]
    truncated: bool = Field(description="More tasks match than were returned (limit).")


class SavedViewOut(BaseModel):
    """A saved view: its name, the tasks page's filter query and the URL to open."""

    name: str
    query: str
    url: str


class SavedViews(BaseModel):
    """``GET /api/views``: the caller's saved views by name."""

    views: list[SavedViewOut]


class ViewDeleted(BaseModel):
    """A saved view was deleted."""

    deleted: str


class FailureGroup(BaseModel):
    """Failed and dead tasks sharing an exception type."""

    exception: str
    count: int
    types: list[str]
    task_ids: list[str] = Field(description="Up to 5 of them.")
    last_error: str | None


class FailureGroups(BaseModel):
    """``GET /api/tasks/failures``: biggest group first."""

    groups: list[FailureGroup]


# -- metrics history --------------------------------------------------------------------------
class HistoryPoint(BaseModel):
    """Attempts and task outcomes ended in one step of the range; rates and latencies are None
    in a step without data (a gap, not 0)."""

    t: int = Field(description="Epoch seconds of the step's start.")
    processed: int = Field(description="Attempts ended (a task retried twice counts three).")
    failed: int = Field(description="Attempts that ended in an error.")
    retried: int | None = Field(description="Attempts ended to be retried (None with ``type``).")
    tasks: int = Field(description="Tasks that reached a final status (succeeded, failed, dead).")
    tasks_failed: int = Field(description="Tasks whose final status is failed or dead.")
    error_rate: float | None = Field(description="tasks_failed / tasks: the alert's rate.")
    attempt_error_rate: float | None = Field(description="failed / processed.")
    avg_ms: float | None = Field(description="Mean attempt duration (None with ``type``).")
    p50_ms: float | None = Field(description="Median attempt duration, from the latency histogram.")
    p95_ms: float | None


class HistoryTotals(BaseModel):
    """The whole range as one step."""

    processed: int
    failed: int
    retried: int | None
    tasks: int
    tasks_failed: int
    error_rate: float | None
    attempt_error_rate: float | None
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None


class History(BaseModel):
    """``GET /api/metrics/history``."""

    range: Range
    type: str | None = Field(description="The task type asked for; None: every type.")
    step_seconds: int
    points: list[HistoryPoint]
    totals: HistoryTotals


# -- bulk actions, add a task -----------------------------------------------------------------
class TaskCount(BaseModel):
    """``GET /api/tasks/count``: how many tasks a bulk command on the filter would act on."""

    count: int | None = Field(description="None when more than ``limit`` match (too_many).")
    limit: int
    too_many: bool
    message: str | None = None


class BulkDone(BaseModel):
    """A bulk command's outcome: how many it changed, what it skipped and why, its summary."""

    done: int
    skipped: dict[str, int]
    summary: str
    action: str | None = None
    matched: int | None = None
    queue: str | None = None
    queues: dict[str, int] | None = None
    refused: list[DeadRefused] | None = None


class CleanDone(BaseModel):
    """``POST /api/tasks:clean``: records matched (preview) or deleted."""

    preview: bool
    matched: int
    deleted: int
    limit: int
    what: str
    summary: str | None = None


class TaskTypeInfo(BaseModel):
    """One task type a form may submit."""

    name: str
    description: str
    queue_group: str
    schema_: dict[str, Any] = Field(alias="schema", description="JSON schema of its payload.")


class TaskTypes(BaseModel):
    """``GET /api/task-types``."""

    types: list[TaskTypeInfo]
    priorities: list[str]


class TaskAdded(BaseModel):
    """``POST /api/tasks``: the task (a replayed idempotency key gives the first one, 200)."""

    id: str
    status: str
    status_url: str
    created: bool
