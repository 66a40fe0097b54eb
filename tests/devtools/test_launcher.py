"""``opsdeck up``: embedded Redis, the Procfile processes, URLs and a token; a signal stops them all."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from shared.devtools.embedded_redis import free_port
from tests import requests_free_http as http
from tests.conftest import ROOT
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_up_runs_the_stack_and_stops_everything(tmp_path, stop_signal):
    c_port, d_port = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "COORDINATOR_PORT": str(c_port),
        "DASHBOARD_PORT": str(d_port),
        "WORKER_PROCESSES": "1",
        "WORKER_POLL_INTERVAL": "0.5",
        "WORKER_METRICS_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.devtools.cli", "up", "--procfile", str(ROOT / "Procfile")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    stdout = proc.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("opsdeck is up" in line for line in lines), timeout=30, what="launcher banner")
        out = "".join(lines)
        assert re.search(r"embedded Redis on redis://127\.0\.0\.1:(\d+)/0", out)
        assert f"http://127.0.0.1:{c_port}" in out
        assert f"http://127.0.0.1:{d_port}" in out
        match = re.search(r"token\s+(\S+\.\S+\.\S+)", out)
        assert match
        token = match.group(1)
        assert (tmp_path / "var" / "jwt_secret").exists()
        assert (tmp_path / "var" / "redis" / "appendonly.aof").exists() or (
            tmp_path / "var" / "redis" / "appendonlydir"
        ).exists()

        base = f"http://127.0.0.1:{c_port}"
        wait_for(lambda: http.get(f"{base}/health/ready")[0] == 200, timeout=30, what="ready")
        status, body = http.post(f"{base}/api/v1/tasks", {"type": "echo", "payload": {"x": 1}}, token)
        assert status == 202, body
        wait_for(
            lambda: http.get(base + body["status_url"], token)[1].get("status") == "succeeded",
            timeout=20,
            what="echo succeeded",
        )
        assert http.get(f"http://127.0.0.1:{d_port}/health/live")[0] == 200

        family = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in family)
        for part in ("redis-server", "coordinator", "worker", "dashboard", "worker.process"):
            assert part in names
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=60) == 0, "".join(lines)
        time.sleep(0.2)
        left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], [p.cmdline() for p in left]
        assert "opsdeck: stopped" in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        stdout.close()
