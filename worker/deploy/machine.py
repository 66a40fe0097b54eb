"""The rollout state machine: one ``deploy_step`` message per step, each resumable.

A step ``n`` (weight ``steps[n]``): call the provider once (at step 0, or at every step for
providers that split traffic themselves) and poll it until live; set the router's weight; run
the gates. Then the next step is sent delayed by ``pause_seconds`` — or, at 100 %, the version
is promoted and becomes the service's stable one. A failed gate or provider failure rolls back
to the stable version (``rolled_back``); a failure before the new version went live is
``failed``. Operator actions (abort, rollback, promote, pause, resume) are flags on the record
written by the coordinator, acted on by the thread that holds the deploy's lock.

Manual gates (``confirm`` in the services file): a step that needs a confirmation (``each_step``:
every step after the first; ``before_promotion``: the step that reaches 100 %; a one-step
rollout: after its gates, before it is promoted) is not run but waited for, status
``awaiting_confirmation``, until an operator promotes (the record's ``confirmed_step``), or a
``timeout`` message sent delayed by ``confirm_timeout_seconds`` aborts the rollout (``canceled``,
traffic back to the stable version). An operator's promote during the canary counts as the
confirmation of the 100 % step.

Analysis runs (:mod:`worker.deploy.analysis_steps`): once a step is live its gates are sampled over
the step's whole pause; a failure beyond its limit rolls back, an inconclusive run pauses the
rollout until an operator promotes (goes on) or aborts. Every status change goes through
:meth:`Rollout._transition`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.deploy.config import ServiceConfig
from shared.deploy.models import TERMINAL_STATUSES, DeployPayload, DeployStatus, StepPayload
from shared.deploy.store import new_record
from shared.logging import get_logger
from shared.settings import Settings
from worker.deploy.analysis_steps import AnalysisSteps
from worker.deploy.blue_green import BlueGreenSteps, is_blue_green, preview_url
from worker.deploy.errors import DeployError, ProviderError, ProviderUnavailable, RecordPending
from worker.deploy.gittag import create_tag
from worker.deploy.providers import Provider, ProviderStatus, StepContext, make_provider
from worker.deploy.routers import make_router
from worker.deploy.state import DeployState, now_ms
from worker.metrics import DEPLOYS_ENDED

log = get_logger(__name__)

#: ``schedule(payload, delay_seconds)`` sends a ``deploy_step`` message.
Schedule = Callable[[dict[str, Any], float], None]
#: Longest a message polls a provider before handing over to a delayed copy of itself (s).
POLL_BUDGET = 20.0


class Rollout(AnalysisSteps, BlueGreenSteps):
    """Drives deploy records; every method is safe to run again after a crash."""

    def __init__(self, state: DeployState, settings: Settings, schedule: Schedule) -> None:
        self.state = state
        self.settings = settings
        self.schedule = schedule
        #: The notify hook (worker.deploy.notify.Notifier.transition): called by :meth:`_transition`
        #: with the fields of every status change, whatever the status (None: nobody listens).
        self.on_transition: Callable[[str, dict[str, Any]], None] | None = None

    # -- entry points ----------------------------------------------------------------------------
    def start(self, payload: DeployPayload, task_id: str, trigger: str) -> dict[str, Any]:
        """The ``deploy`` task: record the deploy (unless the API did) and send step 0."""
        deploy_id = task_id
        rec = self.state.get(deploy_id)
        if rec is None:
            if payload.recorded:  # the coordinator writes it right after enqueueing: try again
                raise RecordPending(f"deploy {deploy_id} is not recorded yet")
            config = self._config(payload.service)
            record = new_record(
                deploy_id, payload.service, config, version=payload.version, strategy=payload.strategy,
                trigger=trigger, now_ms=now_ms(),
            )  # fmt: skip
            self.state.create({**record, "task_id": task_id})
            rec = self.state.get(deploy_id) or record
        if rec["status"] == DeployStatus.QUEUED:
            self.schedule({"deploy_id": deploy_id, "step": 0}, 0)
        return {"deploy_id": deploy_id, "status": rec["status"]}

    def handle(self, msg: StepPayload) -> None:
        """One ``deploy_step`` message."""
        with self.state.locked(msg.deploy_id) as held:
            if not held:  # another thread is working on it: come back shortly
                self.schedule(msg.model_dump(exclude_none=True), 1.0)
                return
            rec = self.state.get(msg.deploy_id)
            if rec is None:
                log.warning("deploy step for an unknown deploy", deploy_id=msg.deploy_id)
                return
            if rec.get("requested"):
                self._requested(rec)
            elif rec["status"] not in TERMINAL_STATUSES:
                self._continue(rec, msg)

    # -- steps -------------------------------------------------------------------------------------
    def _continue(self, rec: dict[str, Any], msg: StepPayload) -> None:
        if msg.action == "retire":  # a blue-green rollout's scale-down delay is over
            self._retire(rec, msg)
            return
        waiting = rec["status"] == DeployStatus.AWAITING_CONFIRMATION
        if msg.action == "timeout" or waiting:  # a waiting rollout only moves on promote or abort
            if msg.action == "timeout" and waiting:
                self._confirm_timeout(rec, msg)
            return
        if msg.action == "analyze":
            self._analyze(rec, msg)
            return
        if rec["status"] == DeployStatus.QUEUED and not self._begin(rec, msg):
            return
        last = len(rec["steps"]) - 1
        if rec.get("promote") == "1" and rec["step"] < last and rec["status"] != DeployStatus.IN_PROGRESS:
            self.state.update(rec["id"], step=last)
            rec["step"] = last
        step = rec["step"] if msg.action in ("resume", "promote") else msg.step
        if step < rec["step"]:  # a step that already ran; make sure its successor was sent
            if rec["status"] == DeployStatus.CANARY and rec.get("next_sent") != rec["step"]:
                self._send_next(rec, 0)
            return
        if step > rec["step"] or rec["status"] == DeployStatus.PAUSED:
            return
        if step > 0 and self._needs_confirmation(rec, step):
            self._await_confirmation(rec, step)
            return
        if not self._resume_analysis(rec, step):
            self._run(rec, step)

    def _begin(self, rec: dict[str, Any], msg: StepPayload) -> bool:
        active = self.state.claim(rec["service"], rec["id"])
        if active != rec["id"]:  # queued behind the service's active deploy
            self.state.update(rec["id"], waiting_for=active)
            self.schedule(msg.model_dump(exclude_none=True), self.settings.deploy_poll_interval)
            return False
        fields = {
            "started_at": now_ms(),
            "waiting_for": None,
            "previous_stable": self.state.stable(rec["service"]),
        }
        self._transition(rec, DeployStatus.IN_PROGRESS, **fields)
        rec.update(fields)
        return True

    def _run(self, rec: dict[str, Any], n: int) -> None:
        config = self._config(rec["service"])
        blue_green = is_blue_green(rec)  # the new version is a preview beside the stable one: no traffic
        weight = 0 if blue_green else rec["steps"][n]
        ctx = StepContext(rec["id"], rec["service"], rec.get("version"), n, weight)
        self._transition(
            rec, DeployStatus.IN_PROGRESS, step=n, **({"phase": "preview"} if blue_green else {})
        )
        try:
            provider = make_provider(config, self.settings)
            if n == 0 or provider.per_step:
                pid = self.state.call_once(
                    rec["id"], n, lambda: provider.trigger(ctx), lambda since: provider.find(ctx, since)
                )
                ids = {**(rec.get("provider_ids") or {}), str(n): pid}
                self.state.update(rec["id"], provider_ids=ids, provider_deploy_id=pid)
                rec["provider_ids"] = ids
                outcome, status = self._wait_live(rec, ctx, provider, pid, config)
                if outcome == "later":
                    self.schedule({"deploy_id": rec["id"], "step": n}, self.settings.deploy_poll_interval)
                    return
                if outcome == "interrupted":
                    return
                if status.state != "live":
                    self._fail(rec, ctx, status.message or "provider deploy failed")
                    return
                # the new version's own address, for {preview_url} (a canary's: router.nginx.canary_server)
                preview = {
                    "preview_url": preview_url(config, status),
                    **({"phase": "analysis"} if blue_green else {}),
                }
                self.state.update(rec["id"], live="1", resolved_version=status.version, **preview)
                rec.update(live="1", resolved_version=status.version, **preview)
            if not blue_green:
                make_router(config.router).set_weight(weight)
            self.state.update(rec["id"], weight=weight, transient_errors=0)
        except ProviderUnavailable as exc:
            self._transient(rec, n, exc)
            return
        except DeployError as exc:
            self._fail(rec, ctx, str(exc))
            return
        self._start_analysis(rec, n, config)

    def _analysis_passed(self, rec: dict[str, Any], n: int, config: ServiceConfig) -> None:
        """Step ``n``'s analysis run passed (or an operator accepted it): next step or promotion."""
        if n < len(rec["steps"]) - 1:
            self._advance(rec, n, config, self._pause_left(rec))
            return
        if n == 0 and self._needs_confirmation(rec, n):  # one step: confirm before promotion
            self._await_confirmation(rec, n)
            return
        ctx = StepContext(rec["id"], rec["service"], rec.get("version"), n, rec["steps"][n])
        try:
            provider = make_provider(config, self.settings)
        except DeployError as exc:
            self._fail(rec, ctx, str(exc))
            return
        if is_blue_green(rec):
            self._switch(rec, ctx, config, provider)
            return
        self._succeed(rec, ctx, config, provider)

    def _wait_live(
        self, rec: dict[str, Any], ctx: StepContext, provider: Provider, pid: str, config: ServiceConfig
    ) -> tuple[str, ProviderStatus]:
        """Poll until live or failed ("done"), or hand over ("later"), or an operator acted."""
        budget_end = time.monotonic() + POLL_BUDGET
        deadline = (rec.get("started_at") or now_ms()) / 1000 + config.deploy_timeout_seconds
        while True:
            status = provider.status(ctx, pid)
            if status.state != "pending":
                return "done", status
            if time.time() > deadline:
                return "done", ProviderStatus("failed", f"timed out after {config.deploy_timeout_seconds}s")
            if self.state.client.hget(self.state.keys.deploy(rec["id"]), "requested"):
                return "interrupted", status
            if time.monotonic() > budget_end:
                return "later", status
            time.sleep(min(self.settings.deploy_poll_interval, 1.0))

    # -- manual gates ------------------------------------------------------------------------------
    def _needs_confirmation(self, rec: dict[str, Any], step: int) -> bool:
        """Whether ``step`` waits for an operator (``confirm``), not confirmed yet."""
        confirm = self._config(rec["service"]).confirm
        last = len(rec["steps"]) - 1
        if confirm is None or (confirm == "before_promotion" and step != last):
            return False
        fresh = self.state.get(rec["id"]) or rec
        if step == last and fresh.get("promote") == "1":  # promoted by an operator: confirmed
            return False
        return fresh.get("confirmed_step") != step

    def _await_confirmation(self, rec: dict[str, Any], step: int) -> None:
        """Wait before ``step`` (or, one-step rollouts, before promotion) until promote or timeout."""
        timeout = self._config(rec["service"]).confirm_timeout_seconds
        deadline = now_ms() + int(timeout * 1000)
        self._transition(rec, DeployStatus.AWAITING_CONFIRMATION, step=step, confirm_step=step,
                         confirm_deadline=deadline)  # fmt: skip
        self.schedule({"deploy_id": rec["id"], "step": step, "action": "timeout"}, timeout)
        log.info("deploy awaiting confirmation", deploy_id=rec["id"], service=rec["service"], step=step,
                 timeout_seconds=timeout)  # fmt: skip

    def _confirm_timeout(self, rec: dict[str, Any], msg: StepPayload) -> None:
        """Abort a rollout still waiting for the confirmation this timeout was sent for."""
        if rec.get("confirm_step") != msg.step:
            return  # sent for an earlier wait
        left = ((rec.get("confirm_deadline") or 0) - now_ms()) / 1000
        if left > 0:  # early (another host's clock): come back when it is due
            self.schedule(msg.model_dump(exclude_none=True), max(left, 1.0))
            return
        config = self._config(rec["service"])
        n = msg.step
        weight = rec["steps"][n]
        ctx = StepContext(rec["id"], rec["service"], rec.get("version"), n, rec.get("weight") or 0)
        what = "promotion" if len(rec["steps"]) == 1 else f"step {n} ({weight}%)"
        reason = (f"not confirmed within {config.confirm_timeout_seconds:g}s (confirm: {config.confirm}): "
                  f"aborted before {what}")  # fmt: skip
        self._fail(rec, ctx, reason, rolled=DeployStatus.CANCELED, unchanged=DeployStatus.CANCELED)

    def _advance(
        self, rec: dict[str, Any], n: int, config: ServiceConfig, delay: float | None = None
    ) -> None:
        """Send the step after ``n`` (the last one after a promote), ``delay`` (default: the
        pause) later; a held rollout is paused before it instead."""
        fresh = self.state.get(rec["id"]) or rec
        promote = fresh.get("promote") == "1"
        nxt = len(rec["steps"]) - 1 if promote else n + 1
        if fresh.get("hold") == "1":
            self._transition(rec, DeployStatus.PAUSED, step=nxt)
            return
        self._transition(rec, DeployStatus.CANARY, step=nxt)
        pause = config.canary.pause_seconds if delay is None else delay
        self._send_next({**rec, "step": nxt}, 0 if promote else pause)

    def _send_next(self, rec: dict[str, Any], delay: float) -> None:
        self.schedule({"deploy_id": rec["id"], "step": rec["step"]}, delay)
        self.state.update(rec["id"], next_sent=rec["step"])

    def _transient(self, rec: dict[str, Any], n: int, exc: Exception) -> None:
        count = int(rec.get("transient_errors") or 0) + 1
        if count > self.settings.deploy_http_retries:
            ctx = StepContext(rec["id"], rec["service"], rec.get("version"), n, rec["steps"][n])
            self._fail(rec, ctx, f"provider kept failing: {exc}")
            return
        self.state.update(rec["id"], transient_errors=count, last_error=str(exc))
        self.schedule(
            {"deploy_id": rec["id"], "step": n}, min(60.0, self.settings.deploy_poll_interval * 2**count)
        )

    # -- endings -----------------------------------------------------------------------------------
    def _succeed(
        self, rec: dict[str, Any], ctx: StepContext, config: ServiceConfig, provider: Provider
    ) -> None:
        self._transition(rec, DeployStatus.PROMOTING)
        ids = rec.get("provider_ids") or {}
        pid = ids.get(str(ctx.step)) or ids.get("0") or ""
        try:
            if not is_blue_green(rec):  # a blue-green rollout was promoted at its switch
                provider.promote(ctx, pid)
        except ProviderError as exc:
            self._fail(rec, ctx, f"promote failed: {exc}")
            return
        version = rec.get("version") or rec.get("resolved_version") or rec["id"]
        stable = {"version": version, "deploy_id": rec["id"], "provider_deploy_id": pid, "at": now_ms()}
        self.state.set_stable(rec["service"], stable)
        tag = None
        if config.git_tag.enabled and config.git_tag.repo_path is not None:
            tag = create_tag(config.git_tag.repo_path, rec["service"], version, f"opsdeck deploy {rec['id']}")
        self.state.update(rec["id"], stable_version=version, git_tag=tag)
        self._finish(rec, DeployStatus.SUCCEEDED)

    def _fail(
        self,
        rec: dict[str, Any],
        ctx: StepContext,
        reason: str,
        rolled: DeployStatus = DeployStatus.ROLLED_BACK,
        unchanged: DeployStatus = DeployStatus.FAILED,
    ) -> None:
        """End a deploy after a failure: roll back if the new version went live anywhere."""
        fresh = self.state.get(rec["id"]) or rec
        if fresh.get("live") != "1" and not fresh.get("weight"):
            self._finish(fresh, unchanged, error=reason)
            return
        try:
            self._roll_back(fresh, ctx, fresh.get("previous_stable"))
        except DeployError as exc:
            self._finish(fresh, DeployStatus.FAILED, error=f"{reason}; rollback failed: {exc}")
            return
        self._finish(fresh, rolled, error=reason)

    def _roll_back(self, rec: dict[str, Any], ctx: StepContext, stable: dict[str, Any] | None) -> None:
        if is_blue_green(rec) and rec["status"] != DeployStatus.SUCCEEDED:
            self._blue_green_back(rec, ctx, stable)
            return
        config = self._config(rec["service"])
        if config.router.type != "none" and rec["status"] != DeployStatus.SUCCEEDED:
            make_router(config.router).set_weight(0)  # the canary servers drop out
        else:
            provider = make_provider(config, self.settings)
            pid = provider.rollback(ctx, stable)
            if pid:
                outcome, status = self._wait_live(rec, ctx, provider, pid, config)
                if outcome == "done" and status.state == "failed":
                    raise ProviderError(status.message or "rollback deploy failed")
        self.state.update(rec["id"], weight=0)

    def _finish(self, rec: dict[str, Any], status: DeployStatus, *, error: str | None = None) -> None:
        fields: dict[str, Any] = {"finished_at": now_ms(), "requested": None}
        if error is not None:
            fields["error"] = error
        self._transition(rec, status, **fields)
        self.state.release(rec["service"], rec["id"])
        DEPLOYS_ENDED.labels(rec["service"], status.value).inc()
        log.info(
            "deploy ended", deploy_id=rec["id"], service=rec["service"], status=status.value, error=error
        )

    def _requested(self, rec: dict[str, Any]) -> None:
        """Apply an abort or rollback flagged by an operator."""
        action, who, status = rec["requested"], rec.get("last_action_by") or "operator", rec["status"]
        n = min(rec.get("step") or 0, len(rec["steps"]) - 1)
        ctx = StepContext(rec["id"], rec["service"], rec.get("version"), n, rec.get("weight") or 0)
        if status == DeployStatus.SUCCEEDED and action == "rollback":
            self._roll_back_success(rec, ctx, who)
        elif status in TERMINAL_STATUSES:
            self.state.update(rec["id"], requested=None)
        elif action == "abort":
            self._fail(
                rec, ctx, f"aborted by {who}", rolled=DeployStatus.CANCELED, unchanged=DeployStatus.CANCELED
            )
        else:
            self._fail(rec, ctx, f"rolled back by {who}", unchanged=DeployStatus.ROLLED_BACK)

    def _roll_back_success(self, rec: dict[str, Any], ctx: StepContext, who: str) -> None:
        stable = self.state.stable(rec["service"]) or {}
        active = self.state.claim(rec["service"], rec["id"])
        problem = None
        if stable.get("deploy_id") != rec["id"]:
            problem = "not the service's stable deploy any more"
        elif active != rec["id"]:
            problem = f"deploy {active} is active"
        if problem is None:
            try:
                self._roll_back(rec, ctx, rec.get("previous_stable"))
            except DeployError as exc:
                problem = f"rollback failed: {exc}"
        if problem is not None:
            self.state.update(rec["id"], requested=None, last_action_error=problem)
        else:
            self.state.set_stable(rec["service"], rec.get("previous_stable"))
            self._transition(rec, DeployStatus.ROLLED_BACK, requested=None, error=f"rolled back by {who}")
            DEPLOYS_ENDED.labels(rec["service"], DeployStatus.ROLLED_BACK.value).inc()
        self.state.release(rec["service"], rec["id"])

    def _transition(self, rec: dict[str, Any], status: DeployStatus, **fields: Any) -> None:
        """Set a rollout's status (with ``fields``): every status change goes through here, the one
        place for what must follow each stage change (logs, notifications)."""
        self.state.update(rec["id"], status=status, **fields)
        rec["status"] = status
        if self.on_transition is not None:
            self.on_transition(rec["id"], {"status": status, **fields})

    def _config(self, service: str) -> ServiceConfig:
        config = self.settings.services.services.get(service)
        if config is None:
            raise DeployError(f"service {service!r} is not in the services file")
        return config
