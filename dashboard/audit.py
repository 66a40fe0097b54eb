"""The audit log: every control action, who issued it and its outcome, one entry per command.

An entry is one entry of the ``Keys.audit`` stream (``id`` the command id, a ``command`` JSON with
``id``, ``action``, ``issuer``, ``issued_at``, ``worker`` or ``target``, plus ``status`` and
``reason``). Worker commands are written by :func:`shared.control.issue_async` (status pending) and
their outcome is updated in place by the agent's replies (``Keys.audit_outcomes``, the command id
→ ``{status, reason, updated_at}``); queue and task actions taken in the dashboard are written here
with their outcome. Entries written before that (three per worker command: pending, accepted,
done) are read as one row per command, its newest status.

Reading is a walk of the stream from the newest (or from a cursor, the last entry id a page
examined) down to the time range's start, filtered by worker, issuer, action and target, examining
at most :data:`SCAN_LIMIT` entries per page.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.control import AUDIT_MAXLEN
from shared.keys import Keys
from shared.store import script_source

#: Largest page of ``GET /api/audit``.
MAX_AUDIT = 500
#: Stream entries one page examines at most (filters that match little stop there, with a cursor).
SCAN_LIMIT = 2_000
#: Entries read per round trip while filtering.
BATCH = 500


async def record(
    client: Any, keys: Keys, action: str, target: str, issuer: str, *, status: str = "done", reason: str = ""
) -> str:
    """Append a dashboard action (e.g. ``queue.purge`` on ``queue default.p2``); returns its id."""
    action_id = str(uuid.uuid4())
    command = {
        "id": action_id,
        "worker": "",
        "target": target,
        "action": action,
        "issuer": issuer,
        "issued_at": time.time(),
    }
    script = client.register_script(script_source("audit_add"))
    await script(
        keys=[keys.audit, keys.audit_outcomes],
        args=[AUDIT_MAXLEN, action_id, orjson.dumps(command), status, reason],
    )
    return action_id


def _json(raw: bytes | None) -> dict[str, Any]:
    try:
        value = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def decode_entry(entry_id: bytes, fields: dict[bytes, bytes], outcome: bytes | None = None) -> dict[str, Any]:
    """One audit stream entry as the API shows it (its outcome, when one was written, wins)."""
    command = _json(fields.get(b"command"))
    done = _json(outcome) if outcome else {}
    worker = command.get("worker") or ""
    at = int(entry_id.split(b"-")[0]) / 1000
    return {
        "at": at,
        "command_id": command.get("id"),
        "action": command.get("action"),
        "target": command.get("target") or (f"worker {worker}" if worker else ""),
        "worker": worker or None,
        "processes": command.get("processes"),
        "issuer": command.get("issuer"),
        "status": done.get("status") or fields.get(b"status", b"").decode(),
        "reason": done.get("reason") if done else (fields.get(b"reason", b"").decode() or None),
        "updated_at": done.get("updated_at") or at,
    }


@dataclass(frozen=True)
class AuditFilter:
    """What a page of the audit log shows: exact worker, issuer and action, text in the target
    (case-insensitive), a time range (epoch seconds, inclusive)."""

    worker: str | None = None
    issuer: str | None = None
    action: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None

    @property
    def narrows(self) -> bool:
        """True when some entries in the time range may not match."""
        return any((self.worker, self.issuer, self.action, self.target))

    def matches(self, e: dict[str, Any]) -> bool:
        """Does entry ``e`` pass the filters (the time range is the walk's)?"""
        return (
            (not self.worker or e["worker"] == self.worker)
            and (not self.issuer or e["issuer"] == self.issuer)
            and (not self.action or e["action"] == self.action)
            and (not self.target or self.target.lower() in (e["target"] or "").lower())
        )


@dataclass
class AuditPage:
    """A page: entries newest first, where the next page starts, how much was examined."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None
    scanned: int = 0
    #: The page stopped at SCAN_LIMIT before it was full (``next_cursor`` goes on from there).
    scan_bounded: bool = False


class _Walk:
    """Collects one page: one row per command id (the newest status of a legacy command's rows)."""

    def __init__(self, limit: int, flt: AuditFilter) -> None:
        self.limit, self.flt = limit, flt
        self.page = AuditPage()
        self.rows: dict[str, dict[str, Any]] = {}

    @property
    def full(self) -> bool:
        return len(self.page.entries) >= self.limit

    def take(self, entry_id: bytes, e: dict[str, Any]) -> bool:
        """Consume one entry; False (not consumed) when the page is full and it starts a new row."""
        key = e["command_id"] or entry_id.decode()
        shown = self.rows.get(key)
        if shown is not None:  # an older row of a command shown already (data before one-row entries)
            shown["at"] = min(shown["at"], e["at"])
        elif self.full:
            return False
        elif self.flt.matches(e):
            self.rows[key] = e
            self.page.entries.append(e)
        self.page.scanned += 1
        self.page.next_cursor = entry_id.decode()
        return True


def _ms(seconds: float) -> str:
    return str(max(0, int(seconds * 1000)))


async def read_page(
    client: Any, keys: Keys, limit: int, flt: AuditFilter | None = None, cursor: str | None = None
) -> AuditPage:
    """A page of the audit log, newest first, from ``cursor`` (an entry id; None: the newest)."""
    flt = flt or AuditFilter()
    walk = _Walk(limit, flt)
    if cursor and set(cursor) <= {"0", "-"}:
        return walk.page  # 0-0 is before every entry (and Redis refuses the interval "(0-0")
    # stream ids are milliseconds since the epoch (a time before it is the start)
    high = f"({cursor}" if cursor else (_ms(flt.until) if flt.until is not None else "+")
    low = _ms(flt.since) if flt.since is not None else "-"
    while walk.page.scanned < SCAN_LIMIT:
        count = min(SCAN_LIMIT - walk.page.scanned, BATCH if flt.narrows else limit + 20)
        entries = await client.xrevrange(keys.audit, max=high, min=low, count=count)
        ids = [_json(fields.get(b"command")).get("id") or "" for _, fields in entries]
        outcomes = await client.hmget(keys.audit_outcomes, ids) if entries else []
        for (entry_id, fields), outcome in zip(entries, outcomes, strict=True):
            if not walk.take(entry_id, decode_entry(entry_id, fields, outcome)):
                return walk.page  # more entries follow this full page
        if len(entries) < count:
            walk.page.next_cursor = None  # the walk reached the range's start
            return walk.page
        if walk.full:
            return walk.page
        high = f"({entries[-1][0].decode()}"
    walk.page.scan_bounded = True
    return walk.page


async def recent(client: Any, keys: Keys, limit: int, worker: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries (of one worker when ``worker`` is given), newest first."""
    return (await read_page(client, keys, limit, AuditFilter(worker=worker))).entries
