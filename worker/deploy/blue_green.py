"""Blue-green rollouts (``strategy: blue_green``), mixed into :class:`worker.deploy.machine.Rollout`.

One step (``steps == [100]``), in phases kept in the record's ``phase``:

- ``preview``: the provider deploys the new version beside the stable one, taking no traffic: with
  ``router: nginx`` (any provider) on the router's ``canary_server`` at weight 0, the upstream file
  left as it is; on Vercel (``promote: true``) as a preview deployment. Render alone cannot: a
  deploy of a Render service replaces its live instances, so the services file refuses
  ``blue_green`` for Render without ``router: nginx`` (:func:`shared.deploy.config.blue_green_problem`).
- ``analysis``: the gates are sampled for ``blue_green.pre_promotion_seconds`` (the analysis-run
  machinery of the canary steps; ``{preview_url}`` in smoke URLs and queries is the preview's
  address, ``preview_url`` on the record). ``confirm: before_promotion`` then waits for an operator.
  A failed run discards the preview (``discarded``; traffic never moved, so nothing is written to
  the router and the provider's production is not touched) and the rollout is ``rolled_back``.
- ``switching`` → ``switched``: all traffic at once, in one write — the nginx upstream rewritten to
  weight 100 (one reload), or Vercel's promote of the preview. Status ``promoting``: the rollout
  still holds the service, and the old version is kept for ``blue_green.scale_down_delay_seconds``;
  a rollback (or abort) meanwhile switches back in one write (nginx weight 0, or Vercel's instant
  rollback to the previous production deployment, which reassigns its domains without a rebuild):
  ``switched_back``, status ``rolled_back``.
- ``retired``: a ``retire`` message sent delayed by the scale-down delay ends the rollout:
  ``succeeded``, the new version stable, the old one kept as the record's ``previous_stable``.

Each phase is written before the next is started, and the switch and switch-back are idempotent
(the same upstream file, the same promote), so a redelivered message after a worker was killed
repeats at most the one write it was in the middle of; the provider deploy of the preview goes
through the same call marker and provider lookup (adopt) as a canary's step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.deploy.config import ServiceConfig
from shared.deploy.models import DeployStatus, StepPayload
from shared.logging import get_logger
from shared.settings import Settings
from worker.deploy.errors import DeployError, ProviderRejected
from worker.deploy.providers import Provider, ProviderStatus, StepContext, make_provider
from worker.deploy.routers import make_router
from worker.deploy.state import DeployState, now_ms

log = get_logger(__name__)

#: Phases in which the new version has (or may have, mid-write) all the traffic.
SWITCHED = ("switching", "switched")


def is_blue_green(rec: dict[str, Any]) -> bool:
    """Whether a deploy record is a blue-green rollout."""
    return rec.get("strategy") == "blue_green"


def preview_url(config: ServiceConfig, status: ProviderStatus) -> str | None:
    """The preview's address: the configured one, the router's canary server, or the provider's."""
    if config.blue_green.preview_url:
        return config.blue_green.preview_url
    if config.router.type == "nginx" and config.router.nginx is not None:
        return f"http://{config.router.nginx.canary_server}"
    return status.url.rstrip("/") if status.url else None


class BlueGreenSteps:
    """The switch, the retirement and the switch-back; needs the methods :class:`Rollout` defines."""

    state: DeployState
    settings: Settings
    schedule: Callable[[dict[str, Any], float], None]

    # -- provided by Rollout ------------------------------------------------------------------------
    def _transition(self, rec: dict[str, Any], status: DeployStatus, **fields: Any) -> None:
        raise NotImplementedError

    def _fail(self, rec: dict[str, Any], ctx: StepContext, reason: str) -> None:
        raise NotImplementedError

    def _config(self, service: str) -> ServiceConfig:
        raise NotImplementedError

    def _succeed(
        self, rec: dict[str, Any], ctx: StepContext, config: ServiceConfig, provider: Provider
    ) -> None:
        raise NotImplementedError

    # -- phases ---------------------------------------------------------------------------------------
    def _switch(
        self, rec: dict[str, Any], ctx: StepContext, config: ServiceConfig, provider: Provider
    ) -> None:
        """Move all traffic to the preview in one write, then keep the old version for the delay."""
        if rec.get("phase") != "switched":
            self._transition(rec, DeployStatus.PROMOTING, phase="switching")
            try:
                if config.router.type == "nginx":
                    make_router(config.router).set_weight(100)
                else:
                    provider.promote(ctx, (rec.get("provider_ids") or {}).get("0") or "")
            except DeployError as exc:
                self._fail(rec, ctx, f"switch to the new version failed: {exc}")
                return
            at = now_ms()
            delay = config.blue_green.scale_down_delay_seconds
            fields = {
                "phase": "switched",
                "weight": 100,
                "switched_at": at,
                "retire_at": at + int(delay * 1000),
            }
            self._transition(rec, DeployStatus.PROMOTING, **fields)
            rec.update(fields)
            log.info("blue-green switched", deploy_id=rec["id"], service=rec["service"], keep_seconds=delay)
        if rec.get("retire_sent") != "1":  # sent once; again only when a worker died before it was
            left = max(0.0, ((rec.get("retire_at") or 0) - now_ms()) / 1000)
            self.schedule({"deploy_id": rec["id"], "step": 0, "action": "retire"}, left)
            self.state.update(rec["id"], retire_sent="1")
            rec["retire_sent"] = "1"

    def _retire(self, rec: dict[str, Any], msg: StepPayload) -> None:
        """The scale-down delay is over: retire the old version; the rollout succeeds."""
        if rec.get("phase") not in ("switched", "retired") or rec["status"] != DeployStatus.PROMOTING:
            return  # switched back (rolled back, aborted) meanwhile, or not switched yet
        left = ((rec.get("retire_at") or 0) - now_ms()) / 1000
        if left > 0:  # early (another host's clock): come back when it is due
            self.schedule(msg.model_dump(exclude_none=True), max(left, 0.05))
            return
        config = self._config(rec["service"])
        ctx = StepContext(rec["id"], rec["service"], rec.get("version"), 0, 100)
        self.state.update(rec["id"], phase="retired", retired_at=now_ms())
        rec["phase"] = "retired"
        try:
            provider = make_provider(config, self.settings)
        except DeployError as exc:
            self._fail(rec, ctx, str(exc))
            return
        self._succeed(rec, ctx, config, provider)

    def _blue_green_back(self, rec: dict[str, Any], ctx: StepContext, stable: dict[str, Any] | None) -> None:
        """Undo a blue-green rollout that has not succeeded: switch back in one write, or (before the
        switch) discard the preview, which never took traffic."""
        config = self._config(rec["service"])
        if rec.get("phase") not in SWITCHED:
            self.state.update(rec["id"], phase="discarded", weight=0)
            log.info("blue-green preview discarded", deploy_id=rec["id"], service=rec["service"])
            return
        if config.router.type == "nginx":
            make_router(config.router).set_weight(0)  # the stable server has all traffic again
        else:
            if not (stable or {}).get("provider_deploy_id"):
                raise ProviderRejected("no earlier production deployment recorded to switch back to")
            make_provider(config, self.settings).rollback(ctx, stable)  # Vercel: instant rollback
        self.state.update(rec["id"], phase="switched_back", weight=0)
        log.info("blue-green switched back", deploy_id=rec["id"], service=rec["service"])
