"""Alertmanager configuration: checked and routed with the real amtool (Debian's package)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ops.test_prometheus import alert_rules, load_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
PROMETHEUS = ROOT / "ops" / "prometheus" / "prometheus.yml"
#: Who hears about an alert, by severity (amtool prints the receivers in route order).
RECEIVERS = {"critical": "pagerduty,slack", "warning": "slack"}

# amtool may need installing (apt-get) on a fresh machine: allow for it.
pytestmark = pytest.mark.timeout(900)


def amtool_run(amtool: str, *args: str) -> str:
    done = subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"amtool {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def routed_to(amtool: str, labels: dict[str, str], expected: str) -> str:
    """The receivers ``labels`` reach; ``--verify.receivers`` makes amtool fail on a mismatch."""
    pairs = [f"{k}={v}" for k, v in labels.items()]
    args = ["config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={expected}"]
    output = amtool_run(amtool, *args, *pairs)
    return next(line for line in output.splitlines() if not line.startswith("Warning:")).strip()


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = load_yaml(CONFIG)
    assert isinstance(data, dict)
    return data


def alternatives(matcher: str, label: str = "alertname") -> set[str]:
    """The values an ``alertname="X"`` or ``alertname=~"X|Y"`` matcher accepts."""
    match = re.fullmatch(rf'\s*{label}\s*(=~|=)\s*"([^"]*)"\s*', matcher)
    assert match, matcher
    return set(match.group(2).split("|")) if match.group(1) == "=~" else {match.group(2)}


def test_amtool_check_config(amtool):
    output = amtool_run(amtool, "check-config", str(CONFIG))
    assert "SUCCESS" in output
    assert "2 receivers" in output


@pytest.mark.parametrize(
    "rule",
    [pytest.param(r, id=f"{r['alert']}-{r['labels']['severity']}") for r in alert_rules()],
)
def test_every_alert_reaches_its_receivers(amtool, rule):
    severity = rule["labels"]["severity"]
    labels = {"alertname": rule["alert"], **rule["labels"], "service": "worker", "deployment": "opsdeck"}
    assert routed_to(amtool, labels, RECEIVERS[severity]) == RECEIVERS[severity]


def test_an_alert_without_severity_still_reaches_slack(amtool):
    assert routed_to(amtool, {"alertname": "Watchdog"}, "slack") == "slack"


def test_secrets_are_read_from_files(config):
    text = CONFIG.read_text()
    assert "hooks.slack.com" not in text and "slack_api_url:" not in text
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"slack", "pagerduty"}
    for slack in receivers["slack"]["slack_configs"]:
        assert slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
        assert "api_url" not in slack
        assert slack["send_resolved"] is True
    for pager in receivers["pagerduty"]["pagerduty_configs"]:
        assert pager["routing_key_file"].startswith("/etc/alertmanager/secrets/")
        assert "routing_key" not in pager and "service_key" not in pager
        assert pager["send_resolved"] is True


def test_grouping_by_alertname_and_service(config):
    route = config["route"]
    assert route["group_by"] == ["alertname", "service"]
    assert route["receiver"] == "slack"
    assert "group_by" not in str(route.get("routes"))  # the children keep the same grouping
    pager = route["routes"][0]
    assert pager["receiver"] == "pagerduty" and pager["continue"] is True


def test_inhibit_rules_name_existing_alerts(config):
    names = {rule["alert"] for rule in alert_rules()}
    for inhibit in config["inhibit_rules"]:
        assert "deployment" in inhibit["equal"], inhibit
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            if matcher.lstrip().startswith("alertname"):
                unknown = alternatives(matcher) - names
                assert not unknown, f"{matcher} names no alert of alerts.yml: {unknown}"


def muted_by(config: dict[str, Any], source: str) -> set[str]:
    muted: set[str] = set()
    for inhibit in config["inhibit_rules"]:
        if any(source in alternatives(m) for m in inhibit["source_matchers"] if "alertname" in m):
            for matcher in inhibit["target_matchers"]:
                muted |= alternatives(matcher)
    return muted


def test_redis_down_mutes_the_worker_and_queue_alerts_it_causes(config):
    assert muted_by(config, "RedisDown") >= {
        "WorkerDown", "WorkerInstanceDown", "QueueBacklog", "HighErrorRate", "OutboxBacklog", "NoChatTraffic",
    }  # fmt: skip
    assert "RedisDown" not in muted_by(config, "RedisDown")
    assert muted_by(config, "RedisOutOfMemory") == {"RedisMemoryHigh"}
    assert muted_by(config, "LLMBreakerOpen") >= {"LLMFallbackRate"}
    assert muted_by(config, "APIErrorBudgetBurn") == {"APIErrorRate"}


def test_critical_mutes_the_warning_level_of_the_same_alert(config):
    rules = [
        r for r in config["inhibit_rules"]
        if r["source_matchers"] == ['severity="critical"'] and r["target_matchers"] == ['severity="warning"']
    ]  # fmt: skip
    assert len(rules) == 1
    # without alertname in equal, any critical alert would mute every warning
    assert {"alertname", "instance", "mountpoint"} <= set(rules[0]["equal"])
    both = {r["alert"] for r in alert_rules() if r["labels"]["severity"] == "critical"} & {
        r["alert"] for r in alert_rules() if r["labels"]["severity"] == "warning"
    }
    assert both >= {"HighErrorRate", "APILatency", "DiskSpaceLow"}


def test_prometheus_sends_to_this_alertmanager():
    prometheus = load_yaml(PROMETHEUS)
    targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:9093"]
