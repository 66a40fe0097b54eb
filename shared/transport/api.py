"""What the rooms ask of the message transport, named for what it does, not for a broker.

Two small interfaces, one per caller that needs the broker's own state:

- :class:`QueueAdmin` (async; the dashboard): every queue's counters, its delayed messages and
  dead letters, a dead-letter retry and delete, running a delayed message now, and a purge;
- :class:`BrokerUpkeep` (sync; the worker agent): the broker's periodic maintenance and the queue
  depths the agent exports as metrics.

The other two sides of the transport are not objects but places: a submission is enqueued by the
task store's submit script (with the Redis broker the script writes Dramatiq's message itself, see
``shared/lua/submit.lua``), and a worker process consumes through the broker that
``worker.broker.build_broker`` builds (Dramatiq's, with Opsdeck's consumer). ``shared.transport``
hands out the implementation that matches the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class RetryOutcome:
    """What a dead-letter retry did: how many messages it requeued, and which it refused and why
    (a task that has since ended otherwise, or runs again already, would only be skipped)."""

    requeued: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)

    def tally(self, message_id: str, task_id: str, reply: Any) -> None:
        """Count one message's script reply: its task's status (bytes) refuses it, a non-zero
        number requeued it, 0 skipped it (no longer there)."""
        if isinstance(reply, bytes):
            reason = f"task already {reply.decode()}"
            self.refused.append({"id": message_id, "task_id": task_id, "reason": reason})
        elif int(reply):
            self.requeued += 1


class QueueAdmin(Protocol):
    """The broker's queues as an operator sees and changes them."""

    async def stats(self, queues: list[str], paused: set[str]) -> list[dict[str, Any]]:
        """Rows ``{name, priority, ready, in_progress, delayed, dead, paused}``, one per queue."""
        ...

    def stats_commands(self, pipe: Any, queues: list[str]) -> int:
        """Queue on a caller's Redis pipeline the reads :meth:`stats_from` decodes (so a reader
        of many things pays one round trip); returns how many replies they make (0 when the
        broker's counters are not in Redis)."""
        ...

    async def stats_from(
        self, replies: list[Any], queues: list[str], paused: set[str]
    ) -> list[dict[str, Any]]:
        """:meth:`stats` from the replies of :meth:`stats_commands` (or from the broker itself)."""
        ...

    async def delayed_messages(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` delayed messages of ``queue`` (id, actor, eta ms, retries), soonest first."""
        ...

    async def dead_letters(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` dead letters of ``queue`` (id, actor, dead_at, retries, traceback, args)."""
        ...

    async def retry_dead_letters(self, queue: str, ids: list[str] | None, *, by: str) -> RetryOutcome:
        """Run dead letters again as a new attempt series (all of them when ``ids`` is None)."""
        ...

    async def delete_dead_letters(self, queue: str, ids: list[str]) -> int:
        """Delete dead letters of ``queue`` (the ids its :meth:`dead_letters` names as
        ``message_id``, else ``id``); how many were deleted. The task records stay. Raises
        :class:`shared.errors.Unsupported` when the broker's dead letters cannot be deleted one by one."""
        ...

    async def promote_delayed(self, queue: str, ids: list[str], *, by: str) -> RetryOutcome:
        """Run delayed messages of ``queue`` now instead of at their ETA (``requeued`` counts them;
        a task that has ended or runs already is refused). Raises :class:`shared.errors.Unsupported`
        when the broker's delayed messages cannot be reached."""
        ...

    async def purge(self, queue: str) -> int:
        """Drop the ready messages of ``queue`` (their tasks end ``canceled``); how many."""
        ...


class BrokerUpkeep(Protocol):
    """The agent's periodic broker work."""

    def maintain(self, queues: Iterable[str]) -> None:
        """Redeliver the unacked messages of dead consumers, expire old dead letters (raises the
        broker's errors; the agent logs them and tries again next tick)."""
        ...

    def depths(self, queues: list[str]) -> dict[str, dict[str, int]]:
        """``{queue: {ready, delayed, dead}}``."""
        ...
