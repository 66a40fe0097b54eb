"""Prometheus configuration, alert rules and their unit tests, checked with the real promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ops.promql import KNOWN_METRICS, metric_names

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "ops" / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"

#: Alerts issue 7 asks for, plus the per-instance worker and dashboard ones the runbook uses, and
#: issue 17's (API error rate, LLM, cache, chat traffic, disk, outbox, bandit rollback).
REQUIRED_ALERTS = {
    "WorkerDown", "QueueBacklog", "HighErrorRate", "HighCPU", "HighMemory", "APILatency",
    "CoordinatorDown", "RedisDown", "DeployFailed",
    "APIErrorRate", "LLMFallbackRate", "LLMInvalidJSON", "LLMBreakerOpen", "LLMCacheHitRatioLow",
    "NoChatTraffic", "RedisMemoryHigh", "DiskSpaceLow", "OutboxBacklog", "BanditRollback",
}  # fmt: skip

# promtool may need installing (apt-get) on a fresh machine: allow for it.
pytestmark = pytest.mark.timeout(900)


def run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def load_yaml(path: Path) -> Any:
    # PyYAML is not a runtime dependency: these structure checks need it in the dev extra.
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(PROM / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_promtool_check_config(promtool, tmp_path):
    # credentials_file must exist for promtool: check a copy next to a stand-in token file.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    (copy / "metrics_token").write_text("stand-in-metrics-token")
    output = run(promtool, "check", "config", str(copy / "prometheus.yml"))
    assert "SUCCESS" in output
    assert "1 rule files found" in output


def test_scrape_jobs_and_bearer_token():
    config = load_yaml(PROM / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {
        "opsdeck-coordinator": "127.0.0.1:8000",
        "opsdeck-dashboard": "127.0.0.1:8001",
        "opsdeck-worker": "127.0.0.1:9191",
    }
    for name, target in expected.items():
        job = jobs[name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert target in job["static_configs"][0]["targets"]
        assert job["authorization"]["credentials_file"] == "metrics_token"
        assert job["authorization"].get("type", "Bearer") == "Bearer"
    # the alert rules select on these job names
    rules_text = (PROM / "alerts.yml").read_text()
    for name in ("opsdeck-coordinator", "opsdeck-dashboard", "opsdeck-worker"):
        assert f'job="{name}"' in rules_text
    # the disk alerts read node_exporter (no token)
    assert jobs["node"]["static_configs"][0]["targets"] == ["127.0.0.1:9100"]
    assert "authorization" not in jobs["node"]


def test_promtool_check_rules(promtool):
    output = run(promtool, "check", "rules", str(PROM / "alerts.yml"))
    assert "SUCCESS" in output


def test_promtool_test_rules(promtool):
    output = run(promtool, "test", "rules", "tests/alerts_test.yml", cwd=PROM)
    assert "SUCCESS" in output


def test_every_required_alert_exists():
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED_ALERTS
    severities = {(r["alert"], r["labels"]["severity"]) for r in alert_rules()}
    assert {
        ("HighErrorRate", "critical"),
        ("HighErrorRate", "warning"),
        ("WorkerDown", "critical"),
        ("APILatency", "critical"),
        ("APILatency", "warning"),
        ("DiskSpaceLow", "critical"),
        ("DiskSpaceLow", "warning"),
    } <= severities


def test_rule_count_and_groups():
    groups = load_yaml(PROM / "alerts.yml")["groups"]
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)) >= 6
    assert all(group["rules"] for group in groups)
    assert len(alert_rules()) >= 20


def test_every_alert_has_annotations_and_a_runbook_anchor():
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    for rule in alert_rules():
        name = rule["alert"]
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name} has no {key}"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbook.md", f"{name}: runbook_url {annotations['runbook_url']}"
        assert anchor in anchors, f"{name}: no heading for #{anchor} in docs/runbook.md"


def test_alerts_use_only_exported_metric_names():
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - KNOWN_METRICS
        assert not unknown, f"{rule['alert']} uses {unknown}"


def test_unit_tests_show_each_alert_firing_then_resolved():
    doc = load_yaml(PROM / "tests" / "alerts_test.yml")
    fired: dict[str, list[str]] = {}
    resolved: set[str] = set()
    for case in doc["tests"]:
        firing_at: dict[str, int] = {}
        for check in case.get("alert_rule_test", []):
            name, at = check["alertname"], _minutes(check["eval_time"])
            if check.get("exp_alerts"):
                firing_at.setdefault(name, at)
                fired.setdefault(name, []).extend(
                    a["exp_labels"].get("severity", "") for a in check["exp_alerts"]
                )
            elif name in firing_at and at > firing_at[name]:
                resolved.add(name)
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in fired.get(name, []), (
            f"no test shows {name} {rule['labels']} firing"
        )
        assert name in resolved, f"no test shows {name} resolving after it fired"


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)] // 60
