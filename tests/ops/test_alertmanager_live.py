"""Inhibition and routing through a real Alertmanager (Debian's ``prometheus-alertmanager``).

The route tree and the inhibit rules of ``ops/alertmanager/alertmanager.yml`` run unchanged; only
the receivers become webhooks to this test (same names), and the group waits shrink to a second.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.ops.test_alertmanager import CONFIG
from tests.ops.test_prometheus import load_yaml

pytestmark = pytest.mark.timeout(900)

#: (receiver, alertname, severity, deployment, instance) of every notified firing alert.
Delivery = tuple[str, str, str, str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Inbox:
    """A webhook server: ``/<receiver>`` records the firing alerts of each notification."""

    def __init__(self) -> None:
        self.deliveries: set[Delivery] = set()
        self.lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver = self.path.strip("/")
                with inbox.lock:
                    for alert in body["alerts"]:
                        if alert["status"] == "firing":
                            labels = alert["labels"]
                            inbox.deliveries.add((
                                receiver, labels["alertname"], labels.get("severity", ""),
                                labels.get("deployment", ""), labels.get("instance", ""),
                            ))  # fmt: skip
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> set[Delivery]:
        with self.lock:
            return set(self.deliveries)


def shorten(route: dict[str, Any]) -> None:
    for key in ("group_wait", "group_interval"):
        if key in route or "routes" in route:
            route[key] = "1s"
    for child in route.get("routes", []):
        shorten(child)


@pytest.fixture
def alertmanager(amtool: str, tmp_path: Path) -> Iterator[tuple[str, Inbox]]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("prometheus-alertmanager is not on PATH (Debian's 'prometheus-alertmanager' package)")
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    inbox = Inbox()
    config = load_yaml(CONFIG)
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{inbox.url}/{r['name']}", "send_resolved": False}]}
        for r in config["receivers"]
    ]
    shorten(config["route"])
    test_config = tmp_path / "alertmanager.yml"
    test_config.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [binary, f"--config.file={test_config}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                pytest.fail(f"Alertmanager did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield url, inbox
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        inbox.server.shutdown()
        inbox.server.server_close()


def alert(name: str, severity: str, deployment: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "deployment": deployment, **labels},
        "annotations": {"summary": name},
    }


def post(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def test_inhibition_and_routing_in_a_running_alertmanager(alertmanager):
    url, inbox = alertmanager
    post(url, [
        # deployment a: Redis is down, the rest follows from it
        alert("RedisDown", "critical", "a", instance="10.0.0.1:8000", service="coordinator"),
        alert("WorkerDown", "critical", "a"),
        alert("QueueBacklog", "warning", "a", queue="default.p1"),
        alert("OutboxBacklog", "warning", "a"),
        alert("NoChatTraffic", "warning", "a"),
        # deployment b: Redis is fine there
        alert("WorkerDown", "critical", "b"),
        alert("WorkerInstanceDown", "warning", "b", instance="10.0.1.2:9191", service="worker"),
        alert("HighErrorRate", "critical", "b"),
        alert("HighErrorRate", "warning", "b"),
        alert("DiskSpaceLow", "critical", "b", instance="10.0.1.1:9100", mountpoint="/"),
        alert("DiskSpaceLow", "warning", "b", instance="10.0.1.2:9100", mountpoint="/"),
        alert("LLMFallbackRate", "warning", "b", service="worker"),
        alert("APIErrorBudgetBurn", "critical", "b", service="coordinator"),
        alert("APIErrorRate", "warning", "b", service="coordinator"),
    ])  # fmt: skip
    expected = {
        ("pagerduty", "RedisDown", "critical", "a", "10.0.0.1:8000"),
        ("slack", "RedisDown", "critical", "a", "10.0.0.1:8000"),
        ("pagerduty", "WorkerDown", "critical", "b", ""),
        ("slack", "WorkerDown", "critical", "b", ""),
        ("pagerduty", "HighErrorRate", "critical", "b", ""),
        ("slack", "HighErrorRate", "critical", "b", ""),
        ("pagerduty", "DiskSpaceLow", "critical", "b", "10.0.1.1:9100"),
        ("slack", "DiskSpaceLow", "critical", "b", "10.0.1.1:9100"),
        ("slack", "DiskSpaceLow", "warning", "b", "10.0.1.2:9100"),  # another host: not muted
        ("slack", "LLMFallbackRate", "warning", "b", ""),  # no open breaker: not muted
        ("pagerduty", "APIErrorBudgetBurn", "critical", "b", ""),
        ("slack", "APIErrorBudgetBurn", "critical", "b", ""),
    }
    deadline = time.monotonic() + 60
    while not expected <= inbox.snapshot() and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(3)  # several group intervals: nothing muted arrives late
    assert inbox.snapshot() == expected
