"""Async access to deploy records (coordinator and dashboard): create, read, list, act.

The scripts that change deploy records atomically live in ``shared/deploy/lua/`` (the worker's
:mod:`worker.deploy.state` runs them too), loaded like every Opsdeck script by
:func:`shared.store.lua_source`: ``deploy_create`` adds a record and claims its service (one
active deploy per service; ``exclusive``: a busy service is a conflict, the API's 409; otherwise
the deploy is queued behind the active one and claims the service later with ``deploy_claim``),
``deploy_release`` frees the service, ``deploy_action`` applies an operator action.
"""

from __future__ import annotations

import re
import time
from typing import Any

import redis.asyncio as aioredis

from shared.deploy.config import ServiceConfig
from shared.deploy.models import ID_PATTERN, DeployStatus, decode_deploy, encode_fields
from shared.errors import Conflict, NotFound
from shared.keys import Keys
from shared.settings import Settings
from shared.store import iso, lua_source

#: Largest page of ``GET /api/v1/deploys``.
MAX_LIMIT = 200
#: Record fields a list leaves out (``GET /api/v1/deploys/{id}`` has them).
LIST_OMITS = frozenset({b"measurements"})
_ID = re.compile(ID_PATTERN)


def checked_id(deploy_id: str) -> str:
    """``deploy_id`` when it looks like one (a UUID); NotFound otherwise, without asking Redis."""
    if not _ID.match(deploy_id):
        raise NotFound(f"deploy {deploy_id} not found")
    return deploy_id


def new_record(
    deploy_id: str,
    service: str,
    config: ServiceConfig,
    *,
    version: str | None,
    strategy: str | None,
    trigger: str,
    now_ms: int,
) -> dict[str, Any]:
    """The fields of a fresh, queued deploy record."""
    chosen = strategy or config.strategy
    return {
        "id": deploy_id, "service": service, "version": version, "strategy": chosen,
        "provider": config.provider, "router": config.router.type, "status": DeployStatus.QUEUED,
        "trigger": trigger, "steps": config.steps(chosen), "step": 0, "weight": 0, "gates": [],
        "provider_ids": {}, "history": [], "created_at": now_ms, "updated_at": now_ms,
    }  # fmt: skip


def create_args(keys: Keys, record: dict[str, Any], *, exclusive: bool) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``shared/deploy/lua/deploy_create.lua`` for ``record``."""
    flat: list[Any] = []
    for k, v in encode_fields(record).items():
        flat += [k, v]
    service = record["service"]
    return (
        [keys.deploy(record["id"]), keys.deploys_all, keys.deploys_by_service(service),
         keys.deploy_active(service)],
        [record["id"], record["created_at"], "1" if exclusive else "0", keys.deploy(""), *flat],
    )  # fmt: skip


def decode_stable(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    """A stable-version hash as ``{version, deploy_id, provider_deploy_id, at}`` (None if unset)."""
    if not raw:
        return None
    out: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    at = out.get("at")
    out["at"] = iso(int(at)) if at else None
    return out


class DeployStore:
    """Deploy records through an asyncio Redis client."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = settings.keys
        self._create = client.register_script(lua_source("shared.deploy", "deploy_create"))
        self._action = client.register_script(lua_source("shared.deploy", "deploy_action"))

    async def create(
        self,
        deploy_id: str,
        service: str,
        config: ServiceConfig,
        *,
        version: str | None,
        strategy: str | None,
        trigger: str,
        task_id: str,
    ) -> dict[str, Any]:
        """Record a queued deploy holding its service; Conflict when the service is busy."""
        record = new_record(
            deploy_id, service, config, version=version, strategy=strategy, trigger=trigger,
            now_ms=time.time_ns() // 1_000_000,
        )  # fmt: skip
        keys, args = create_args(self.keys, {**record, "task_id": task_id}, exclusive=True)
        outcome, other = (x.decode() for x in await self._create(keys=keys, args=args))
        if outcome == "conflict":
            raise Conflict(
                f"service {service!r} already has an active deploy {other}",
                fields=[{"loc": ["body", "service"], "msg": f"deploy {other} is active"}],
            )
        return await self.get(record["id"])

    async def active(self, service: str) -> str | None:
        """Id of the service's active deploy, or None."""
        current = (await self.services([service]))[service]["active_deploy"]
        return str(current["id"]) if current else None

    async def set_fields(self, deploy_id: str, **fields: Any) -> None:
        """Set some fields of a record."""
        await self.client.hset(self.keys.deploy(deploy_id), mapping=encode_fields(fields))

    async def get(self, deploy_id: str) -> dict[str, Any]:
        """One record; NotFound when unknown."""
        raw = await self.client.hgetall(self.keys.deploy(deploy_id))
        if not raw:
            raise NotFound(f"deploy {deploy_id} not found")
        return decode_deploy(raw)

    async def list_deploys(self, *, service: str | None, limit: int) -> list[dict[str, Any]]:
        """Records newest first, optionally of one service, without their ``measurements`` (up to
        500 each: :meth:`get` has them), so a page of 200 stays small: two pipelined round trips,
        each record's field names, then every field but those."""
        index = self.keys.deploys_by_service(service) if service else self.keys.deploys_all
        ids = [i.decode() for i in await self.client.zrevrange(index, 0, min(limit, MAX_LIMIT) - 1)]
        async with self.client.pipeline(transaction=False) as pipe:
            for deploy_id in ids:
                pipe.hkeys(self.keys.deploy(deploy_id))
            names = await pipe.execute()
        wanted = [(d, [n for n in f if n not in LIST_OMITS]) for d, f in zip(ids, names, strict=True) if f]
        async with self.client.pipeline(transaction=False) as pipe:
            for deploy_id, fields in wanted:
                pipe.hmget(self.keys.deploy(deploy_id), fields)
            values = await pipe.execute()
        return [
            decode_deploy({k: v for k, v in zip(fields, row, strict=True) if v is not None})
            for (_, fields), row in zip(wanted, values, strict=True)
            if any(v is not None for v in row)  # not deleted between the two calls
        ]

    async def act(self, deploy_id: str, action: str, who: str) -> tuple[dict[str, Any], bool]:
        """Apply an operator action; returns the record and whether a step message must be sent."""
        record = await self.get(deploy_id)
        steps_left = "1" if (record.get("step") or 0) < len(record.get("steps") or [100]) - 1 else "0"
        reply = await self._action(
            keys=[self.keys.deploy(deploy_id)], args=[action, who, time.time_ns() // 1_000_000, steps_left]
        )
        outcome, status, *rest = (x.decode() for x in reply)
        if outcome == "missing":
            raise NotFound(f"deploy {deploy_id} not found")
        if outcome == "conflict":
            raise Conflict(f"cannot {action} deploy {deploy_id}: it is {status}")
        return await self.get(deploy_id), rest == ["1"]

    async def services(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Per service: its stable version and its active deploy (id, version, status)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.deploy_stable(name))
                pipe.get(self.keys.deploy_active(name))
            replies = await pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(names):
            stable, active = decode_stable(replies[2 * i]), replies[2 * i + 1]
            current = None
            if active:
                rec = await self.client.hmget(self.keys.deploy(active.decode()), ["version", "status"])
                if rec[1] is not None and rec[1].decode() in {s.value for s in DeployStatus} - {
                    "succeeded",
                    "failed",
                    "rolled_back",
                    "canceled",
                }:
                    current = {"id": active.decode(), "version": (rec[0] or b"").decode() or None,
                               "status": rec[1].decode()}  # fmt: skip
            out[name] = {"stable": stable, "active_deploy": current}
        return out
