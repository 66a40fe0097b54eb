"""JSON API for workers: status, control commands and their replies, the audit log."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashboard import audit
from dashboard.api_tasks import Instant
from dashboard.appkeys import KEYS, REDIS, USER
from dashboard.snapshot import shape_worker
from shared.control import MAX_PROCESSES, Action, decode_record, issue_async, new_command
from shared.errors import NotFound, ValidationFailed
from shared.keys import Keys
from shared.web import json_response, parse_query, read_json

#: Actions of ``POST /api/worker/{id}/{action}`` (scale has its own route with a body).
SIMPLE_ACTIONS = ("start", "stop", "restart", "pause", "resume")
#: Commands shown in a worker's history.
HISTORY = 50
#: Longest accepted Idempotency-Key header.
MAX_IDEMPOTENCY_KEY = 200


class Scale(BaseModel):
    """Body of ``POST /api/worker/{id}/scale``."""

    model_config = ConfigDict(extra="forbid")
    #: Strict: ``false``, ``1.0`` or ``"2"`` are refused, not read as a number of processes.
    processes: int = Field(ge=0, le=MAX_PROCESSES, strict=True)


class AuditQuery(BaseModel):
    """Query of ``GET /api/audit`` (and of the live ``audit?...`` section): filters and page."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=100, ge=1, le=audit.MAX_AUDIT)
    worker: str | None = Field(default=None, min_length=1, max_length=200, description="A worker's id")
    issuer: str | None = Field(
        default=None, min_length=1, max_length=200, description="Who issued it (a user name or token subject)"
    )
    action: str | None = Field(
        default=None, min_length=1, max_length=64, description="The action, e.g. restart or queue.purge"
    )
    target: str | None = Field(
        default=None, min_length=1, max_length=200, description="Text in the target (case-insensitive)"
    )
    since: Instant | None = None
    until: Instant | None = None
    cursor: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,20}-[0-9]{1,20}$",
        description="next_cursor of the previous page (an audit stream entry id)",
    )

    @field_validator("cursor")
    @classmethod
    def _stream_id(cls, value: str | None) -> str | None:
        if value is not None and any(int(part) >= 2**64 for part in value.split("-")):
            raise ValueError("not an audit entry id (each part below 2**64)")
        return value

    def audit_filter(self) -> audit.AuditFilter:
        """The filters as :class:`dashboard.audit.AuditFilter` (times in epoch seconds)."""
        return audit.AuditFilter(
            worker=self.worker,
            issuer=self.issuer,
            action=self.action,
            target=self.target,
            since=self.since.timestamp() if self.since else None,
            until=self.until.timestamp() if self.until else None,
        )


async def read_audit(client: Any, keys: Keys, query: AuditQuery) -> dict[str, Any]:
    """A page of the audit log as ``GET /api/audit`` answers it."""
    page = await audit.read_page(client, keys, query.limit, query.audit_filter(), query.cursor)
    return {
        "entries": page.entries,
        "next_cursor": page.next_cursor,
        "scanned": page.scanned,
        "scan_limit": audit.SCAN_LIMIT,
        "scan_bounded": page.scan_bounded,
    }


async def worker_list(request: web.Request) -> list[dict[str, Any]]:
    """Every registered worker with its heartbeat fields (``down`` when the heartbeat expired)."""
    client, keys = request.app[REDIS], request.app[KEYS]
    registry = await client.zrange(keys.workers, 0, -1, withscores=True)
    ids = [m.decode() for m, _ in registry]
    raws = await client.mget([keys.worker(i) for i in ids]) if ids else []
    out = []
    for (wid, (_, score)), raw in zip(zip(ids, registry, strict=True), raws, strict=True):
        item = shape_worker(orjson.loads(raw)) if raw else {"id": wid, "state": "down"}
        item["last_seen"] = score / 1000
        out.append(item)
    return out


async def worker_status(request: web.Request) -> web.Response:
    """``GET /api/worker/status``: every worker with its heartbeat fields."""
    return json_response({"workers": await worker_list(request)})


async def worker_detail(request: web.Request) -> web.Response:
    """``GET /api/worker/{id}``: heartbeat, desired state and command history with replies."""
    return json_response(await worker_detail_data(request, request.match_info["id"]))


async def worker_detail_data(request: web.Request, worker_id: str) -> dict[str, Any]:
    """What the worker detail page and API show."""
    return await read_worker_detail(request.app[REDIS], request.app[KEYS], worker_id)


async def read_worker_detail(client: Any, keys: Keys, worker_id: str) -> dict[str, Any]:
    """:func:`worker_detail_data` without a request (the live stream reads it too)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zscore(keys.workers, worker_id)
        pipe.get(keys.worker(worker_id))
        pipe.hgetall(keys.worker_desired(worker_id))
        pipe.xrevrange(keys.worker_commands(worker_id), count=HISTORY)
        score, raw, desired, entries = await pipe.execute()
    if score is None and raw is None and not entries:
        raise NotFound(f"worker {worker_id} not found")
    commands = [orjson.loads(fields[b"command"]) for _, fields in entries]
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.hgetall(keys.command(command["id"]))
        replies = await pipe.execute()
    history = []
    for command, reply in zip(commands, replies, strict=True):
        record = decode_record(reply)
        history.append(record.model_dump(mode="json") if record else {**command, "status": "expired"})
    heartbeat = shape_worker(orjson.loads(raw)) if raw else None
    return {
        "id": worker_id,
        "state": heartbeat["state"] if heartbeat else "down",
        "last_seen": score / 1000 if score is not None else None,
        "heartbeat": heartbeat,
        "desired": {k.decode(): v.decode() for k, v in desired.items()},
        "commands": history,
    }


async def _issue(request: web.Request, action: Action, processes: int | None = None) -> web.Response:
    user = request[USER]
    client, keys = request.app[REDIS], request.app[KEYS]
    worker_id = request.match_info["id"]
    if await client.zscore(keys.workers, worker_id) is None:
        raise NotFound(f"worker {worker_id} is not registered")
    idem = request.headers.get("Idempotency-Key") or None
    if idem is not None and len(idem) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(
            "Idempotency-Key is too long",
            fields=[{"loc": ["header", "Idempotency-Key"], "msg": "at most 200 characters"}],
        )
    command = new_command(worker_id, action, issuer=user.subject, processes=processes)
    created, command_id = await issue_async(client, keys, command, idem)
    return json_response(
        {"command_id": command_id, "created": created, "status_url": f"/api/commands/{command_id}"},
        status=202,
    )


async def control(request: web.Request) -> web.Response:
    """``POST /api/worker/{id}/{start|stop|restart|pause|resume}`` → 202 ``{command_id}``."""
    action = request.match_info["action"]
    if action not in SIMPLE_ACTIONS:
        raise NotFound(f"unknown action {action!r}; one of {', '.join(SIMPLE_ACTIONS)} or scale")
    return await _issue(request, action)  # type: ignore[arg-type]


async def scale(request: web.Request) -> web.Response:
    """``POST /api/worker/{id}/scale`` ``{"processes": n}`` → 202 ``{command_id}``."""
    body = await read_json(request, Scale)
    return await _issue(request, "scale", body.processes)


async def command_reply(request: web.Request) -> web.Response:
    """``GET /api/commands/{id}``: a command with its reply (pending/accepted/done/failed, reason)."""
    command_id = request.match_info["id"]
    record = decode_record(await request.app[REDIS].hgetall(request.app[KEYS].command(command_id)))
    if record is None:
        raise NotFound(f"command {command_id} not found")
    return json_response(record.model_dump(mode="json"))


async def audit_log(request: web.Request) -> web.Response:
    """``GET /api/audit?limit=&worker=&issuer=&action=&target=&since=&until=&cursor=``: control
    actions newest first, one entry per command, a page at a time."""
    query = parse_query(request, AuditQuery)
    return json_response(await read_audit(request.app[REDIS], request.app[KEYS], query))
