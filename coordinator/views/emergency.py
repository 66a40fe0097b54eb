"""The rollback methods as endpoints: ``POST /api/v1/services/{service}/rollback`` (scope ``deploy``;
stable pointer, version, git tag or provider deployment: :mod:`coordinator.service_rollback`) and
``POST /api/v1/workers/stop`` (scope ``admin``; the emergency stop of every worker agent through
the control channel: each gets a ``stop`` command, its desired state ``stopped``, in the audit log
under the caller's name)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coordinator.appkeys import PRINCIPAL, REDIS, SETTINGS, STORE
from coordinator.http import correlation_id, json_response, read_json, redis_deadline
from coordinator.service_rollback import ServiceRollback, roll_back_service
from coordinator.views.deploys import deploy_url
from shared.control import issue_async, new_command
from shared.deploy.store import DeployStore
from shared.errors import NotFound
from shared.logging import get_logger
from shared.schemas import DeployRecord

log = get_logger(__name__)


async def rollback_service(request: web.Request) -> web.Response:
    """Roll a service back: to its stable pointer, a version, a git tag or a provider deployment."""
    principal = request[PRINCIPAL]
    body = await read_json(request, ServiceRollback)
    settings = request.app[SETTINGS]
    async with redis_deadline(request):
        done = await roll_back_service(
            DeployStore(request.app[REDIS], settings), request.app[STORE], settings.services,
            request.match_info["service"], body, principal.subject, correlation_id(request),
        )  # fmt: skip
    deploy = done["deploy"]
    log.info("service rollback", service=deploy["service"], method=done["method"], deploy_id=deploy["id"],
             by=principal.subject)  # fmt: skip
    return json_response({**done, "status_url": deploy_url(deploy["id"])}, status=202)


class ServiceRolledBack(BaseModel):
    """Answer of ``POST /api/v1/services/{service}/rollback``."""

    #: ``stable`` (the stable pointer), ``version``, ``tag`` or ``provider``.
    method: str
    #: The deploy rolled back, or the rollback deploy recorded (``kind: rollback``).
    deploy: DeployRecord
    status_url: str


class WorkersStop(BaseModel):
    """Body of ``POST /api/v1/workers/stop``: ``{"all": true}`` or the worker ids to stop."""

    model_config = ConfigDict(extra="forbid")

    all: bool = False
    workers: list[str] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _some(self) -> WorkersStop:
        if self.all == bool(self.workers):
            raise ValueError("name the workers to stop, or all: true (not both)")
        return self


class WorkerStopped(BaseModel):
    """One stop command."""

    worker: str
    command_id: str
    created: bool


class WorkersStopped(BaseModel):
    """Answer of ``POST /api/v1/workers/stop``."""

    commands: list[WorkerStopped]


async def stop_workers(request: web.Request) -> web.Response:
    """Emergency stop: a ``stop`` command (desired state ``stopped``, audited) to each worker agent."""
    principal = request[PRINCIPAL]
    body = await read_json(request, WorkersStop)
    client, keys = request.app[REDIS], request.app[SETTINGS].keys
    async with redis_deadline(request):
        registered = [m.decode() for m in await client.zrange(keys.workers, 0, -1)]
        unknown = sorted(set(body.workers) - set(registered))
        if unknown:
            fields = [{"loc": ["body", "workers"], "msg": f"unknown: {', '.join(unknown)}"}]
            raise NotFound(f"worker {unknown[0]} is not registered", fields=fields)
        if not registered:
            raise NotFound("no worker agent is registered")
        commands = []
        for worker in registered if body.all else body.workers:
            command = new_command(worker, "stop", issuer=principal.subject)
            created, command_id = await issue_async(client, keys, command)
            commands.append({"worker": worker, "command_id": command_id, "created": created})
    log.warning("emergency stop", workers=len(commands), by=principal.subject)
    return json_response({"commands": commands}, status=202)
