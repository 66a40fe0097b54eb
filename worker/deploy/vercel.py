"""Vercel: create a deployment, poll ``readyState``, promote, roll back.

``POST /v13/deployments``, ``GET /v13/deployments/{id}``, ``POST
/v10/projects/{projectId}/promote/{deploymentId}``, ``POST
/v9/projects/{projectId}/rollback/{deploymentId}``; bearer ``VERCEL_TOKEN``, ``teamId`` from
``VERCEL_TEAM_ID`` when set. The base URL is ``VERCEL_API_URL``.

A deployment is created with the meta values ``opsdeck_deploy_id`` and ``opsdeck_step``; before
repeating a creation whose answer was lost (worker killed mid-call), :meth:`find` asks ``GET
/v6/deployments?projectId=&meta-opsdeck_deploy_id=&meta-opsdeck_step=`` and adopts what it lists.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from shared.deploy.config import VercelOptions
from shared.settings import Settings
from worker.deploy.errors import ProviderError, ProviderRejected
from worker.deploy.http import request
from worker.deploy.providers import ProviderStatus, StepContext, retry_policy, secret

#: readyState values that end a deployment unsuccessfully.
FAILED = frozenset({"ERROR", "CANCELED"})
#: Meta keys set on creation, what :meth:`VercelProvider.find` filters on.
META_DEPLOY_ID = "opsdeck_deploy_id"
META_STEP = "opsdeck_step"


class VercelProvider:
    """One Vercel project."""

    per_step = False

    def __init__(self, options: VercelOptions, settings: Settings) -> None:
        self.options = options
        self.base = settings.vercel_api_url.rstrip("/")
        self.policy = retry_policy(settings)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        team = os.environ.get(self.options.team_id_env, "")
        url = (
            self.base
            + path
            + (("&" if "?" in path else "?") + urllib.parse.urlencode({"teamId": team}) if team else "")
        )
        headers = {"Authorization": f"Bearer {secret(self.options.token_env)}"}
        return request(method, url, policy=self.policy, headers=headers, json_body=body, what="Vercel").body

    def trigger(self, ctx: StepContext) -> str:
        """Create a deployment (production, or a preview to promote at 100 % when ``promote``)."""
        opts = self.options
        body: dict[str, Any] = {
            "name": opts.name or opts.project_id,
            "project": opts.project_id,
            "meta": {META_DEPLOY_ID: ctx.deploy_id, META_STEP: str(ctx.step)},
        }
        if opts.target and not opts.promote:
            body["target"] = opts.target
        if opts.git_source is not None:
            body["gitSource"] = {**opts.git_source, **({"sha": ctx.version} if ctx.version else {})}
        created = self._call("POST", "/v13/deployments", body)
        if not isinstance(created, dict) or not created.get("id"):
            raise ProviderError("Vercel created no deployment id")
        return str(created["id"])

    def find(self, ctx: StepContext, since_ms: int) -> str | None:
        """The deployment created for this deploy and step (its meta values), or None."""
        query = urllib.parse.urlencode({
            "projectId": self.options.project_id, f"meta-{META_DEPLOY_ID}": ctx.deploy_id,
            f"meta-{META_STEP}": str(ctx.step), "limit": 20,
        })  # fmt: skip
        listed = self._call("GET", f"/v6/deployments?{query}")
        items = listed.get("deployments") if isinstance(listed, dict) else None
        for item in items if isinstance(items, list) else []:
            meta = item.get("meta") if isinstance(item, dict) else None
            if isinstance(meta, dict) and meta.get(META_DEPLOY_ID) == ctx.deploy_id:
                found = item.get("uid") or item.get("id")
                if found:
                    return str(found)
        return None

    def status(self, ctx: StepContext, provider_id: str) -> ProviderStatus:
        """READY → live; ERROR/CANCELED → failed; QUEUED/BUILDING/INITIALIZING → pending."""
        body = self._call("GET", f"/v13/deployments/{urllib.parse.quote(provider_id)}")
        if not isinstance(body, dict):
            raise ProviderError("Vercel returned an unexpected deployment object")
        state = str(body.get("readyState", ""))
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        version = (meta or {}).get("githubCommitSha") or ctx.version
        url = f"https://{body['url']}" if isinstance(body.get("url"), str) and body["url"] else None
        if state == "READY":
            return ProviderStatus("live", state, version, url)
        if state in FAILED:
            reason = body.get("errorMessage") or state
            return ProviderStatus("failed", f"Vercel deployment {provider_id}: {reason}", version)
        return ProviderStatus("pending", state, version)

    def promote(self, ctx: StepContext, provider_id: str) -> None:
        """Promote the preview deployment to production (only with ``promote: true``)."""
        if self.options.promote:
            self._call("POST", f"/v10/projects/{self.options.project_id}/promote/{provider_id}")

    def rollback(self, ctx: StepContext, stable: dict[str, Any] | None) -> str | None:
        """Point production back at the stable deployment."""
        target = (stable or {}).get("provider_deploy_id")
        if not target:
            if self.options.promote:
                return None  # the new deployment was a preview: production never moved
            raise ProviderRejected("no stable Vercel deployment recorded to roll back to")
        self._call("POST", f"/v9/projects/{self.options.project_id}/rollback/{target}")
        return None

    def restore(self, ctx: StepContext, target: dict[str, Any]) -> str | None:
        """Promote an older deployment: production points at it again, without a rebuild."""
        deployment = urllib.parse.quote(str(target["provider_deploy_id"]), safe="")
        self._call("POST", f"/v10/projects/{self.options.project_id}/promote/{deployment}")
        return None
