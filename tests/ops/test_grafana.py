"""The Grafana dashboard: importable JSON, datasource variables, known metrics, valid PromQL, a panel
for every alert rule, and the Traces row (TraceQL on the traces datasource).

Every Prometheus expression is also evaluated against a running stack: test_grafana_live.py."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.promql import KNOWN_METRICS, grafana_to_promql, metric_names
from tests.ops.test_prometheus import PROM, alert_rules, load_yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "opsdeck.json"
DS_VARIABLES = {"${datasource}", "$datasource", "${DS_PROMETHEUS}"}
#: The traces datasource variable (Tempo): the Traces row's panels only.
TRACES_VARIABLES = {"${traces}", "$traces"}
TRACES_ROW = "Traces"

#: Panel titles each row must contain (issue 7 §2).
ROWS = {
    "Bandit": {"Exploration ratio", "UCB score distribution", "Arm selection frequency",
               "Average reward per arm"},
    "Latency": {"Pipeline node latency p50 / p95 / p99", "HTTP latency by route p50 / p95 / p99",
                "Error rate by node", "Active sessions"},
    "Queue": {"Queue length", "Processing rate", "Failure rate", "Worker utilization"},
    "Resources": {"CPU per worker", "Memory per worker", "Disk free"},
    "API": {"Coordinator p99 vs APILatency thresholds", "Coordinator 5xx error rate",
            "Availability error budget burn rate"},
    "Coaching LLM": {"LLM circuit breaker", "LLM fallback rate", "LLM invalid JSON rate",
                     "LLM cache hit ratio", "Chat turns answered (10 min)"},
    "Traces": {"Recent Opsdeck traces", "Slow coordinator requests (> 150 ms)", "Traces with errors"},
}  # fmt: skip

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def rows_of(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each row's title → its panels (in the order of the grid; collapsed rows' own panels too)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    current = None
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
            current += panel.get("panels", [])
        else:
            assert current is not None, f"{panel['title']} is above the first row"
            current.append(panel)
    return rows


def trace_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return rows_of(dashboard).get(TRACES_ROW, [])


def prometheus_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    traces = {p["id"] for p in trace_panels(dashboard)}
    return [p for p in data_panels(dashboard) if p["id"] not in traces]


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every Prometheus panel target and annotation query."""
    found = [
        (f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"])
        for p in prometheus_panels(dashboard)
        for t in p["targets"]
    ]
    found += [
        (f"annotation {a['name']!r}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a
    ]
    return found


def test_importable_top_level(dashboard):
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time", "annotations"):
        assert key in dashboard, key
    assert dashboard.get("id") is None  # a fixed id would clash on import
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36


def test_datasource_is_a_variable(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["traces"]["type"] == "datasource"
    assert variables["traces"]["query"] == "tempo"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] in DS_VARIABLES, variable["name"]


def test_every_panel_and_target_uses_the_datasource_variable(dashboard):
    """Prometheus through ``$datasource`` everywhere but in the Traces row (``$traces``, Tempo)."""
    assert trace_panels(dashboard), "no Traces row"
    for panel in trace_panels(dashboard):
        assert panel["datasource"]["type"] == "tempo", panel["title"]
        assert panel["datasource"]["uid"] in TRACES_VARIABLES, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] in TRACES_VARIABLES, panel["title"]
    for panel in prometheus_panels(dashboard):
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["datasource"]["uid"] in DS_VARIABLES, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] in DS_VARIABLES, panel["title"]


def test_panel_ids_unique_and_grid_positions_valid(dashboard):
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys(), panel["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0 and grid["y"] >= 0, panel["title"]


def test_rows_hold_the_required_panels(dashboard):
    rows = {title: {p["title"] for p in panels} for title, panels in rows_of(dashboard).items()}
    for row, titles in ROWS.items():
        assert row in rows, f"no {row} row"
        assert titles <= rows[row], f"{row} row lacks {titles - rows[row]}"


def test_queries_use_only_exported_metric_names(dashboard):
    for where, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= KNOWN_METRICS, f"{where} uses unknown metrics {names - KNOWN_METRICS}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert match, query
            assert match.group(1) in KNOWN_METRICS, query


def test_queries_parse_with_promtool(dashboard, promtool, tmp_path):
    # Every expression becomes a recording rule; `promtool check rules` parses it.
    lines = ["groups:", "  - name: grafana", "    rules:"]
    for index, (_, expr) in enumerate(expressions(dashboard)):
        lines += [
            f"      - record: grafana:query_{index}",
            f"        expr: {json.dumps(grafana_to_promql(expr))}",
        ]
    rules = tmp_path / "grafana_rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_panels_do_not_overlap(dashboard):
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_alert_has_a_panel_showing_its_signal(dashboard):
    """Each alert of alerts.yml is named in the description of a panel that reads one of the
    alert's metrics (so the on-call engineer finds the graph behind a page)."""
    panels = [(p, set().union(*(metric_names(t["expr"]) for t in p["targets"])))
              for p in prometheus_panels(dashboard)]  # fmt: skip
    for rule in alert_rules():
        name, used = rule["alert"], metric_names(rule["expr"])
        showing = [p["title"] for p, names in panels if name in p.get("description", "") and names & used]
        assert showing, f"no panel describes alert {name} with one of its metrics {sorted(used)}"


#: TraceQL attributes the panels filter on, and where the code sets each one.
TRACE_ATTRIBUTES = {
    "resource.service.name": "shared/tracing.py",
    "span.http.route": "shared/tracing.py",
    "span.opsdeck.task.queue_wait_ms": "worker/middleware/tracing.py",
}


#: The service names of Opsdeck's processes (shared/tracing.py).
SERVICES = ("coordinator", "worker", "dashboard")
#: A value of each label a latency panel's data link puts into its TraceQL query.
LINK_LABELS = {"app": "coordinator", "route": "/api/v1/tasks", "node": "select"}


def _traceql(query: str) -> None:
    assert query.startswith("{") and query.endswith("}") and query.count("{") == query.count("}"), query
    assert query.count('"') % 2 == 0, query
    for attribute in re.findall(r"\b(?:resource|span)\.[\w.]+", query):
        assert attribute in TRACE_ATTRIBUTES, f"{attribute} in {query!r}: no span carries it"
        source = (ROOT / TRACE_ATTRIBUTES[attribute]).read_text()
        assert attribute.split(".", 1)[1] in source, (
            f"{attribute} is not set in {TRACE_ATTRIBUTES[attribute]}"
        )
    for service in re.findall(r'resource\.service\.name=~?"([^"]+)"', query):
        assert any(re.fullmatch(service, f"opsdeck-{name}") for name in SERVICES), query


def test_traces_row_lists_opsdeck_traces_with_their_trace_ids(dashboard):
    """Tables of TraceQL searches (Tempo's traces table: one row per trace, its Trace ID a link to
    the trace) on the services Opsdeck names; the first lists every Opsdeck trace."""
    panels = trace_panels(dashboard)
    assert panels[0]["targets"][0]["query"] == '{resource.service.name=~"opsdeck-.*"}'
    for panel in panels:
        assert panel["type"] == "table", panel["title"]
        for target in panel["targets"]:
            assert target["queryType"] == "traceql" and target["tableType"] == "traces", panel["title"]
            assert 0 < target["limit"] <= 100, panel["title"]
            _traceql(target["query"])
    assert {"type": "datasource", "id": "tempo", "name": "Tempo", "version": "1.0.0"} in dashboard[
        "__requires"
    ]
    assert any(r["type"] == "panel" and r["id"] == "table" for r in dashboard["__requires"])


def test_latency_panels_link_to_their_traces(dashboard):
    """The HTTP and pipeline latency panels and the p99 alert panel open Explore on the traces
    datasource with a TraceQL query for the series under the cursor."""
    by_title = {p["title"]: p for p in data_panels(dashboard)}
    for title in ("HTTP latency by route p50 / p95 / p99", "Pipeline node latency p50 / p95 / p99",
                  "Coordinator p99 vs APILatency thresholds"):  # fmt: skip
        links = by_title[title]["fieldConfig"]["defaults"]["links"]
        assert links, title
        for link in links:
            url = urllib.parse.urlsplit(link["url"])
            assert url.path == "/explore", link["url"]
            left = json.loads(urllib.parse.parse_qs(url.query)["left"][0])
            assert left["datasource"] in TRACES_VARIABLES, title
            (query,) = left["queries"]
            assert query["datasource"]["uid"] in TRACES_VARIABLES and query["queryType"] == "traceql", title
            fields = set(re.findall(r"\$\{__field\.labels\.(\w+)\}", query["query"]))
            legend_labels = {
                label
                for t in by_title[title]["targets"]
                for label in re.findall(r"\{\{(\w+)\}\}", t["legendFormat"])
            }
            assert fields <= legend_labels, (
                f"{title}: link uses labels {fields - legend_labels} the series lack"
            )
            _traceql(
                re.sub(r"\$\{__field\.labels\.(\w+)\}", lambda m: LINK_LABELS[m.group(1)], query["query"])
            )


#: Labels of Opsdeck's own series that carry meaning for panels and alerts, by the job exporting them.
EXPORTED_LABELS = {"opsdeck-worker": {"opsdeck_deploys_total": {"service", "status"}}}


def test_target_labels_keep_the_labels_panels_group_by():
    for job in load_yaml(PROM / "prometheus.yml")["scrape_configs"]:
        if job.get("honor_labels"):
            continue
        target_labels = {label for static in job["static_configs"] for label in static.get("labels", {})}
        for metric, labels in EXPORTED_LABELS.get(job["job_name"], {}).items():
            clobbered = target_labels & labels
            assert not clobbered, f"job {job['job_name']}: target labels {clobbered} replace {metric}'s own"
