"""Gates: smoke URLs answer 2xx in time; metric queries judged by their conditions.

Metric gates run an instant query against a Prometheus-compatible ``/api/v1/query`` URL
(``{service}`` and ``{version}`` in the query are substituted). An empty result counts as 0
(no traffic, no errors). :func:`run_gates` checks every gate once (a query that fails or returns
no number fails it); a rollout samples them over each pause instead (:mod:`worker.deploy.analysis`).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from shared import tracing
from shared.deploy.conditions import Condition
from shared.deploy.config import GateOptions, MetricsGate, MetricThreshold
from worker.deploy.errors import ProviderError
from worker.deploy.http import RetryPolicy, request


def smoke(url: str, timeout: float) -> dict[str, Any]:
    """GET ``url`` once: passes on 2xx within ``timeout``."""
    result: dict[str, Any] = {"gate": "smoke", "url": url}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - URLs from the services file
            result.update(ok=200 <= resp.status < 300, status=resp.status)
    except urllib.error.HTTPError as exc:
        result.update(ok=False, status=exc.code, detail=f"answered {exc.code}")
    except (OSError, ValueError) as exc:
        result.update(ok=False, status=None, detail=f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
    return result


def query_value(query_url: str, query: str, policy: RetryPolicy) -> float:
    """The first sample of an instant query (0.0 for an empty result)."""
    url = f"{query_url}{'&' if '?' in query_url else '?'}{urllib.parse.urlencode({'query': query})}"
    body = request("GET", url, policy=policy, what="metrics query").body
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ProviderError(f"metrics query failed: {body!r}"[:300])
    result = (body.get("data") or {}).get("result") or []
    if not result:
        return 0.0
    first = result[0]
    value = first.get("value") if isinstance(first, dict) else None
    if not isinstance(value, list) or len(value) != 2:
        raise ProviderError("metrics query returned no sample")
    return float(value[1])


def metric(
    name: str, gate: MetricsGate, threshold: MetricThreshold, subs: dict[str, str], policy: RetryPolicy
) -> dict[str, Any]:
    """One metric gate's result."""
    query = threshold.query.replace("{service}", subs["service"]).replace("{version}", subs["version"])
    result: dict[str, Any] = {"gate": name, "query": query, "max": threshold.max}
    try:
        value = query_value(gate.query_url, query, policy)
    except (ProviderError, ValueError) as exc:
        result.update(ok=False, detail=str(exc))
        return result
    result.update(ok=judge(threshold, value) == "success", value=value)
    return result


@lru_cache(maxsize=256)
def _condition(text: str) -> Condition:
    return Condition(text)


def judge(threshold: MetricThreshold, value: float) -> str:
    """The verdict of one measured value (Argo's ``EvaluateResult``)."""
    success_text = threshold.success
    if threshold.max is not None:
        success_text = f"result <= {threshold.max!r}"
    ok = _condition(success_text)(value) if success_text else None
    bad = _condition(threshold.failure)(value) if threshold.failure else None
    if ok is None:
        ok = not bad
    if bad is None:
        bad = not ok
    if bad:
        return "failure"
    return "success" if ok else "inconclusive"


def run_gates(options: GateOptions, *, service: str, version: str | None) -> list[dict[str, Any]]:
    """Every configured gate's result (each has ``gate`` and ``ok``)."""
    with tracing.span("deploy gates", {"opsdeck.deploy.service": service}) as span:
        results = [_traced(smoke, "smoke", url, options.timeout_seconds) for url in options.smoke_urls]
        m = options.metrics
        if m is not None:
            policy = RetryPolicy(retries=1, backoff=0.2, timeout=options.timeout_seconds)
            subs = {"service": service, "version": version or ""}
            if m.error_rate is not None:
                results.append(_traced(metric, "error_rate", "error_rate", m, m.error_rate, subs, policy))
            if m.p99_seconds is not None:
                results.append(_traced(metric, "p99_seconds", "p99_seconds", m, m.p99_seconds, subs, policy))
        span.set_attribute("opsdeck.deploy.gates_passed", all(r["ok"] for r in results))
    return results


def _traced(check: Callable[..., dict[str, Any]], name: str, *args: Any) -> dict[str, Any]:
    """``check(*args)`` inside a span ``gate <name>`` that records whether it passed."""
    with tracing.span(f"gate {name}") as span:
        result = check(*args)
        span.set_attribute("opsdeck.deploy.gate_ok", bool(result["ok"]))
        return result
