"""JSON API for deploys: history, one rollout, operator actions and the configured services.

Reads are open to every dashboard role; ``promote``/``pause``/``resume``/``abort``/``rollback``
need an operator or admin (and, through :mod:`dashboard.guard`, CSRF and same origin). Actions go
through :func:`shared.deploy.actions.apply_action`, exactly as ``/api/v1/deploys/{id}/<action>``
on the coordinator, and are written to the audit log.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.appkeys import KEYS, REDIS, SETTINGS, STORE, USER
from shared.deploy.actions import ACTIONS, apply_action, service_summaries
from shared.deploy.store import MAX_LIMIT, DeployStore, checked_id
from shared.errors import NotFound
from shared.web import json_response, parse_query


class DeployQuery(BaseModel):
    """Query of ``GET /api/deploys``."""

    model_config = ConfigDict(extra="forbid")
    service: str | None = Field(default=None, min_length=1, max_length=63)
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)


def deploy_store(request: web.Request) -> DeployStore:
    """A deploy store on the dashboard's Redis client."""
    return DeployStore(request.app[REDIS], request.app[SETTINGS])


def checked_deploy_id(request: web.Request) -> str:
    """The route's deploy id; 404 unless it looks like one (a UUID)."""
    return checked_id(request.match_info["id"])


async def deploy_rows(request: web.Request, service: str | None, limit: int) -> list[dict[str, Any]]:
    """Deploy records newest first, optionally of one service."""
    return await deploy_store(request).list_deploys(service=service, limit=limit)


async def service_rows(request: web.Request) -> list[dict[str, Any]]:
    """The services of the dashboard's services file with their stable version and active deploy."""
    return await service_summaries(deploy_store(request), request.app[SETTINGS].services)


async def deploy_list(request: web.Request) -> web.Response:
    """``GET /api/deploys?service=&limit=``: deploy history, newest first."""
    query = parse_query(request, DeployQuery)
    return json_response({"items": await deploy_rows(request, query.service, query.limit)})


async def deploy_detail(request: web.Request) -> web.Response:
    """``GET /api/deploys/{id}``: one deploy record (steps, weight, gates, error, history)."""
    return json_response(await deploy_store(request).get(checked_deploy_id(request)))


async def act(request: web.Request) -> web.Response:
    """``POST /api/deploys/{id}/{action}``: promote, pause, resume, abort or roll back (202).

    404 for an unknown deploy or action, 409 when the deploy's status refuses the action.
    """
    user = request[USER]
    deploy_id = checked_deploy_id(request)
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise NotFound(f"unknown deploy action {action!r}; one of {', '.join(ACTIONS)}")
    record = await apply_action(
        deploy_store(request), request.app[STORE], deploy_id, action, user.subject, os.urandom(16).hex()
    )
    await audit.record(
        request.app[REDIS], request.app[KEYS], f"deploy.{action}", f"deploy {deploy_id}", user.subject
    )
    return json_response(record, status=202)


async def services(request: web.Request) -> web.Response:
    """``GET /api/services``: configured services with their stable version and active deploy."""
    return json_response({"items": await service_rows(request)})
