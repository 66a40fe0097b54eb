"""Analysis runs: every gate sampled over a step's pause, each measurement judged and counted.

A step's *run* is ``rounds`` rounds ``interval`` seconds apart (:func:`plan`); a round takes one
measurement of every gate (:func:`take_round`): each smoke URL, ``error_rate``, ``p99_seconds`` and
the ``queries`` of ``gates.metrics``. The semantics follow Argo Rollouts' analysis
(``docs/features/analysis.md``, "Failure Conditions" and "Inconclusive Runs"; its
``utils/evaluate/evaluate.go`` ``EvaluateResult`` and ``analysis/analysis.go``
``assessMetricStatus``):

- a measurement is ``failure`` when the failure condition holds; ``success`` when the success
  condition holds; with only a success condition (``max`` is ``success: result <= max``) it is
  ``failure`` otherwise, with only a failure condition ``success`` otherwise, with both and
  neither met ``inconclusive``; a metric source that did not answer (or answered no number) is
  an ``error``, which is counted apart and does not reset the others, while any other verdict
  resets the consecutive-error count (Argo's ``ConsecutiveError``);
- a gate *fails* when its failed measurements exceed ``failure_limit``, and is *inconclusive* when
  its inconclusive ones exceed ``inconclusive_limit``; the failure is checked first and the worst
  gate decides the run (failed, then inconclusive).

Where Opsdeck differs, on purpose (the issue asks for a human's judgement when the metric source
errored): errors in a row beyond ``consecutive_error_limit`` (default 4, Argo's
``DefaultConsecutiveErrorLimit``) make the run *inconclusive* — Argo calls it ``Error`` and aborts —
and so does a run that ends without one conclusive measurement of some gate (every sample
errored). Smoke URLs are the service itself: one that does not answer 2xx is a ``failure``, never
an error. A run also ends at the end of the pause (``count`` bounds it further), whereas Argo's
``count`` counts only the measurements that did not error.
"""

from __future__ import annotations

import math
from typing import Any

from shared.deploy.config import PREVIEW_URL, GateOptions, MetricThreshold
from worker.deploy.errors import ProviderError
from worker.deploy.gates import judge, query_value, smoke
from worker.deploy.http import RetryPolicy

#: Measurements kept on a deploy record (newest; the counts cover every measurement).
MAX_MEASUREMENTS = 500
#: Verdicts of one measurement.
VERDICTS = ("success", "failure", "inconclusive", "error")
#: Counters of one gate in a run (``consecutive_errors`` resets on any verdict but ``error``).
EMPTY_COUNTS = {"successful": 0, "failed": 0, "inconclusive": 0, "errors": 0, "consecutive_errors": 0}


def plan(options: GateOptions, pause_seconds: float, last: bool) -> tuple[int, float]:
    """``(rounds, interval)`` of a step's run: every ``interval_seconds`` (or the pause, if
    shorter) from the start to the end of the pause, at most ``count`` rounds; one round after
    the last step or when there is no pause."""
    if last or pause_seconds <= 0:
        return 1, 0.0
    interval = min(options.interval_seconds, pause_seconds)
    rounds = math.floor(pause_seconds / interval + 1e-9) + 1
    if options.count is not None:
        rounds = min(rounds, options.count)
    return rounds, interval


def metrics_of(options: GateOptions) -> list[tuple[str, MetricThreshold]]:
    """The metric gates of ``options`` in a fixed order: error_rate, p99_seconds, queries."""
    m = options.metrics
    if m is None:
        return []
    named = [("error_rate", m.error_rate), ("p99_seconds", m.p99_seconds)]
    return [(n, t) for n, t in named if t is not None] + sorted(m.queries.items())


def gate_names(options: GateOptions) -> list[str]:
    """Every gate's name: ``smoke[i]`` per smoke URL, then the metrics."""
    return [f"smoke[{i}]" for i in range(len(options.smoke_urls))] + [n for n, _ in metrics_of(options)]


def limits(options: GateOptions, name: str) -> dict[str, int]:
    """The limits of gate ``name`` (a metric's own where it sets them, else the gates')."""
    own = dict(metrics_of(options)).get(name)
    out = {"failure_limit": options.failure_limit, "inconclusive_limit": options.inconclusive_limit,
           "consecutive_error_limit": options.consecutive_error_limit}  # fmt: skip
    for key in out:
        value = getattr(own, key, None) if own is not None else None
        if value is not None:
            out[key] = value
    return out


def take_round(
    options: GateOptions, *, service: str, version: str | None, preview_url: str | None = None
) -> list[dict[str, Any]]:
    """One measurement of every gate: ``{metric, verdict, value, detail, ok}`` plus the old gate
    result's ``gate``/``url``/``query``/``max``/``status`` (what the gates table shows);
    ``{preview_url}`` in smoke URLs and queries is ``preview_url`` (a blue-green preview's address)."""
    out: list[dict[str, Any]] = []
    for i, url in enumerate(options.smoke_urls):
        r = smoke(url.replace(PREVIEW_URL, preview_url or ""), options.timeout_seconds)
        out.append({**r, "metric": f"smoke[{i}]", "verdict": "success" if r["ok"] else "failure",
                    "value": r.get("status")})  # fmt: skip
    if options.metrics is not None:
        policy = RetryPolicy(retries=1, backoff=0.2, timeout=options.timeout_seconds)
        for name, threshold in metrics_of(options):
            query = threshold.query.replace("{service}", service).replace("{version}", version or "")
            query = query.replace(PREVIEW_URL, preview_url or "")
            m: dict[str, Any] = {"gate": name, "metric": name, "query": query, "max": threshold.max}
            try:
                value = query_value(options.metrics.query_url, query, policy)
            except (ProviderError, ValueError) as exc:
                m.update(ok=False, verdict="error", value=None, detail=str(exc)[:300])
            else:
                verdict = judge(threshold, value)
                m.update(ok=verdict == "success", verdict=verdict, value=value)
            out.append(m)
    return out


def tally(counts: dict[str, dict[str, int]], measurements: list[dict[str, Any]]) -> None:
    """Add one round's measurements to the per-gate counters (in place)."""
    field = {"success": "successful", "failure": "failed", "inconclusive": "inconclusive", "error": "errors"}
    for m in measurements:
        c = counts.setdefault(m["metric"], dict(EMPTY_COUNTS))
        c[field[m["verdict"]]] += 1
        c["consecutive_errors"] = c["consecutive_errors"] + 1 if m["verdict"] == "error" else 0


def assess(options: GateOptions, counts: dict[str, dict[str, int]], *, ended: bool) -> tuple[str, list[str]]:
    """``("failed" | "inconclusive" | "running" | "passed", reasons)`` of a run so far; ``ended``:
    no round is left (a gate without one conclusive measurement is then inconclusive)."""
    failed, unsure = [], []
    for name in gate_names(options):
        c, lim = counts.get(name, dict(EMPTY_COUNTS)), limits(options, name)
        if c["failed"] > lim["failure_limit"]:
            failed.append(f"{name}: failed ({c['failed']}) > failure_limit ({lim['failure_limit']})")
        elif c["inconclusive"] > lim["inconclusive_limit"]:
            unsure.append(f"{name}: inconclusive ({c['inconclusive']}) > inconclusive_limit "
                          f"({lim['inconclusive_limit']})")  # fmt: skip
        elif c["consecutive_errors"] > lim["consecutive_error_limit"]:
            unsure.append(f"{name}: metric source unreachable, errors in a row ({c['consecutive_errors']}) "
                          f"> consecutive_error_limit ({lim['consecutive_error_limit']})")  # fmt: skip
        elif ended and c["successful"] + c["failed"] + c["inconclusive"] == 0 and c["errors"]:
            unsure.append(f"{name}: no conclusive measurement (errors: {c['errors']})")
    if failed:
        return "failed", failed
    if unsure:
        return "inconclusive", unsure
    return ("passed" if ended else "running"), []


def describe(reasons: list[str], measurements: list[dict[str, Any]]) -> str:
    """``reasons`` joined, each with its gate's last measurement (``smoke[0]: ... (last: URL
    answered 500)``)."""
    last = {m["metric"]: m for m in measurements}
    parts = []
    for reason in reasons:
        m = last.get(reason.split(":", 1)[0])
        if m is not None:
            where = m.get("url") or m.get("query") or ""
            reason += f" (last: {where} {m.get('detail') or m.get('value')})"
        parts.append(reason)
    return "; ".join(parts)


def stored(measurement: dict[str, Any], step: int, index: int, at: int) -> dict[str, Any]:
    """What the record keeps of a measurement: step, round index, metric, value, verdict, time."""
    return {"step": step, "index": index, "metric": measurement["metric"], "value": measurement.get("value"),
            "verdict": measurement["verdict"], "at": at, "detail": measurement.get("detail")}  # fmt: skip


def append_bounded(kept: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``kept + new`` without a measurement of the same (step, index, metric) twice, newest
    ``MAX_MEASUREMENTS`` only."""
    seen = {(m["step"], m["index"], m["metric"]) for m in kept}
    merged = kept + [m for m in new if (m["step"], m["index"], m["metric"]) not in seen]
    return merged[-MAX_MEASUREMENTS:]
