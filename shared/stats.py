"""The worker heartbeat: what a worker agent publishes and every reader parses."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: Running task ids a heartbeat carries per process.
MAX_TASKS_SHOWN = 20

WorkerState = Literal["starting", "running", "paused", "stopping", "stopped"]


class ProcessStats(BaseModel):
    """One Dramatiq process under an agent."""

    pid: int
    alive: bool
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    started_at: float
    restarts: int = 0
    in_flight: int = 0
    processed: int = 0
    failed: int = 0
    #: Ids of the tasks it runs now (its lease set), at most MAX_TASKS_SHOWN, sorted.
    tasks: list[str] = Field(default_factory=list, max_length=MAX_TASKS_SHOWN)


class Heartbeat(BaseModel):
    """A worker agent's published state (key expires after 3 poll intervals)."""

    id: str
    host: str
    pid: int
    state: WorkerState
    version: str
    started_at: float
    sent_at: float
    uptime_seconds: float
    cpu_percent: float = Field(description="Agent plus its processes, percent of one core.")
    rss_bytes: int
    memory_percent: float
    processes: int = Field(description="Dramatiq processes alive now.")
    processes_desired: int
    threads: int
    in_flight: int
    processed: int = Field(description="Attempts ended (any outcome), since the agent started.")
    failed: int = Field(description="Attempts that ended in an error.")
    queues: list[str]
    procs: list[ProcessStats] = Field(default_factory=list)
