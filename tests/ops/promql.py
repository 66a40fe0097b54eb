"""A small PromQL reader for the ops tests: which metric names does an expression use?

Not a parser: strings, label matchers, range/offset durations, grouping clauses and Grafana
variables are blanked out; then every identifier followed by ``(`` must be a PromQL function and
every other identifier (bar the operators and keywords) is a metric name.
"""

from __future__ import annotations

import re

#: The metric names Opsdeck exports (issue 7 §1, issue 14, worker/coach/metrics.py,
#: worker/metrics.py, shared/metrics.py) and Prometheus's own ``up``.
COUNTERS_AND_GAUGES = {
    "opsdeck_queue_length",
    "opsdeck_queue_delayed",
    "opsdeck_queue_dead",
    "opsdeck_tasks_processed_total",
    "opsdeck_tasks_failed_total",
    "opsdeck_tasks_retried_total",
    "opsdeck_worker_up",
    "opsdeck_worker_cpu_percent",
    "opsdeck_worker_memory_percent",
    "opsdeck_worker_utilization",
    "opsdeck_redis_up",
    "opsdeck_redis_memory_used_bytes",
    "opsdeck_redis_memory_max_bytes",
    "opsdeck_redis_pool_waits_total",
    "opsdeck_redis_pool_sheds_total",
    "opsdeck_redis_pool_in_use",
    "opsdeck_redis_pool_max",
    "opsdeck_redis_errors_total",
    "opsdeck_deploys_total",
    "coordinator_bandit_decisions_total",
    "coordinator_user_feedback_total",
    "coordinator_bandit_reward",
    "coordinator_node_execution_total",
    "coordinator_active_sessions",
    "coordinator_suggestions_total",
    "coordinator_llm_requests_total",
    "coordinator_llm_breaker_state",
    "coordinator_llm_model_tier",
    "coordinator_llm_cache_hits_total",
    "coordinator_llm_cache_misses_total",
    "coordinator_bandit_phase",
    "coordinator_bandit_rollbacks_total",
    "opsdeck_outbox_entries",
    "opsdeck_task_duplicate_executions_total",
    "opsdeck_worker_processes",
    "opsdeck_rate_limited_total",
    "up",
}
#: node_exporter's metrics the host alerts read (Opsdeck exports no disk metric).
NODE_EXPORTER = {"node_filesystem_avail_bytes"}
HISTOGRAMS = {
    "opsdeck_http_request_duration_seconds",
    "opsdeck_http_long_request_duration_seconds",
    "opsdeck_task_duration_seconds",
    "coordinator_bandit_ucb_score",
    "coordinator_node_execution_duration_seconds",
}
KNOWN_METRICS = (
    COUNTERS_AND_GAUGES
    | NODE_EXPORTER
    | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
)

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv",
    "exp", "floor", "group", "histogram_quantile", "holt_winters", "idelta", "increase", "irate",
    "label_join", "label_replace", "label_values", "last_over_time", "ln", "log2", "log10", "max",
    "max_over_time", "min", "min_over_time", "predict_linear", "quantile", "quantile_over_time",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev",
    "stddev_over_time", "stdvar", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "atan2", "inf", "nan"}  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_BRACES = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names used by ``expr``; raises ``ValueError`` on an unknown function."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", text)
    text = _BRACES.sub("{}", text)
    text = _BRACKETS.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        ident, call = match.group(1), match.group(2)
        if ident.lower() in KEYWORDS:
            continue
        if call:
            if ident not in FUNCTIONS:
                raise ValueError(f"unknown function {ident!r} in {expr!r}")
        else:
            names.add(ident)
    return names


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables so that promtool can parse a dashboard expression."""
    for var, value in (("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h")):
        expr = expr.replace(var, value)
    return _VARIABLE.sub(".*", expr)
