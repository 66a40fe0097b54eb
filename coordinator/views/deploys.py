"""``/api/v1/deploys`` and ``/api/v1/services``: start, follow and steer rollouts (scope ``deploy``).

The coordinator records a deploy and enqueues its ``deploy`` task; the worker does the work.
Operator actions set a flag on the record (atomically, refused with 409 when the status does
not allow them) and, where the worker must act, enqueue a ``deploy_step`` message at P0.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from coordinator.appkeys import PRINCIPAL, REDIS, SETTINGS, STORE
from coordinator.http import correlation_id, json_response, parse_query, read_json, redis_deadline
from coordinator.schemas import DeployCreate, DeployListQuery
from shared.deploy.actions import apply_action, service_summaries
from shared.deploy.config import blue_green_problem
from shared.deploy.models import DEPLOY
from shared.deploy.store import DeployStore, checked_id
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.tasks import Priority


def deploy_url(deploy_id: str) -> str:
    """Where to follow a deploy (the ``deploy`` route)."""
    return f"/api/v1/deploys/{deploy_id}"


def _store(request: web.Request) -> DeployStore:
    return DeployStore(request.app[REDIS], request.app[SETTINGS])


def _deploy_id(request: web.Request) -> str:
    return checked_id(request.match_info["task_id"])


async def create_deploy(request: web.Request) -> web.Response:
    """Enqueue a deploy of a configured service and record it (409 while the service is busy)."""
    principal = request[PRINCIPAL]
    body = await read_json(request, DeployCreate)
    services = request.app[SETTINGS].services.services
    config = services.get(body.service)
    if config is None:
        msg = (
            f"unknown service; configured: {', '.join(sorted(services))}"
            if services
            else "no services configured (OPSDECK_SERVICES is unset or empty)"
        )
        fields = [{"loc": ["body", "service"], "msg": msg}]
        raise ValidationFailed(f"cannot deploy {body.service!r}", fields=fields)
    problem = blue_green_problem(config) if body.strategy == "blue_green" else None
    if problem is not None:
        fields = [{"loc": ["body", "strategy"], "msg": f"{problem[0]}: {problem[1]}"}]
        raise ValidationFailed(f"cannot deploy {body.service!r} blue-green", fields=fields)
    store = _store(request)
    async with redis_deadline(request):
        active = await store.active(body.service)
    if active:
        raise Conflict(f"service {body.service!r} already has an active deploy {active}")
    strategy = body.strategy or config.strategy
    payload = {"service": body.service, "version": body.version, "strategy": strategy, "recorded": True}
    tasks = request.app[STORE]
    submitted = await tasks.submit(
        DEPLOY, payload, Priority.P1, subject=principal.subject, correlation_id=correlation_id(request)
    )
    try:
        async with redis_deadline(request):
            record = await store.create(
                submitted.task_id, body.service, config, version=body.version, strategy=strategy,
                trigger=principal.subject, task_id=submitted.task_id,
            )  # fmt: skip
    except Conflict:  # lost a race with another deploy of the service: take the task back
        with contextlib.suppress(Conflict, NotFound):
            await tasks.cancel(submitted.task_id)
        raise
    url = deploy_url(record["id"])
    return json_response(
        {"id": record["id"], "status": record["status"], "status_url": url, "task_id": submitted.task_id},
        status=202,
        headers={"Location": url},
    )


async def list_deploys(request: web.Request) -> web.Response:
    """Deploys newest first, optionally of one service."""
    query = parse_query(request, DeployListQuery)
    async with redis_deadline(request):
        items = await _store(request).list_deploys(service=query.service, limit=query.limit)
    return json_response({"items": items})


async def get_deploy(request: web.Request) -> web.Response:
    """One deploy record."""
    deploy_id = _deploy_id(request)
    async with redis_deadline(request):
        return json_response(await _store(request).get(deploy_id))


async def _act(request: web.Request, action: str) -> web.Response:
    principal = request[PRINCIPAL]
    deploy_id = _deploy_id(request)
    async with redis_deadline(request):
        record = await apply_action(
            _store(request), request.app[STORE], deploy_id, action, principal.subject, correlation_id(request)
        )
    return json_response(record, status=202)


async def promote_deploy(request: web.Request) -> web.Response:
    """Skip the remaining canary steps: go to 100 % now (gates still run); a deploy awaiting
    confirmation (``confirm`` in the services file) goes on to the step it waits before."""
    return await _act(request, "promote")


async def pause_deploy(request: web.Request) -> web.Response:
    """Hold the rollout after the current step."""
    return await _act(request, "pause")


async def resume_deploy(request: web.Request) -> web.Response:
    """Continue a paused rollout."""
    return await _act(request, "resume")


async def abort_deploy(request: web.Request) -> web.Response:
    """Stop a rollout and return traffic to the stable version (status canceled)."""
    return await _act(request, "abort")


async def rollback_deploy(request: web.Request) -> web.Response:
    """Roll back a running deploy, or the service's current stable deploy to the previous stable."""
    return await _act(request, "rollback")


async def list_services(request: web.Request) -> web.Response:
    """Configured services with their stable and current versions."""
    async with redis_deadline(request):
        items = await service_summaries(_store(request), request.app[SETTINGS].services)
    return json_response({"items": items})
