"""Every Redis key and channel name Opsdeck uses, in one place.

Opsdeck's own keys live under ``KEY_PREFIX`` (default ``opsdeck:``) so two deployments can
share one Redis; Dramatiq's keys live under its namespace (default ``dramatiq``) and are
named here too because the coordinator enqueues without Dramatiq's broker object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (a prefix and a Dramatiq namespace)."""

    prefix: str = "opsdeck:"
    dramatiq_namespace: str = "dramatiq"

    # -- task store --------------------------------------------------------------------------
    def task(self, task_id: str) -> str:
        """Hash: one task record (type, queue, status, payload, result, timestamps, ...)."""
        return f"{self.prefix}task:{task_id}"

    @property
    def task_prefix(self) -> str:
        """Prefix of task record keys (used by the Lua scripts to build ``task(id)``)."""
        return f"{self.prefix}task:"

    @property
    def tasks_all(self) -> str:
        """Sorted set: every task id, scored by creation time in microseconds."""
        return f"{self.prefix}tasks:all"

    def tasks_by_status(self, status: str) -> str:
        """Sorted set: task ids currently in ``status``, scored by creation time (µs)."""
        return f"{self.prefix}tasks:status:{status}"

    @property
    def tasks_status_prefix(self) -> str:
        """Prefix of the per-status index keys (used by the Lua scripts)."""
        return f"{self.prefix}tasks:status:"

    def tasks_by_type(self, task_type: str) -> str:
        """Sorted set: task ids of one task type, scored by creation time (µs)."""
        return f"{self.tasks_type_prefix}{task_type}"

    @property
    def tasks_type_prefix(self) -> str:
        """Prefix of the per-type index keys (used by the Lua scripts)."""
        return f"{self.prefix}tasks:type:"

    def idempotency(self, subject: str, key: str) -> str:
        """String: the task id first submitted by ``subject`` with this idempotency key."""
        return f"{self.idempotency_prefix}{subject}:{key}"

    @property
    def idempotency_prefix(self) -> str:
        """Prefix of idempotency keys (used by the Lua scripts)."""
        return f"{self.prefix}idem:"

    @property
    def task_events(self) -> str:
        """Stream (capped): task lifecycle events ``{id, type, status, ts, worker}``."""
        return f"{self.prefix}events:tasks"

    # -- workers -----------------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Sorted set: worker agent ids scored by their last heartbeat (ms)."""
        return f"{self.prefix}workers"

    def worker(self, worker_id: str) -> str:
        """String (JSON, expires after 3 poll intervals): a worker agent's heartbeat."""
        return f"{self.prefix}worker:{worker_id}"

    def worker_process(self, worker_id: str, pid: int) -> str:
        """Hash: counters of one Dramatiq process (processed, failed, in_flight)."""
        return f"{self.prefix}worker:{worker_id}:proc:{pid}"

    # -- Dramatiq's own keys (see dramatiq/brokers/redis/dispatch.lua) ------------------------
    def queue(self, queue_name: str) -> str:
        """List: ids of ready messages of a Dramatiq queue."""
        return f"{self.dramatiq_namespace}:{queue_name}"

    def queue_messages(self, queue_name: str) -> str:
        """Hash: message id → encoded message of a Dramatiq queue."""
        return f"{self.dramatiq_namespace}:{queue_name}.msgs"

    def delay_queue(self, queue_name: str) -> str:
        """List: ids of delayed messages (retries with backoff) of a Dramatiq queue."""
        return f"{self.dramatiq_namespace}:{queue_name}.DQ"

    def dead_letters(self, queue_name: str) -> str:
        """Sorted set: dead-lettered message ids of a Dramatiq queue."""
        return f"{self.dramatiq_namespace}:{queue_name}.XQ"

    @property
    def broker_heartbeats(self) -> str:
        """Sorted set: Dramatiq broker ids scored by their last dispatch call (ms)."""
        return f"{self.dramatiq_namespace}:__heartbeats__"
