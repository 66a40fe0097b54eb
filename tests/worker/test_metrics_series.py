"""The agent's /metrics has every task type's processed, failed and retried series from the start
(at 0), so failure-rate queries have a series before a type's first failure; counted values are
served as counted, never doubled by the zeros."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import generate_latest

from shared.procutil import isolated_env
from shared.task_types import task_types
from tests.conftest import ROOT
from tests.worker.test_metrics import sample
from worker.metrics import AgentCollector, build_registry

COUNTERS = ("opsdeck_tasks_processed_total", "opsdeck_tasks_failed_total", "opsdeck_tasks_retried_total")


def test_task_series_start_at_zero_for_every_type(tmp_path):
    registry = build_registry(tmp_path, AgentCollector(lambda: {"worker": "w"}))
    text = generate_latest(registry).decode()
    types = set(task_types()) | {"deploy"}  # deploy registers itself where the deploy code is imported
    for name in types:
        for metric in COUNTERS:
            assert sample(text, metric, type=name) == 0.0, (metric, name, text)

    # A worker process counts one failed attempt that will be retried: its values, once each.
    env = isolated_env()
    env.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    code = "from worker.metrics import record_attempt; record_attempt('fail', 'retrying', 0.01)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    text = generate_latest(registry).decode()
    for metric in COUNTERS:
        lines = [line for line in text.splitlines() if line.startswith(f'{metric}{{type="fail"}}')]
        assert lines == [f'{metric}{{type="fail"}} 1.0'], text
        assert sample(text, metric, type="echo") == 0.0
