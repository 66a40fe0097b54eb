"""The load report: latency percentiles, error rates, throughput, memory, faults and thresholds.

Thresholds: the error rate over every request and end-to-end outcome stays under 5 %, and the
chat end-to-end p95 (POST until the suggestion) under 10 s. A threshold with no data fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psutil

from shared.devtools.load.traffic import Recorder

MAX_ERROR_RATE = 0.05
MAX_CHAT_E2E_P95_S = 10.0
#: Kinds counted in the totals: the HTTP requests (end-to-end kinds are derived from them).
REQUEST_KINDS = ("chat", "feedback", "task_submit", "task_status")
E2E_KINDS = ("chat_e2e", "task_e2e")


def _ms(values: np.ndarray[Any, Any], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None


def kind_summary(recorder: Recorder, kind: str, elapsed: float) -> dict[str, Any]:
    """Counts, error rate, throughput and p50/p95/p99/max (ms) of one kind."""
    stats = recorder.kinds.get(kind)
    if stats is None:
        return {"count": 0, "errors": 0, "error_rate": 0.0, "throughput_per_s": 0.0,
                "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "statuses": {}}  # fmt: skip
    values = np.frombuffer(stats.latencies, dtype=np.float64) if len(stats.latencies) else np.array([])
    return {
        "count": stats.count,
        "errors": stats.errors,
        "error_rate": round(stats.errors / stats.count, 4) if stats.count else 0.0,
        "throughput_per_s": round(stats.count / elapsed, 2) if elapsed > 0 else 0.0,
        "p50_ms": _ms(values, 50),
        "p95_ms": _ms(values, 95),
        "p99_ms": _ms(values, 99),
        "max_ms": round(float(values.max()) * 1000, 2) if len(values) else None,
        "statuses": dict(sorted(stats.statuses.items())),
        "count_during_fault": stats.count_during_fault,
        "errors_during_fault": stats.errors_during_fault,
    }


def memory_sample(procs: dict[str, psutil.Process]) -> dict[str, tuple[int, int]]:
    """Role → (pid, RSS bytes) of the live processes."""
    out: dict[str, tuple[int, int]] = {}
    for role, proc in procs.items():
        try:
            out[role] = (proc.pid, int(proc.memory_info().rss))
        except psutil.Error:
            continue
    return out


def memory_summary(start: dict[str, tuple[int, int]], end: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Per process start/end RSS and growth; a process that died (chaos) has no end."""
    out: dict[str, Any] = {}
    for role in sorted(set(start) | set(end)):
        pid = (start.get(role) or end[role])[0]
        first = start[role][1] if role in start else None
        last = end[role][1] if role in end else None
        growth = last - first if first is not None and last is not None else None
        out[role] = {
            "pid": pid,
            "start_rss_mb": round(first / 2**20, 1) if first is not None else None,
            "end_rss_mb": round(last / 2**20, 1) if last is not None else None,
            "growth_mb": round(growth / 2**20, 2) if growth is not None else None,
            "growth_pct": round(100 * growth / first, 1) if growth is not None and first else None,
        }
    return out


def build(
    recorder: Recorder, elapsed: float, meta: dict[str, Any], memory: dict[str, Any] | None,
    faults: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """The whole report, thresholds checked (``passed``)."""
    kinds = {k: kind_summary(recorder, k, elapsed) for k in (*REQUEST_KINDS, *E2E_KINDS)}
    count = sum(kinds[k]["count"] for k in REQUEST_KINDS)
    errors = sum(kinds[k]["errors"] for k in REQUEST_KINDS)
    e2e_errors = sum(kinds[k]["errors"] for k in E2E_KINDS)
    e2e_count = sum(kinds[k]["count"] for k in E2E_KINDS)
    error_rate = (errors + e2e_errors) / (count + e2e_count) if count + e2e_count else None
    chat_p95 = kinds["chat_e2e"]["p95_ms"]
    thresholds = [
        {
            "name": "error_rate",
            "limit": MAX_ERROR_RATE,
            "value": round(error_rate, 4) if error_rate is not None else None,
            "passed": error_rate is not None and error_rate < MAX_ERROR_RATE,
        },
        {
            "name": "chat_e2e_p95_s",
            "limit": MAX_CHAT_E2E_P95_S,
            "value": round(chat_p95 / 1000, 3) if chat_p95 is not None else None,
            "passed": chat_p95 is not None and chat_p95 / 1000 < MAX_CHAT_E2E_P95_S,
        },
    ]
    return {
        **meta,
        "elapsed_s": round(elapsed, 2),
        "totals": {
            "requests": count,
            "errors": errors,
            "error_rate": round(errors / count, 4) if count else None,
            "throughput_per_s": round(count / elapsed, 2) if elapsed > 0 else 0.0,
            "end_to_end_errors": e2e_errors,
            "aborted_at_end": recorder.aborted,
        },
        "requests": kinds,
        "chat_end_to_end": {
            k: kinds["chat_e2e"][k] for k in ("count", "errors", "p50_ms", "p95_ms", "p99_ms")
        },
        "memory": memory,
        "faults": faults,
        "error_examples": recorder.error_examples,
        "thresholds": thresholds,
        "passed": all(t["passed"] for t in thresholds),
    }


def summary_text(report: dict[str, Any]) -> str:
    """A few human lines for stdout."""
    lines = [
        f"opsdeck load {report['profile']}{' --quick' if report.get('quick') else ''}: "
        f"{report['elapsed_s']} s, peak {report['peak_users']} users, target {report['target']}",
        f"  {'kind':<12} {'count':>7} {'err%':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
    ]
    for kind, s in report["requests"].items():
        if not s["count"]:
            continue
        lines.append(
            f"  {kind:<12} {s['count']:>7} {100 * s['error_rate']:>6.2f} {s['throughput_per_s']:>7} "
            f"{_fmt(s['p50_ms']):>8} {_fmt(s['p95_ms']):>8} {_fmt(s['p99_ms']):>8}"
        )
    for role, m in (report.get("memory") or {}).items():
        if not isinstance(m, dict) or "pid" not in m:
            continue
        if m["start_rss_mb"] is None:
            change = f"started during the run, {m['end_rss_mb']} MB at the end"
        elif m["end_rss_mb"] is None:
            change = f"{m['start_rss_mb']} MB, gone by the end (killed or restarted)"
        else:
            change = f"{m['start_rss_mb']} → {m['end_rss_mb']} MB (growth {m['growth_mb']:+} MB)"
        lines.append(f"  memory {role:<18} {change}")
    if report.get("faults"):
        f = report["faults"]
        lines.append(
            f"  faults: {f['workers_killed']} Dramatiq processes SIGKILLed, {f['redis_latency_windows']} "
            f"Redis latency windows, {100 * f['fault_ratio']:.0f} % of the time under a fault"
        )
    for t in report["thresholds"]:
        mark = "ok  " if t["passed"] else "FAIL"
        lines.append(f"  [{mark}] {t['name']} = {t['value']} (limit < {t['limit']})")
    lines.append("  PASSED" if report["passed"] else "  FAILED: a threshold was not met")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
