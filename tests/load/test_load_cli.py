"""``opsdeck load``: each profile's quick run as a real subprocess (private stack), its report,
its thresholds and exit code, and that no process is left behind, even after a Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shared.procutil import isolated_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

KINDS = {"chat", "feedback", "task_submit", "task_status", "chat_e2e", "task_e2e"}
STAT_KEYS = {"count", "errors", "error_rate", "throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"}


def load_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """TMPDIR under the test's directory: every process of the run carries it in its environment."""
    env = isolated_env()
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT), OPSDECK_VAR_DIR=str(tmp_path / "var"), **extra)
    return env


def run_load(
    tmp_path: Path, *args: str, timeout: float = 90, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "shared.devtools.cli", "load", *args], cwd=ROOT, env=load_env(tmp_path, **env),
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return result, time.monotonic() - started


def leftovers(tmp_path: Path) -> list[str]:
    """Live processes started by a run under ``tmp_path`` (found by their TMPDIR)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("TMPDIR") == str(tmp_path) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        except psutil.Error:
            continue
    return found


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize(
    ("profile", "duration"), [("sustained", 10), ("burst", 8), ("spike", 9), ("soak", 8), ("chaos", 12)]
)
def test_quick_profile_report_thresholds_and_cleanup(tmp_path, profile, duration):
    before = children()
    report_path = tmp_path / "report.json"
    result, took = run_load(
        tmp_path, profile, "--quick", "--duration", str(duration), "--report", str(report_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 60, f"a quick run took {took:.1f}s"
    report = json.loads(report_path.read_text())

    assert report["profile"] == profile and report["quick"] is True and report["own_stack"] is True
    assert report["target"].startswith("http://127.0.0.1:")
    assert report["duration_s"] == duration
    assert duration - 0.5 <= report["elapsed_s"] <= duration + 2
    assert set(report["requests"]) == KINDS
    for kind in KINDS:
        assert set(report["requests"][kind]) >= STAT_KEYS, kind
    for kind in ("chat", "feedback", "chat_e2e"):
        stats = report["requests"][kind]
        assert stats["count"] > 0, kind
        assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert report["totals"]["requests"] > 0 and report["totals"]["throughput_per_s"] > 0
    assert report["chat_end_to_end"]["p95_ms"] == report["requests"]["chat_e2e"]["p95_ms"]
    assert {t["name"] for t in report["thresholds"]} == {"error_rate", "chat_e2e_p95_s"}
    assert all(t["passed"] for t in report["thresholds"]) and report["passed"] is True
    assert "PASSED" in result.stdout

    memory = report["memory"]
    assert {"coordinator", "worker_agent"} <= set(memory)
    assert any(role.startswith("dramatiq[") for role in memory)
    assert memory["coordinator"]["start_rss_mb"] > 0 and memory["coordinator"]["growth_mb"] is not None
    if profile == "soak":
        assert len(memory["timeline_total_rss_mb"]) >= 2
    if profile == "spike":
        assert [s["users"] for s in report["stages"]] == [2, 20, 2]
    if profile == "chaos":
        faults = report["faults"]
        assert faults["workers_killed"] >= 1 and faults["redis_latency_windows"] >= 1
        assert 0.15 <= faults["fault_ratio"] <= 0.45
        assert sum(s["count_during_fault"] for s in report["requests"].values()) > 0
    else:
        assert report["faults"] is None

    roles = {p["role"] for p in report["processes"]}
    assert {"redis", "coordinator", "worker_agent", "dramatiq"} <= roles
    for entry in report["processes"]:
        assert not psutil.pid_exists(entry["pid"]) or psutil.Process(entry["pid"]).environ().get(
            "TMPDIR"
        ) != str(tmp_path), entry
    assert leftovers(tmp_path) == []
    assert children() <= before
    assert not list(tmp_path.glob("opsdeck-load-*")), "the run's directory was not removed"


def test_ctrl_c_stops_everything(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.devtools.cli", "load", "sustained", "--duration", "600"],
        cwd=ROOT, env=load_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any("python -m worker" in p for p in leftovers(tmp_path)):
            time.sleep(0.2)
        time.sleep(3)
        assert len(leftovers(tmp_path)) >= 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert leftovers(tmp_path) == []


def test_failed_threshold_exits_non_zero(tmp_path):
    from shared.devtools.embedded_redis import free_port

    report_path = tmp_path / "report.json"
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every request fails
    result, _ = run_load(tmp_path, "sustained", "--quick", "--duration", "2", "--users", "2", "--url", url,
                         "--report", str(report_path), OPSDECK_TOKEN="not-checked")  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["own_stack"] is False and report["memory"] is None
    assert report["passed"] is False
    assert {t["name"]: t["passed"] for t in report["thresholds"]} == {
        "error_rate": False,
        "chat_e2e_p95_s": False,
    }
    assert "FAIL" in result.stdout


def test_bad_usage_exits_2(tmp_path):
    result, _ = run_load(tmp_path, "burst", "--quick", "--duration", "100")
    assert result.returncode == 2 and "--duration" in result.stderr
    result, _ = run_load(tmp_path, "chaos", "--url", "http://127.0.0.1:1")
    assert result.returncode == 2 and "own stack" in result.stderr
    result, _ = run_load(tmp_path, "sustained", "--url", "http://example.com")
    assert result.returncode == 2 and "127.0.0.1" in result.stderr
