"""Generic webhook provider: a signed POST per step; optional status URL to poll.

Body ``{deploy_id, service, version, step, weight, action}`` (action ``deploy`` or
``rollback``), header ``X-Opsdeck-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the
secret from ``secret_env``, and ``Idempotency-Key: <deploy_id>:<step>:<action>`` so a receiver can drop
the rare duplicate after a worker crash mid-call. 2xx = accepted. With ``status_url`` the worker
polls ``GET status_url?deploy_id=&step=`` until ``{"status": "live"}`` (or ``"failed"``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from typing import Any

from shared.deploy.config import WebhookOptions
from shared.settings import Settings
from worker.deploy.http import request
from worker.deploy.providers import ProviderStatus, StepContext, retry_policy, secret

SIGNATURE_HEADER = "X-Opsdeck-Signature"


def sign(secret_value: str, body: bytes) -> str:
    """The signature header value for ``body``."""
    return "sha256=" + hmac.new(secret_value.encode(), body, hashlib.sha256).hexdigest()


class WebhookProvider:
    """A receiver that deploys and splits traffic itself."""

    per_step = True

    def __init__(self, options: WebhookOptions, settings: Settings) -> None:
        self.options = options
        self.policy = retry_policy(settings, timeout=options.timeout_seconds)

    def _post(self, ctx: StepContext, *, action: str, version: str | None, weight: int) -> Any:
        doc = {"deploy_id": ctx.deploy_id, "service": ctx.service, "version": version, "step": ctx.step,
               "weight": weight, "action": action}  # fmt: skip
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = {
            SIGNATURE_HEADER: sign(secret(self.options.secret_env), body),
            "Idempotency-Key": f"{ctx.deploy_id}:{ctx.step}:{action}",
        }
        return request(
            "POST", self.options.url, policy=self.policy, headers=headers, data=body, what="webhook"
        ).body

    def trigger(self, ctx: StepContext) -> str:
        """POST the step; the receiver's ``id`` (if any) becomes the provider id."""
        reply = self._post(ctx, action="deploy", version=ctx.version, weight=ctx.weight)
        if isinstance(reply, dict) and reply.get("id"):
            return str(reply["id"])
        return f"{ctx.deploy_id}:{ctx.step}"

    def find(self, ctx: StepContext, since_ms: int) -> str | None:
        """No lookup: the step is POSTed again with the same ``Idempotency-Key``, which a receiver
        that already accepted it drops (answering as before)."""
        return None

    def status(self, ctx: StepContext, provider_id: str) -> ProviderStatus:
        """Live at once without a status URL; else what the status URL says."""
        if not self.options.status_url:
            return ProviderStatus("live", "accepted", ctx.version)
        query = urllib.parse.urlencode({"deploy_id": ctx.deploy_id, "step": ctx.step, "id": provider_id})
        sep = "&" if "?" in self.options.status_url else "?"
        body = request(
            "GET", f"{self.options.status_url}{sep}{query}", policy=self.policy, what="webhook status"
        ).body
        state = body.get("status") if isinstance(body, dict) else None
        if state == "live":
            return ProviderStatus("live", "live", ctx.version)
        if state == "failed":
            detail = body.get("message", "") if isinstance(body, dict) else ""
            return ProviderStatus("failed", f"webhook reported failed {detail}".strip(), ctx.version)
        return ProviderStatus("pending", str(state), ctx.version)

    def promote(self, ctx: StepContext, provider_id: str) -> None:
        """The 100 % step already moved all traffic."""

    def rollback(self, ctx: StepContext, stable: dict[str, Any] | None) -> str | None:
        """POST ``action: rollback`` with the stable version and weight 0."""
        self._post(ctx, action="rollback", version=(stable or {}).get("version"), weight=0)
        return None

    def restore(self, ctx: StepContext, target: dict[str, Any]) -> str | None:
        """POST ``action: rollback`` with the target's version at weight 100 (the receiver deploys it)."""
        self._post(ctx, action="rollback", version=target.get("version"), weight=100)
        return None
