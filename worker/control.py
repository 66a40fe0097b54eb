"""The agent's side of worker control: read commands, reply to them, and know when they are done.

Commands arrive on the agent's stream (see :mod:`shared.control`). Each is answered ``accepted``
at once and ``done`` when its effect is visible (processes stopped, replaced, paused, ...), or
``failed`` with a reason when it cannot be carried out or does not finish in time. The stream
cursor is stored in Redis, so an agent that restarts does not run old commands again; their
effect is already in the desired state, which it applies at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.control import Command, CommandStatus, DesiredState, outcome_field
from shared.keys import Keys

log = logging.getLogger("worker.control")

#: Most commands read per poll.
BATCH = 20


@dataclass
class Pending:
    """An accepted command waiting for its effect."""

    command: Command
    done: Callable[[], bool]
    deadline: float


class CommandIntake:
    """Reads one agent's command stream and writes replies and audit outcomes."""

    def __init__(self, client: redis.Redis, keys: Keys, worker_id: str) -> None:
        self.client = client
        self.keys = keys
        self.worker_id = worker_id
        self.pending: list[Pending] = []

    def desired(self) -> tuple[DesiredState | None, int | None]:
        """The persisted desired state and process count (None where never set)."""
        raw = self.client.hgetall(self.keys.worker_desired(self.worker_id))
        state = raw.get(b"state")
        processes = raw.get(b"processes")
        return (
            state.decode() if state else None,
            int(processes) if processes else None,
        )

    def poll(self) -> list[Command]:
        """Commands issued since the last poll (the cursor moves past them)."""
        cursor_key = self.keys.worker_command_cursor(self.worker_id)
        cursor = self.client.get(cursor_key) or b"0-0"
        reply = self.client.xread({self.keys.worker_commands(self.worker_id): cursor}, count=BATCH)
        commands: list[Command] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                try:
                    commands.append(Command.model_validate_json(fields[b"command"]))
                except ValueError:
                    log.warning("ignoring malformed command %s", entry_id)
                cursor = entry_id
        if commands:
            self.client.set(cursor_key, cursor)
        return commands

    def answer(self, command: Command, status: CommandStatus, reason: str | None = None) -> None:
        """Record a reply on the command and as the outcome of its audit entry."""
        now = time.time()
        fields = {"status": status, "updated_at": now, **({"reason": reason} if reason else {})}
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.command(command.id), mapping=fields)
            # the command's one audit entry (written with the command) gets its outcome in place
            pipe.hset(self.keys.audit_outcomes, command.id, outcome_field(status, reason, now))
            pipe.execute()
        log.info("command %s %s: %s%s", command.action, command.id, status, f" ({reason})" if reason else "")

    def wait_for(self, command: Command, done: Callable[[], bool], timeout: float) -> None:
        """Answer ``done`` once ``done()`` holds, or ``failed`` after ``timeout`` seconds."""
        self.pending.append(Pending(command, done, time.monotonic() + timeout))

    def settle(self) -> None:
        """Answer the pending commands whose effect is visible or whose time is up."""
        still: list[Pending] = []
        for item in self.pending:
            if item.done():
                self.answer(item.command, "done")
            elif time.monotonic() > item.deadline:
                self.answer(item.command, "failed", "did not complete in time")
            else:
                still.append(item)
        self.pending = still
