"""One command per rollback method (``POST /api/v1/services/{service}/rollback``).

- nothing named: the *stable pointer* — a running deploy of the service is rolled back (traffic to
  the stable version), else the stable deploy is rolled back to the version stable before it (the
  ``rollback`` action of :func:`shared.deploy.actions.apply_action`);
- ``to`` (a version) or ``tag`` (a git tag ``<service>-stable-<version>-<YYYYMMDD>`` Opsdeck made):
  the newest deploy of the service that made that version stable, and its provider deployment;
- ``provider_deploy``: a deployment id from the provider's own history (Render deploy, Vercel
  deployment), not necessarily one Opsdeck made.

The last three record a one-step deploy ``kind: rollback`` holding the service (409 while another
deploy is active) and send a ``deploy_restore`` message; the worker asks the provider to serve that
deployment again (worker/deploy/restore.py) and makes it the stable version.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.deploy.actions import apply_action
from shared.deploy.config import ServicesFile
from shared.deploy.models import DEPLOY_RESTORE, VERSION_PATTERN
from shared.deploy.store import MAX_LIMIT, DeployStore
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.tasks import Priority
from shared.taskstore import TaskStore

#: Provider deployment ids (Render ``dep-…``, Vercel ``dpl_…``).
PROVIDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"


class ServiceRollback(BaseModel):
    """Body of ``POST /api/v1/services/{service}/rollback``: at most one target (none: the stable pointer)."""

    model_config = ConfigDict(extra="forbid")

    to: str | None = Field(default=None, pattern=VERSION_PATTERN, description="A version once stable.")
    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,250}$", description="Its git tag.")
    provider_deploy: str | None = Field(
        default=None, pattern=PROVIDER_ID_PATTERN, description="A deployment id of the provider's history."
    )

    @model_validator(mode="after")
    def _one(self) -> ServiceRollback:
        if sum(x is not None for x in (self.to, self.tag, self.provider_deploy)) > 1:
            raise ValueError("name at most one of to, tag and provider_deploy")
        return self


def _unknown(field: str, what: str, known: list[str]) -> NotFound:
    listed = ", ".join(known[:10]) or "none yet"
    return NotFound(f"{what}; known: {listed}", fields=[{"loc": ["body", field], "msg": what}])


def _made_stable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deploys (newest first) that made their version stable, with a provider deployment."""
    return [r for r in records if r.get("stable_version") and _provider_id(r)]


def _provider_id(record: dict[str, Any]) -> str | None:
    ids = record.get("provider_ids") or {}
    return record.get("provider_deploy_id") or ids.get("0")


async def _target(
    store: DeployStore, service: str, provider: str, body: ServiceRollback
) -> tuple[str | None, str, str]:
    """``(version, provider deployment id, source)`` of a named target; NotFound naming the field."""
    history = _made_stable(await store.list_deploys(service=service, limit=MAX_LIMIT))
    if body.provider_deploy is not None:
        if provider == "webhook":
            msg = "a webhook service keeps no provider deploy history: name a version (to)"
            raise ValidationFailed(msg, fields=[{"loc": ["body", "provider_deploy"], "msg": msg}])
        known = [r for r in history if _provider_id(r) == body.provider_deploy]
        return (known[0]["stable_version"] if known else None), body.provider_deploy, "provider"
    if body.tag is not None:
        found = [r for r in history if r.get("git_tag") == body.tag]
        if not found:
            tags = [r["git_tag"] for r in history if r.get("git_tag")]
            raise _unknown("tag", f"no deploy of {service!r} made the tag {body.tag!r}", tags)
        return found[0]["stable_version"], str(_provider_id(found[0])), "tag"
    found = [r for r in history if r["stable_version"] == body.to]
    if not found:
        versions = list(dict.fromkeys(r["stable_version"] for r in history))
        raise _unknown("to", f"version {body.to!r} of {service!r} was never stable", versions)
    return body.to, str(_provider_id(found[0])), "version"


async def roll_back_service(
    store: DeployStore,
    tasks: TaskStore,
    services: ServicesFile,
    service: str,
    body: ServiceRollback,
    who: str,
    correlation_id: str,
) -> dict[str, Any]:
    """Apply one rollback method to ``service``; returns ``{method, deploy}`` (the deploy acted on
    or the rollback deploy recorded)."""
    config = services.services.get(service)
    if config is None:
        known = ", ".join(sorted(services.services)) or "none (OPSDECK_SERVICES is unset or empty)"
        raise NotFound(f"unknown service {service!r}; configured: {known}")
    if body.to is None and body.tag is None and body.provider_deploy is None:
        return {"method": "stable", "deploy": await _to_stable(store, tasks, service, who, correlation_id)}
    version, provider_id, source = await _target(store, service, config.provider, body)
    active = await store.active(service)
    if active:
        raise Conflict(f"service {service!r} has an active deploy {active}: roll that one back first "
                       f"(opsdeck deploy rollback {service})")  # fmt: skip
    deploy_id = str(uuid.uuid4())
    await store.create(deploy_id, service, config, version=version, strategy="direct", trigger=who,
                       task_id=deploy_id)  # fmt: skip
    await store.set_fields(
        deploy_id, kind="rollback", rollback_provider_id=provider_id, rollback_source=source
    )
    await tasks.submit(DEPLOY_RESTORE, {"deploy_id": deploy_id}, Priority.P0, subject=who,
                       correlation_id=correlation_id)  # fmt: skip
    return {"method": source, "deploy": await store.get(deploy_id)}


async def _to_stable(
    store: DeployStore, tasks: TaskStore, service: str, who: str, correlation_id: str
) -> dict[str, Any]:
    """Roll back the running deploy, or the stable one to the version stable before it."""
    active = await store.active(service)
    if active:
        return await apply_action(store, tasks, active, "rollback", who, correlation_id)
    stable = (await store.services([service]))[service]["stable"] or {}
    if not stable.get("deploy_id"):
        raise Conflict(f"service {service!r} has no stable version to roll back from")
    record = await store.get(stable["deploy_id"])
    if not record.get("previous_stable"):
        raise Conflict(f"no version of {service!r} was stable before {stable.get('version')}: name one "
                       "with --to VERSION, --tag TAG or --provider-deploy ID")  # fmt: skip
    return await apply_action(store, tasks, stable["deploy_id"], "rollback", who, correlation_id)
