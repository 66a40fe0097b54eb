"""The agent's /metrics: task counters from every process (surviving a process's death), agent
gauges and queue depths, behind bearer auth."""

from __future__ import annotations

import os
import re
import signal

import pytest

from shared.devtools.embedded_redis import free_port
from tests.helpers import task_fields, wait_for
from tests.worker.test_end_to_end import KEYS, heartbeat, start_agent, wait_running

pytestmark = pytest.mark.slow


def scrape(port: int, token: str | None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m and m.group(1) == name and (not want or want in (m.group(2) or "")):
            return float(m.group(3))
    return None


async def test_agent_metrics(procs, env_factory, tmp_path, rclient, api, auth, token):
    port = free_port()
    start_agent(procs, env_factory, tmp_path, WORKER_METRICS_PORT=port, METRICS_TOKEN="scrape-token")
    first = wait_running(rclient, "agent")
    assert scrape(port, None)[0] == 401
    assert scrape(port, "wrong")[0] == 401
    assert scrape(port, token("tasks:read"))[0] == 401
    assert scrape(port, token("admin"))[0] == 200

    ids = []
    for i in range(3):
        ids.append(
            (
                await (
                    await api.post(
                        "/api/v1/tasks", json={"type": "echo", "payload": {"i": i}}, headers=auth()
                    )
                ).json()
            )["id"]
        )
    ids.append((await (await api.post("/api/v1/tasks", json={"type": "fail"}, headers=auth())).json())["id"])

    def all_ended() -> bool:
        return all(task_fields(rclient, KEYS, t).get("status") in ("succeeded", "dead") for t in ids)

    wait_for(all_ended, what="every task ended")

    # A process dies: what it counted is still exported after its replacement starts.
    os.kill(first.procs[0].pid, signal.SIGKILL)
    wait_for(
        lambda: (
            (b := heartbeat(rclient, "agent"))
            and b.procs
            and b.procs[0].pid != first.procs[0].pid
            and b.processes == 1
        )
    )
    await api.post("/api/v1/tasks", json={"type": "sleep", "payload": {"seconds": 0}}, headers=auth())
    await api.post(
        "/api/v1/tasks", json={"type": "sleep", "payload": {"seconds": 0}, "priority": "P3"}, headers=auth()
    )

    seen: dict[str, object] = {}

    def scraped():
        status, text = scrape(port, "scrape-token")
        done = sample(text, "opsdeck_tasks_processed_total", type="sleep")
        dead = sample(text, "opsdeck_queue_dead", queue="default.p2")  # queue depths refresh each poll
        seen.update(status=status, sleep_processed=done, dead=dead)
        return status == 200 and done == 2.0 and dead == 1.0 and text

    # The replacement process has to boot before it consumes: on a loaded CI machine that can
    # take a while, so the wait is generous and says what it last saw.
    try:
        text = wait_for(scraped, timeout=60, what="metrics after the restart")
    except AssertionError:
        raise AssertionError(f"metrics after the restart never matched; last seen {seen}") from None
    assert sample(text, "opsdeck_tasks_processed_total", type="echo") == 3.0
    assert sample(text, "opsdeck_tasks_processed_total", type="fail") == 3.0  # every ended attempt
    assert sample(text, "opsdeck_tasks_failed_total", type="fail") == 3.0
    assert sample(text, "opsdeck_tasks_failed_total", type="echo") == 0.0  # at 0 from the start
    assert sample(text, "opsdeck_tasks_retried_total", type="coach") == 0.0
    assert sample(text, "opsdeck_tasks_retried_total", type="fail") == 2.0
    assert sample(text, "opsdeck_task_duration_seconds_count", type="echo") == 3.0
    assert sample(text, "opsdeck_worker_up", worker="agent") == 1.0
    assert sample(text, "opsdeck_worker_processes", worker="agent") == 1.0
    assert sample(text, "opsdeck_worker_cpu_percent", worker="agent") is not None
    assert (sample(text, "opsdeck_worker_memory_percent", worker="agent") or 0) > 0
    assert sample(text, "opsdeck_worker_utilization", worker="agent") is not None
    assert sample(text, "opsdeck_queue_dead", queue="default.p2") == 1.0
    assert sample(text, "opsdeck_queue_length", queue="default.p0") == 0.0
    assert sample(text, "opsdeck_queue_delayed", queue="default.p2") == 0.0
    assert sample(text, "opsdeck_redis_up") == 1.0
    assert sample(text, "coordinator_active_sessions") == 0.0
