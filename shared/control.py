"""Worker control: the commands an operator sends to a worker agent, and their replies.

A command is persisted twice: as the agent's *desired state* (``state`` running|paused|stopped and
``processes``), which an agent obeys when it (re)starts, and as an entry of the agent's command
stream with a record that carries the reply (pending → accepted → done | failed, with a reason).
Every command names its issuer and is one entry of the audit log, whose outcome the agent's replies
update in place (:func:`outcome_field`). The same idempotency key returns the first command instead
of issuing a second one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from shared import tracing
from shared.keys import Keys
from shared.store import script_source

Action = Literal["start", "stop", "restart", "pause", "resume", "scale"]
CommandStatus = Literal["pending", "accepted", "done", "failed"]
DesiredState = Literal["running", "paused", "stopped"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "restart", "pause", "resume", "scale")
#: Desired state after each action (scale keeps the state; restart ends running).
DESIRED_AFTER: dict[str, DesiredState | None] = {
    "start": "running", "stop": "stopped", "restart": "running",
    "pause": "paused", "resume": "running", "scale": None,
}  # fmt: skip
#: Command records and idempotency keys live this long (seconds).
COMMAND_TTL = 7 * 24 * 3600
#: Most Dramatiq processes one agent may be scaled to.
MAX_PROCESSES = 64
#: Entries the audit log keeps (the oldest go, with their outcomes, as new ones come).
AUDIT_MAXLEN = 10_000


class Command(BaseModel):
    """One control command."""

    id: str
    worker: str
    action: Action
    processes: int | None = Field(default=None, ge=0, le=MAX_PROCESSES)
    issuer: str
    issued_at: float
    #: W3C traceparent of the request that issued it (shared.tracing): the agent's span continues it.
    traceparent: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )


class CommandRecord(Command):
    """A command with its reply as the API shows it."""

    status: CommandStatus = "pending"
    reason: str | None = None
    updated_at: float | None = None


def new_command(worker: str, action: Action, *, issuer: str, processes: int | None = None) -> Command:
    """A command with a fresh id, validated (``scale`` needs ``processes``)."""
    if action == "scale" and processes is None:
        raise ValueError("scale needs processes")
    return Command(
        id=str(uuid.uuid4()),
        worker=worker,
        action=action,
        processes=processes,
        issuer=issuer,
        issued_at=time.time(),
        traceparent=tracing.current_context()[0] or None,
    )


def issue_call(keys: Keys, command: Command, idempotency_key: str | None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``shared/lua/issue_command.lua`` for ``command``."""
    desired = DESIRED_AFTER[command.action]
    record = command.model_dump(mode="json")
    fields: list[Any] = []
    for name, value in {**record, "status": "pending", "updated_at": command.issued_at}.items():
        if value is not None:
            fields += [name, value]
    return (
        [
            keys.command(command.id),
            keys.command_idempotency(idempotency_key) if idempotency_key else "",
            keys.worker_desired(command.worker),
            keys.worker_commands(command.worker),
            keys.audit,
            keys.audit_outcomes,
        ],
        [
            command.id, COMMAND_TTL, desired or "", "" if command.processes is None else command.processes,
            command.model_dump_json(), AUDIT_MAXLEN, *fields,
        ],
    )  # fmt: skip


def outcome_field(status: CommandStatus, reason: str | None, at: float) -> bytes:
    """The audit outcome of a command (the value under its id in ``Keys.audit_outcomes``)."""
    return orjson.dumps({"status": status, "reason": reason or None, "updated_at": at})


def decode_record(raw: dict[bytes, bytes]) -> CommandRecord | None:
    """A command hash as a CommandRecord (None when it does not exist)."""
    if not raw:
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    return CommandRecord.model_validate(data)


def issue(client: Any, keys: Keys, command: Command, idempotency_key: str | None = None) -> tuple[bool, str]:
    """Issue ``command`` with a synchronous client; returns (issued, command id)."""
    script = client.register_script(script_source("issue_command"))
    ks, args = issue_call(keys, command, idempotency_key)
    created, command_id = script(keys=ks, args=args)
    return bool(created), command_id.decode()


async def issue_async(
    client: Any, keys: Keys, command: Command, idempotency_key: str | None = None
) -> tuple[bool, str]:
    """Issue ``command`` with an asyncio client; returns (issued, command id)."""
    script = client.register_script(script_source("issue_command"))
    ks, args = issue_call(keys, command, idempotency_key)
    created, command_id = await script(keys=ks, args=args)
    return bool(created), command_id.decode()
