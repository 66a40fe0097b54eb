"""Rollback to a recorded deployment: ``opsdeck deploy rollback SERVICE --to|--tag|--provider-deploy``.

The coordinator records a one-step deploy (``kind: rollback``) holding the service, with the
target: ``rollback_provider_id`` (the provider's deployment to put back) and its version. The
``deploy_restore`` actor asks the provider to serve it again — Render: ``POST
/v1/services/{id}/rollback {deployId}`` (a new deploy from that deploy's build artifact, polled
until live); Vercel: ``POST /v10/projects/{id}/promote/{deploymentId}`` (production points at that
deployment, no rebuild); webhook: ``action: rollback`` with the version — then makes it the
service's stable version. The provider call is guarded by the same call marker as a step
(:meth:`DeployState.call_once`), so a redelivered message does not ask twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.deploy.models import TERMINAL_STATUSES, DeployStatus
from shared.logging import get_logger
from shared.settings import Settings
from worker.deploy.errors import DeployError, ProviderUnavailable
from worker.deploy.providers import Provider, StepContext, make_provider
from worker.deploy.state import DeployState, now_ms
from worker.metrics import DEPLOYS_ENDED

log = get_logger(__name__)

#: Longest a message polls the provider before handing over to a delayed copy of itself (s).
POLL_BUDGET = 20.0
#: The call marker's step name of a restore.
MARKER = "restore"

#: ``schedule(payload, delay_seconds)`` sends a ``deploy_restore`` message.
Schedule = Callable[[dict[str, Any], float], None]


class Restore:
    """Drives ``kind: rollback`` deploy records; safe to run again after a crash."""

    def __init__(self, state: DeployState, settings: Settings, schedule: Schedule) -> None:
        self.state = state
        self.settings = settings
        self.schedule = schedule
        #: The notify hook, as :attr:`worker.deploy.machine.Rollout.on_transition`.
        self.on_transition: Callable[[str, dict[str, Any]], None] | None = None

    def _transition(self, rec: dict[str, Any], status: DeployStatus, **fields: Any) -> None:
        """Set the status (with ``fields``) and tell the notify hook."""
        self.state.update(rec["id"], status=status, **fields)
        rec["status"] = status
        if self.on_transition is not None:
            self.on_transition(rec["id"], {"status": status, **fields})

    def handle(self, deploy_id: str) -> None:
        """One ``deploy_restore`` message."""
        with self.state.locked(deploy_id) as held:
            if not held:
                self.schedule({"deploy_id": deploy_id}, 1.0)
                return
            rec = self.state.get(deploy_id)
            if rec is None or rec.get("kind") != "rollback" or rec["status"] in TERMINAL_STATUSES:
                return
            try:
                self._run(rec)
            except ProviderUnavailable as exc:
                self._transient(rec, exc)
            except DeployError as exc:
                self._end(rec, DeployStatus.FAILED, error=f"rollback failed: {exc}")

    def _run(self, rec: dict[str, Any]) -> None:
        config = self.settings.services.services.get(rec["service"])
        if config is None:
            raise DeployError(f"service {rec['service']!r} is not in the services file")
        if rec["status"] == DeployStatus.QUEUED:
            fields = {"step": 0, "started_at": now_ms(), "previous_stable": self.state.stable(rec["service"])}
            self._transition(rec, DeployStatus.IN_PROGRESS, **fields)
            rec.update(fields)
        target = {"version": rec.get("version"), "provider_deploy_id": rec["rollback_provider_id"]}
        ctx = StepContext(rec["id"], rec["service"], rec.get("version"), 0, 100)
        provider = make_provider(config, self.settings)
        pid = self.state.call_once(rec["id"], MARKER, lambda: provider.restore(ctx, target) or "-")
        if pid != "-" and not self._live(rec, ctx, provider, pid, config.deploy_timeout_seconds):
            return
        version = rec.get("version") or f"provider:{target['provider_deploy_id']}"
        live_id = pid if pid != "-" else target["provider_deploy_id"]
        stable = {"version": version, "deploy_id": rec["id"], "provider_deploy_id": live_id, "at": now_ms()}
        self.state.set_stable(rec["service"], stable)
        self.state.update(rec["id"], stable_version=version, weight=100, live="1", provider_deploy_id=live_id,
                          provider_ids={"0": live_id})  # fmt: skip
        self._end(rec, DeployStatus.SUCCEEDED)

    def _live(
        self, rec: dict[str, Any], ctx: StepContext, provider: Provider, pid: str, timeout: float
    ) -> bool:
        """Poll until live (True); failed ends the deploy; a long wait hands over (False)."""
        budget_end = time.monotonic() + POLL_BUDGET
        deadline = (rec.get("started_at") or now_ms()) / 1000 + timeout
        while True:
            status = provider.status(ctx, pid)
            if status.state == "live":
                return True
            if status.state == "failed" or time.time() > deadline:
                why = status.message if status.state == "failed" else f"timed out after {timeout:g}s"
                self._end(rec, DeployStatus.FAILED, error=f"rollback failed: {why}")
                return False
            if time.monotonic() > budget_end:
                self.schedule({"deploy_id": rec["id"]}, self.settings.deploy_poll_interval)
                return False
            time.sleep(min(self.settings.deploy_poll_interval, 1.0))

    def _transient(self, rec: dict[str, Any], exc: Exception) -> None:
        count = int(rec.get("transient_errors") or 0) + 1
        if count > self.settings.deploy_http_retries:
            self._end(rec, DeployStatus.FAILED, error=f"rollback failed: provider kept failing: {exc}")
            return
        self.state.update(rec["id"], transient_errors=count, last_error=str(exc))
        self.schedule({"deploy_id": rec["id"]}, min(60.0, self.settings.deploy_poll_interval * 2**count))

    def _end(self, rec: dict[str, Any], status: DeployStatus, *, error: str | None = None) -> None:
        fields: dict[str, Any] = {"finished_at": now_ms()}
        if error is not None:
            fields["error"] = error
        self._transition(rec, status, **fields)
        self.state.release(rec["service"], rec["id"])
        DEPLOYS_ENDED.labels(rec["service"], status.value).inc()
        log.info(
            "rollback ended", deploy_id=rec["id"], service=rec["service"], status=status.value, error=error
        )
