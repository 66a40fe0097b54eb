"""The Grafana dashboard: importable JSON, datasource variable, known metrics, valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.promql import KNOWN_METRICS, grafana_to_promql, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "opsdeck.json"
DS_VARIABLES = {"${datasource}", "$datasource", "${DS_PROMETHEUS}"}

#: Panel titles each row must contain (issue 7 §2).
ROWS = {
    "Bandit": {"Exploration ratio", "UCB score distribution", "Arm selection frequency",
               "Average reward per arm"},
    "Latency": {"Pipeline node latency p50 / p95 / p99", "HTTP latency by route p50 / p95 / p99",
                "Error rate by node", "Active sessions"},
    "Queue": {"Queue length", "Processing rate", "Failure rate", "Worker utilization"},
    "Resources": {"CPU per worker", "Memory per worker"},
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


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and annotation query."""
    found = [
        (f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"])
        for p in data_panels(dashboard)
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
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] in DS_VARIABLES, variable["name"]


def test_every_panel_and_target_uses_the_datasource_variable(dashboard):
    for panel in data_panels(dashboard):
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
    rows: dict[str, set[str]] = {}
    current = None
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], set())
            current |= {p["title"] for p in panel.get("panels", [])}
        else:
            assert current is not None, f"{panel['title']} is above the first row"
            current.add(panel["title"])
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
