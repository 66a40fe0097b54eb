"""Render: trigger a deploy (REST API or deploy hook), poll it, roll back to a deploy id.

REST: ``POST /v1/services/{serviceId}/deploys`` (``commitId`` or ``imageUrl``), ``GET
/v1/services/{serviceId}/deploys/{deployId}``, ``POST /v1/services/{serviceId}/rollback``
``{deployId}``; bearer ``RENDER_API_KEY``. The base URL is ``RENDER_API_URL``.

Before repeating a trigger whose answer was lost (worker killed mid-call), :meth:`find` lists the
service's deploys created since the call (``GET /v1/services/{serviceId}/deploys?createdAfter=``,
newest first, ``[{"deploy": {...}, "cursor"}]``) and adopts the one of the same commit
(``commit.id``) or image (``image.ref``); Render has no idempotency key or metadata on a deploy.
"""

from __future__ import annotations

import os
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from shared.deploy.config import RenderOptions
from shared.settings import Settings
from worker.deploy.errors import ProviderError, ProviderRejected
from worker.deploy.http import request
from worker.deploy.providers import ProviderStatus, StepContext, retry_policy, secret

#: Render deploy statuses that end a deploy unsuccessfully.
FAILED = frozenset({"build_failed", "update_failed", "canceled", "deactivated", "pre_deploy_failed"})
#: Deploys created this long before the worker's call marker still count (clock skew, ms).
CLOCK_SKEW_MS = 120_000
#: Triggers of the deploys Opsdeck starts (REST API, deploy hook): what an unversioned find adopts.
OWN_TRIGGERS = frozenset({"api", "deploy_hook"})


class RenderProvider:
    """One Render service."""

    per_step = False

    def __init__(self, options: RenderOptions, settings: Settings) -> None:
        self.options = options
        self.base = settings.render_api_url.rstrip("/") + f"/v1/services/{options.service_id}"
        self.policy = retry_policy(settings)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {secret(self.options.api_key_env)}"}
        return request(
            method, self.base + path, policy=self.policy, headers=headers, json_body=body, what="Render"
        ).body

    def trigger(self, ctx: StepContext) -> str:
        """Start a deploy of ``ctx.version`` (a commit SHA or image URL), or of the branch head."""
        if self.options.deploy_hook_env:
            hook = secret(self.options.deploy_hook_env)
            if ctx.version:
                param = "imgURL" if self.options.version_kind == "image" else "ref"
                hook += ("&" if "?" in hook else "?") + urllib.parse.urlencode({param: ctx.version})
            body = request("POST", hook, policy=self.policy, what="Render deploy hook").body
            deploy = body.get("deploy") if isinstance(body, dict) else None
            if not isinstance(deploy, dict) or not deploy.get("id"):
                raise ProviderError("Render deploy hook answered without a deploy id")
            return str(deploy["id"])
        payload: dict[str, Any] = {"clearCache": "do_not_clear"}
        if ctx.version:
            payload["imageUrl" if self.options.version_kind == "image" else "commitId"] = ctx.version
        body = self._call("POST", "/deploys", payload)
        if isinstance(body, dict) and body.get("id"):
            return str(body["id"])
        # 202 "queued" without a body: the newest deploy of the service is ours.
        listed = self._call("GET", "/deploys?limit=1")
        if isinstance(listed, list) and listed and isinstance(listed[0], dict):
            deploy = listed[0].get("deploy", listed[0])
            if isinstance(deploy, dict) and deploy.get("id"):
                return str(deploy["id"])
        raise ProviderError("Render accepted the deploy but returned no deploy id")

    def find(self, ctx: StepContext, since_ms: int) -> str | None:
        """A deploy of ``ctx.version`` created since ``since_ms`` (less the clock skew), the one
        created nearest that time; without a version, one Opsdeck's way of triggering started.
        None (deploy again) when there is none, or with a deploy hook and no API key to look."""
        if self.options.deploy_hook_env and not os.environ.get(self.options.api_key_env):
            return None
        after = datetime.fromtimestamp((since_ms - CLOCK_SKEW_MS) / 1000, UTC)
        query = urllib.parse.urlencode(
            {"createdAfter": after.isoformat().replace("+00:00", "Z"), "limit": 100}
        )
        listed = self._call("GET", f"/deploys?{query}")
        candidates: list[tuple[float, str]] = []
        for item in listed if isinstance(listed, list) else []:
            deploy = item.get("deploy", item) if isinstance(item, dict) else None
            if not isinstance(deploy, dict) or not deploy.get("id") or not self._ours(deploy, ctx.version):
                continue
            candidates.append((abs(_epoch_ms(deploy.get("createdAt")) - since_ms), str(deploy["id"])))
        return min(candidates)[1] if candidates else None

    def _ours(self, deploy: dict[str, Any], version: str | None) -> bool:
        """Whether ``deploy`` is what a trigger of ``version`` would have started."""
        if version is None:
            return deploy.get("trigger") in OWN_TRIGGERS
        if self.options.version_kind == "image":
            image = deploy.get("image")
            return isinstance(image, dict) and image.get("ref") == version
        commit = deploy.get("commit")
        return isinstance(commit, dict) and commit.get("id") == version

    def status(self, ctx: StepContext, provider_id: str) -> ProviderStatus:
        """``live`` → live; build/update failures, cancel, deactivation → failed; else pending."""
        body = self._call("GET", f"/deploys/{urllib.parse.quote(provider_id)}")
        if not isinstance(body, dict):
            raise ProviderError("Render returned an unexpected deploy object")
        state = str(body.get("status", ""))
        commit = body.get("commit") if isinstance(body.get("commit"), dict) else {}
        image = body.get("image") if isinstance(body.get("image"), dict) else {}
        version = (commit or {}).get("id") or (image or {}).get("ref")
        if state == "live":
            return ProviderStatus("live", state, version)
        if state in FAILED:
            return ProviderStatus("failed", f"Render deploy {provider_id} is {state}", version)
        return ProviderStatus("pending", state, version)

    def promote(self, ctx: StepContext, provider_id: str) -> None:
        """A live Render deploy already serves production traffic."""

    def rollback(self, ctx: StepContext, stable: dict[str, Any] | None) -> str | None:
        """Roll the service back to the stable deploy id."""
        target = (stable or {}).get("provider_deploy_id")
        if not target:
            raise ProviderRejected("no stable Render deploy recorded to roll back to")
        body = self._call("POST", "/rollback", {"deployId": target})
        return str(body["id"]) if isinstance(body, dict) and body.get("id") else None

    def restore(self, ctx: StepContext, target: dict[str, Any]) -> str | None:
        """Render's rollback to any earlier deploy of the service (a new deploy from its build)."""
        return self.rollback(ctx, target)


def _epoch_ms(created: Any) -> float:
    """Render's ``createdAt`` (ISO 8601) in epoch ms; infinity when absent or unreadable."""
    try:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return float("inf")
