"""``opsdeck up`` when a part dies: the launcher restarts it with capped backoff (one line each),
gives up with one line after repeated quick failures, notices its embedded Redis dying and starts
it again on the same port and data (AOF), and on Ctrl-C stops the apps first and Redis last, after
every worker process still finishing a task — even one whose agent was killed — has finished."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from shared.devtools.embedded_redis import EmbeddedRedis, free_port
from shared.devtools.launcher import GIVE_UP_AFTER, restart_delay
from shared.keys import Keys
from shared.stats import Heartbeat
from tests import requests_free_http as http
from tests.conftest import ROOT
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

KEYS = Keys()
WORKER_ID = socket.gethostname()  # the agent's default WORKER_ID


class Stack:
    """One ``opsdeck up`` under test, its output collected line by line."""

    def __init__(self, cwd: Path, procfile: Path = ROOT / "Procfile") -> None:
        self.c_port, self.d_port = free_port(), free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "COORDINATOR_PORT": str(self.c_port),
            "DASHBOARD_PORT": str(self.d_port),
            "WORKER_PROCESSES": "1",
            "WORKER_POLL_INTERVAL": "0.5",
            "WORKER_METRICS_PORT": str(free_port()),
            "SHUTDOWN_TIMEOUT": "15",
            "BROKER_HEARTBEAT_TIMEOUT": "3",  # a task cut by a kill is redelivered within seconds
        }
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.devtools.cli", "up", "--procfile", str(procfile)],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self._stdout = self.proc.stdout
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(iter(self._stdout.readline, "")), daemon=True
        )
        self._reader.start()

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 60, count: int = 1) -> list[re.Match[str]]:
        def found() -> list[re.Match[str]]:
            matches = [m for line in list(self.lines) if (m := re.search(pattern, line))]
            return matches if len(matches) >= count else []

        try:
            return wait_for(found, timeout=timeout, what=f"a line matching {pattern!r}")
        except AssertionError:
            raise AssertionError(f"no line matching {pattern!r} in:\n{self.out}") from None

    def wait_up(self) -> None:
        self.wait_line("opsdeck is up")
        token = re.search(r"token\s+(\S+\.\S+\.\S+)", self.out)
        assert token
        self.token = token.group(1)
        url = re.search(r"embedded Redis on (redis://127\.0\.0\.1:\d+/0)", self.out)
        assert url
        self.redis_url = url.group(1)
        self.base = f"http://127.0.0.1:{self.c_port}"
        wait_for(lambda: self.get("/health/ready")[0] == 200, timeout=60, what="ready")

    def get(self, path: str) -> tuple[int, Any]:
        try:
            return http.get(self.base + path, self.token)
        except OSError:
            return 0, None

    def submit(self, task_type: str, payload: dict[str, Any]) -> str:
        status, body = http.post(
            f"{self.base}/api/v1/tasks", {"type": task_type, "payload": payload}, self.token
        )
        assert status == 202, body
        return str(body["id"])

    def status(self, task_id: str) -> str | None:
        status, body = self.get(f"/api/v1/tasks/{task_id}")
        return body.get("status") if status == 200 else None

    def wait_status(self, task_id: str, want: str, timeout: float = 60) -> None:
        wait_for(lambda: self.status(task_id) == want, timeout=timeout, what=f"task {task_id} {want}")

    def find_child(self, *words: str, exclude: str = "\0") -> psutil.Process | None:
        """The launcher's direct child whose command line has all ``words``, if any."""
        for p in psutil.Process(self.proc.pid).children():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if all(w in cmd for w in words) and exclude not in cmd:
                return p
        return None

    def child(self, *words: str, exclude: str = "\0") -> psutil.Process:
        """The launcher's direct child whose command line has all ``words``."""
        found = self.find_child(*words, exclude=exclude)
        assert found is not None, f"no child with {words}"
        return found

    def agent(self) -> psutil.Process:
        return self.child("-m", "worker", exclude="worker.process")

    def family(self) -> list[psutil.Process]:
        return list(psutil.Process(self.proc.pid).children(recursive=True))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in psutil.process_iter():
            try:
                if str(self.cwd) in p.cwd():  # whatever this stack left behind
                    p.kill()
            except psutil.Error:
                pass
        self._reader.join(timeout=10)
        self._stdout.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def heartbeat_pid(redis_url: str) -> int | None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        raw = client.get(KEYS.worker(WORKER_ID))
    except redis.RedisError:
        return None
    finally:
        client.close()
    if raw is None:
        return None
    beat = Heartbeat.model_validate_json(raw)
    return beat.pid if beat.state == "running" and beat.processes == 1 else None


def alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_restart_delay_is_capped_exponential():
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)
    assert max(delays) == delays[-1] == restart_delay(100)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_dead_agent_is_restarted_and_the_rest_keeps_running(stack, kill):
    stack.wait_up()
    agent = stack.agent()
    wait_for(lambda: heartbeat_pid(stack.redis_url) == agent.pid, what="first heartbeat")
    process = next(p for p in agent.children() if "worker.process" in " ".join(p.cmdline()))
    others = [stack.child("-m", "coordinator"), stack.child("-m", "dashboard"), stack.child("redis-server")]
    task = stack.submit("sleep", {"seconds": 2})
    stack.wait_status(task, "running")

    agent.send_signal(kill)
    stack.wait_line(rf"opsdeck: worker \(pid {agent.pid}\) (was killed by SIGKILL|exited with 0).*restarting")
    new_pid = wait_for(
        lambda: (pid := heartbeat_pid(stack.redis_url)) and pid != agent.pid and pid,
        timeout=60,
        what="new agent",
    )
    assert stack.agent().pid == new_pid
    # The task being run when its agent died is finished by its process, which drains on the
    # SIGTERM it gets when the agent dies (the kernel repeats that signal once per exiting thread of
    # the agent; the process does not take the repeats for a second stop): one attempt, not cut.
    stack.wait_status(task, "succeeded")
    attempts = redis.Redis.from_url(stack.redis_url).hget(KEYS.task(task), "attempts")
    assert attempts == b"1", attempts
    wait_for(lambda: not psutil.pid_exists(process.pid), what="the old process gone and reaped")
    assert all(alive(p) for p in others), [p.cmdline() for p in others if not alive(p)]
    assert stack.proc.poll() is None
    echo = stack.submit("echo", {"x": 1})
    stack.wait_status(echo, "succeeded")
    assert len(re.findall(r"opsdeck: .*restarting", stack.out)) == 1, stack.out

    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(timeout=90) == 0, stack.out


def test_dead_redis_is_noticed_and_restarted_on_its_port_and_data(stack):
    stack.wait_up()
    before = stack.submit("echo", {"before": "kill"})
    stack.wait_status(before, "succeeded")
    client = redis.Redis.from_url(stack.redis_url)
    client.bgrewriteaof()  # the record is on disk, not only in the last second's buffer
    wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, what="AOF rewrite")
    client.close()
    server = stack.child("redis-server")
    apps = [stack.agent(), stack.child("-m", "coordinator"), stack.child("-m", "dashboard")]

    server.kill()
    stack.wait_line(rf"opsdeck: embedded Redis \(pid {server.pid}\) was killed by SIGKILL.*restarting")
    wait_for(lambda: not psutil.pid_exists(server.pid), what="the dead Redis reaped, not a zombie")
    new = wait_for(
        lambda: (p := stack.find_child("redis-server")) and p.pid != server.pid and p, what="new Redis"
    )
    wait_for(lambda: stack.get("/health/ready")[0] == 200, timeout=60, what="ready again")
    client = redis.Redis.from_url(stack.redis_url)  # the same port
    assert client.info("server")["process_id"] == new.pid
    client.close()
    assert stack.status(before) == "succeeded"  # same data directory: the AOF was replayed
    after = stack.submit("echo", {"after": "restart"})
    stack.wait_status(after, "succeeded")
    assert stack.proc.poll() is None
    assert all(p.is_running() for p in apps[1:])  # the web apps rode it out

    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=90) == 0, stack.out


def read_aof(data_dir: Path, read: Callable[[redis.Redis], Any]) -> Any:
    """``read`` on a Redis started on the data (AOF) under ``data_dir``."""
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        value = read(client)
        client.close()
        return value
    finally:
        server.stop()


def test_ctrl_c_stops_the_apps_first_and_redis_last(stack, tmp_path):
    stack.wait_up()
    task = stack.submit("sleep", {"seconds": 2})
    stack.wait_status(task, "running")
    family = stack.family()
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=90) == 0, stack.out
    out = stack.out
    agent_stopped = re.search(r"\] stopped\s+\[worker\.agent\]", out)  # after draining its process
    assert agent_stopped, out
    positions = [
        out.find("opsdeck: stopping"),
        agent_stopped.start(),
        out.find("opsdeck: embedded Redis stopped"),
        out.find("opsdeck: stopped"),
    ]
    assert -1 not in positions and positions == sorted(positions), out
    left = [p for p in family if alive(p)]
    assert left == [], [p.cmdline() for p in left]
    # The running task finished while Redis was still up: its end is in the AOF.
    assert read_aof(tmp_path / "var" / "redis", lambda c: c.hget(KEYS.task(task), "status")) == b"succeeded"


#: A part whose child outlives it: the child waits for a gate file, then writes to Redis and exits
#: (a worker process still draining when its agent has died).
ORPHAN_PART = """
import os, subprocess, sys, time
from pathlib import Path
gate = Path(sys.argv[1])
if len(sys.argv) > 2:  # the child
    for _ in range(1200):
        if gate.exists():
            break
        time.sleep(0.05)
    time.sleep(0.5)
    import redis
    redis.Redis.from_url(os.environ["REDIS_URL"]).set(f"orphan:{os.getpid()}", "done")
    sys.exit(0)
child = subprocess.Popen([sys.executable, __file__, str(gate), "child"], start_new_session=True)
print(f"child {child.pid}", flush=True)
time.sleep(600)
"""


def test_ctrl_c_waits_for_orphans_still_working_before_stopping_redis(tmp_path):
    script, gate = tmp_path / "orphan_part.py", tmp_path / "gate"
    script.write_text(ORPHAN_PART)
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"parent: python {script} {gate}\n")
    s = Stack(tmp_path, procfile)
    try:
        s.wait_line("opsdeck is up")
        child = int(s.wait_line(r"parent \| child (\d+)")[0].group(1))
        parent = s.child(str(script))
        parent.kill()
        s.wait_line(rf"opsdeck: parent \(pid {parent.pid}\) was killed by SIGKILL.*restarting")
        assert psutil.Process(child).ppid() == s.proc.pid  # re-parented to the launcher
        s.wait_line(r"parent \| child (\d+)", count=2)  # the restarted part has its own child
        s.proc.send_signal(signal.SIGINT)
        s.wait_line(r"opsdeck: waiting up to \d+s for 2 process\(es\) still finishing their work")
        assert "embedded Redis stopped" not in s.out
        gate.touch()
        assert s.proc.wait(timeout=90) == 0, s.out
        out = s.out
        assert out.find("still finishing") < out.find("opsdeck: embedded Redis stopped"), out
        assert not psutil.pid_exists(child)  # reaped
        assert read_aof(tmp_path / "var" / "redis", lambda c: c.get(f"orphan:{child}")) == b"done"
    finally:
        s.close()


def test_a_part_failing_fast_makes_it_give_up_with_one_line(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        'broken: python -c "import sys; sys.exit(3)"\nidle: python -c "import time; time.sleep(600)"\n'
    )
    s = Stack(tmp_path, procfile)
    try:
        s.wait_line("opsdeck is up")
        idle = s.child("time.sleep(600)")
        assert s.proc.wait(timeout=120) == 1, s.out
        out = s.out
        assert (
            len(re.findall(r"opsdeck: broken \(pid \d+\) exited with 3 .*restarting", out))
            == GIVE_UP_AFTER - 1
        )
        assert len(re.findall(r"opsdeck: broken .*giving up", out)) == 1, out
        assert "opsdeck: stopped" in out
        assert not alive(idle)
    finally:
        s.close()
