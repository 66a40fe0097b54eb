"""The analysis part of the rollout state machine (mixed into :class:`worker.deploy.machine.Rollout`).

Once a step is live, its run (:mod:`worker.deploy.analysis`) takes round 0 at once and every later
round in an ``analyze`` message (``sample`` = the round's index) sent delayed to the round's due
time, ``interval`` after the previous one, for the step's whole pause. Everything lives in the
deploy record (``analysis``: the run's plan, counters, next round and state; ``measurements``:
the newest :data:`~worker.deploy.analysis.MAX_MEASUREMENTS`), and a round's measurements, counters
and next index are written in one HSET: a worker killed mid-round repeats that round (nothing of
it was kept), a redelivered message of a round that was written is dropped (``sample`` below
``next``), re-sending the next round if that send was lost, so no measurement is counted twice; a
run's verdict is written with its last round, so a worker killed before acting on it (rolling
back, pausing, going on) leaves it to the redelivered message (:meth:`AnalysisSteps._act_on`).

A run that fails rolls back; one that is inconclusive pauses the rollout (``paused``,
``inconclusive_step`` and ``paused_reason``) until an operator promotes or resumes it (the step
counts as passed: ``accepted_step``) or aborts or rolls it back; one that passes goes on to the
next step after what is left of the pause (or promotes, after the last step). An operator's promote
during a run skips the rest of it (``skipped_by``): the 100 % step runs next, with its own round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.deploy.config import ServiceConfig
from shared.deploy.models import DeployStatus, StepPayload
from shared.logging import get_logger
from shared.settings import Settings
from worker.deploy.analysis import (
    append_bounded,
    assess,
    describe,
    gate_names,
    plan,
    stored,
    take_round,
    tally,
)
from worker.deploy.providers import StepContext
from worker.deploy.state import DeployState, now_ms

log = get_logger(__name__)

#: Statuses in which a run takes its rounds (``paused`` and ``awaiting_confirmation`` do not).
SAMPLING = (DeployStatus.IN_PROGRESS, DeployStatus.CANARY)


class AnalysisSteps:
    """Analysis runs of a rollout; needs the methods :class:`Rollout` defines below."""

    state: DeployState
    settings: Settings
    schedule: Callable[[dict[str, Any], float], None]

    # -- provided by Rollout ------------------------------------------------------------------------
    def _config(self, service: str) -> ServiceConfig:
        raise NotImplementedError

    def _transition(self, rec: dict[str, Any], status: DeployStatus, **fields: Any) -> None:
        raise NotImplementedError

    def _fail(self, rec: dict[str, Any], ctx: StepContext, reason: str) -> None:
        raise NotImplementedError

    def _analysis_passed(self, rec: dict[str, Any], n: int, config: ServiceConfig) -> None:
        raise NotImplementedError

    # -- runs -----------------------------------------------------------------------------------------
    def _start_analysis(self, rec: dict[str, Any], n: int, config: ServiceConfig) -> None:
        """Plan step ``n``'s run and take its first round (a service without gates: one empty round,
        then the pause as a delayed step, as before analysis runs)."""
        last = n == len(rec["steps"]) - 1
        pause = 0.0 if last else config.canary.pause_seconds
        if rec.get("strategy") == "blue_green":  # the pre-promotion analysis, against the preview
            pause, last = config.blue_green.pre_promotion_seconds, False
        rounds, interval = plan(config.gates, pause, last) if gate_names(config.gates) else (1, 0.0)
        start = now_ms()
        weight = 0 if rec.get("strategy") == "blue_green" else rec["steps"][n]  # a preview: no traffic
        analysis: dict[str, Any] = {"step": n, "weight": weight, "rounds": rounds, "interval": interval,
                    "started_at": start, "pause_ms": int(pause * 1000), "ends_at": start + int(pause * 1000),
                    "next": 0, "sent": 0,
                    "state": "running", "counts": {}, "reasons": []}  # fmt: skip
        self.state.update(rec["id"], analysis=analysis)
        rec["analysis"] = analysis
        self._round(rec, n, 0, config)

    def _analyze(self, rec: dict[str, Any], msg: StepPayload) -> None:
        """An ``analyze`` message: take its round, unless it was taken or the run moved on."""
        a, n = rec.get("analysis") or {}, msg.step
        if a.get("step") != n or rec["step"] != n or rec["status"] not in SAMPLING:
            return
        config = self._config(rec["service"])
        if a.get("state") != "running":  # the run ended: this is its last round's message again
            if msg.sample == a["next"] - 1:  # a worker died after writing the verdict: act on it
                self._act_on(rec, n, config)
            return
        if rec.get("hold") == "1":  # an operator paused it while in progress
            self._transition(rec, DeployStatus.PAUSED)
            return
        if msg.sample != a["next"]:
            if (msg.sample or 0) < a["next"] and a.get("sent") != a["next"]:
                self._next_round(rec, n, config)  # written, but its successor was never sent
            return
        self._round(rec, n, a["next"], config)

    def _resume_analysis(self, rec: dict[str, Any], n: int) -> bool:
        """Pick up step ``n``'s run after redelivery, resume or an operator's verdict; False when
        step ``n`` has no run yet (the step is to be run)."""
        a = rec.get("analysis") or {}
        if a.get("step") != n:
            return False
        if a["state"] == "inconclusive" and rec.get("accepted_step") == n:
            a = {**a, "state": "passed", "accepted_by": rec.get("last_action_by")}
            self.state.update(rec["id"], analysis=a, inconclusive_step=None, paused_reason=None)
            rec.update(analysis=a, inconclusive_step=None)
            log.info("inconclusive analysis accepted", deploy_id=rec["id"], step=n, by=a["accepted_by"])
        interval_ms = int(a["interval"] * 1000)
        if a["state"] == "running" and a["started_at"] + (a["next"] + 1) * interval_ms < now_ms():
            a = {**a, "started_at": now_ms() - a["next"] * interval_ms}  # paused meanwhile: re-space
            a["ends_at"] = a["started_at"] + a["pause_ms"]
            self.state.update(rec["id"], analysis=a)
            rec["analysis"] = a
        self._act_on(rec, n, self._config(rec["service"]))
        return True

    def _round(self, rec: dict[str, Any], n: int, i: int, config: ServiceConfig) -> None:
        """Take round ``i`` of step ``n``'s run, record it in one write and act on the verdict."""
        a = rec["analysis"]
        taken = take_round(config.gates, service=rec["service"], version=rec.get("version"),
                           preview_url=rec.get("preview_url"))  # fmt: skip
        at = now_ms()
        counts = {k: dict(v) for k, v in a["counts"].items()}
        tally(counts, taken)
        verdict, reasons = assess(config.gates, counts, ended=i + 1 >= a["rounds"])
        a = {**a, "counts": counts, "next": i + 1, "state": verdict, "reasons": reasons, "last_at": at}
        if verdict in ("failed", "inconclusive"):
            what = "gate failed" if verdict == "failed" else "analysis inconclusive"
            where = ("before promotion (preview)" if rec.get("strategy") == "blue_green"
                     else f"at step {n} ({a['weight']}%)")  # fmt: skip
            a["reason"] = f"{what} {where}: {describe(reasons, taken)}"
        kept = append_bounded(rec.get("measurements") or [], [stored(m, n, i, at) for m in taken])
        fields: dict[str, Any] = {"analysis": a, "measurements": kept}
        if verdict != "running":  # the step's gates entry, as before analysis runs
            results = [{k: v for k, v in m.items() if k != "metric"} for m in taken]
            entry = {"step": n, "weight": a["weight"], "ok": verdict == "passed", "verdict": verdict,
                     "rounds": i + 1, "at": at, "results": results}  # fmt: skip
            fields["gates"] = [*(rec.get("gates") or []), entry]
        self.state.update(rec["id"], **fields)  # one HSET: the round counts once or not at all
        rec.update(fields)
        self._act_on(rec, n, config)

    def _act_on(self, rec: dict[str, Any], n: int, config: ServiceConfig) -> None:
        """Do what step ``n``'s run's recorded state says (again, after a redelivery)."""
        a = rec["analysis"]
        if a["state"] == "failed":
            ctx = StepContext(rec["id"], rec["service"], rec.get("version"), n, a["weight"])
            self._fail(rec, ctx, a["reason"])
        elif a["state"] == "inconclusive":
            if rec["status"] != DeployStatus.PAUSED:
                self._transition(rec, DeployStatus.PAUSED, inconclusive_step=n, accepted_step=None,
                                 paused_reason=a["reason"])  # fmt: skip
                log.warning("deploy paused: analysis inconclusive", deploy_id=rec["id"],
                            service=rec["service"], step=n, reasons=a["reasons"])  # fmt: skip
        elif a["state"] == "passed":
            self._analysis_passed(rec, n, config)
        else:
            self._next_round(rec, n, config)

    def _next_round(self, rec: dict[str, Any], n: int, config: ServiceConfig) -> None:
        """Send the run's next round for its due time (the rollout waits in ``canary``)."""
        fresh = self.state.get(rec["id"]) or rec
        if fresh.get("hold") == "1" and fresh["status"] in SAMPLING:
            self._transition(rec, DeployStatus.PAUSED)
            return
        if fresh["status"] not in SAMPLING:
            return  # paused by an operator meanwhile: resume sends it
        if fresh.get("promote") == "1" and n < len(rec["steps"]) - 1:  # skip to 100 % now
            a = {**rec["analysis"], "state": "passed", "skipped_by": fresh.get("last_action_by")}
            self.state.update(rec["id"], analysis=a)
            rec["analysis"] = a
            self._analysis_passed(rec, n, config)
            return
        if fresh["status"] == DeployStatus.IN_PROGRESS:
            self._transition(rec, DeployStatus.CANARY)
        a = rec["analysis"]
        i = a["next"]
        due = a["started_at"] + int(i * a["interval"] * 1000)
        self.schedule({"deploy_id": rec["id"], "step": n, "action": "analyze", "sample": i},
                      max(0.0, (due - now_ms()) / 1000))  # fmt: skip
        a = {**a, "sent": i}
        self.state.update(rec["id"], analysis=a)
        rec["analysis"] = a

    def _pause_left(self, rec: dict[str, Any]) -> float:
        """Seconds of step's pause still to wait after its run passed (``count`` rounds can end early)."""
        a = rec.get("analysis") or {}
        return max(0.0, ((a.get("ends_at") or 0) - now_ms()) / 1000)
