"""Operator actions on a deploy, shared by the coordinator API and the dashboard.

:func:`apply_action` checks what the store cannot (a rollback of a succeeded deploy must name the
service's stable version), sets the flag atomically with :meth:`DeployStore.act` (``NotFound`` /
``Conflict`` when the record is missing or its status refuses the action) and, when the worker
must act, enqueues a ``deploy_step`` message at P0. :func:`service_summaries` lists the
configured services with their stable version and active deploy.
"""

from __future__ import annotations

from typing import Any

from shared.deploy.config import ServicesFile
from shared.deploy.models import DEPLOY_STEP, DeployStatus
from shared.deploy.store import DeployStore
from shared.errors import Conflict
from shared.tasks import Priority
from shared.taskstore import TaskStore

#: Actions an operator may apply (the last segment of the action routes).
ACTIONS = ("promote", "pause", "resume", "abort", "rollback")


async def apply_action(
    store: DeployStore,
    tasks: TaskStore,
    deploy_id: str,
    action: str,
    who: str,
    correlation_id: str,
) -> dict[str, Any]:
    """Apply ``action`` to deploy ``deploy_id`` on behalf of ``who``; returns the updated record."""
    if action == "rollback":
        record = await store.get(deploy_id)
        if record["status"] == DeployStatus.SUCCEEDED:
            stable = (await store.services([record["service"]]))[record["service"]]["stable"] or {}
            if stable.get("deploy_id") != deploy_id:
                raise Conflict(f"deploy {deploy_id} is not the stable version of {record['service']}")
    record, enqueue = await store.act(deploy_id, action, who)
    if enqueue:
        await tasks.submit(
            DEPLOY_STEP,
            {"deploy_id": deploy_id, "step": record["step"] or 0, "action": action},
            Priority.P0,
            subject=who,
            correlation_id=correlation_id,
        )
    return record


async def service_summaries(store: DeployStore, services_file: ServicesFile) -> list[dict[str, Any]]:
    """The services of ``services_file`` (the settings' ``OPSDECK_SERVICES``) with their stable
    and current versions."""
    services = services_file.services
    state = await store.services(sorted(services))
    items: list[dict[str, Any]] = []
    for name in sorted(services):
        config, info = services[name], state[name]
        stable, active = info["stable"], info["active_deploy"]
        items.append({
            "name": name, "provider": config.provider, "strategy": config.strategy, "steps": config.steps(),
            "pause_seconds": config.canary.pause_seconds, "router": config.router.type, "stable": stable,
            "current_version": (active or {}).get("version") or (stable or {}).get("version"),
            "active_deploy": active,
        })  # fmt: skip
    return items
