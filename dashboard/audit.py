"""The audit log: every control action, who issued it and its outcome (one Redis stream).

Worker commands are written there by :func:`shared.control.issue_async` and by the agent's
replies; queue and task actions taken in the dashboard are written here, in the same shape
(a ``command`` JSON with ``id``, ``action``, ``issuer``, ``issued_at`` plus ``status``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from shared.keys import Keys

#: Approximate cap of the audit stream (as the agent's replies use).
AUDIT_MAXLEN = 10_000
#: Largest page of ``GET /api/audit``.
MAX_AUDIT = 500


async def record(
    client: Any, keys: Keys, action: str, target: str, issuer: str, *, status: str = "done", reason: str = ""
) -> str:
    """Append a dashboard action (e.g. ``queue.purge`` on ``default.p2``); returns its id."""
    action_id = str(uuid.uuid4())
    command = {
        "id": action_id,
        "worker": "",
        "target": target,
        "action": action,
        "issuer": issuer,
        "issued_at": time.time(),
    }
    await client.xadd(
        keys.audit,
        {"command": orjson.dumps(command), "status": status, "reason": reason},
        maxlen=AUDIT_MAXLEN,
        approximate=True,
    )
    return action_id


def decode_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One audit stream entry as the API shows it."""
    try:
        command = orjson.loads(fields.get(b"command", b"{}"))
    except orjson.JSONDecodeError:
        command = {}
    if not isinstance(command, dict):
        command = {}
    worker = command.get("worker") or ""
    return {
        "at": int(entry_id.split(b"-")[0]) / 1000,
        "command_id": command.get("id"),
        "action": command.get("action"),
        "target": command.get("target") or (f"worker {worker}" if worker else ""),
        "worker": worker or None,
        "processes": command.get("processes"),
        "issuer": command.get("issuer"),
        "status": fields.get(b"status", b"").decode(),
        "reason": fields.get(b"reason", b"").decode() or None,
    }


async def recent(client: Any, keys: Keys, limit: int, worker: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries (of one worker when ``worker`` is given), newest first."""
    scan = min(MAX_AUDIT * 10, limit * 10) if worker else limit
    entries = await client.xrevrange(keys.audit, count=scan)
    out = [decode_entry(eid, fields) for eid, fields in entries]
    if worker:
        out = [e for e in out if e["worker"] == worker]
    return out[:limit]
