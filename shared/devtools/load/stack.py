"""A private Opsdeck stack for one load run, on free 127.0.0.1 ports.

Embedded Redis (no AOF) in a temporary directory, optionally behind a fault proxy (chaos),
then ``python -m coordinator`` and ``python -m worker`` with a generated JWT secret.
:meth:`Stack.stop` stops everything (agent and coordinator with SIGTERM, then Redis) and
removes the directory; the children also get SIGTERM if this process dies (``procutil``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis

from shared.auth import mint
from shared.devtools.embedded_redis import EmbeddedRedis, free_port
from shared.devtools.load.faultproxy import FaultProxy
from shared.keys import Keys
from shared.procutil import isolated_env, python_module, spawn, stop_all

#: Environment of the stack's processes (beyond Redis, secret, ports and directory).
STACK_ENV = {
    "LOG_LEVEL": "WARNING",
    "WORKER_METRICS_PORT": "0",
    "WORKER_POLL_INTERVAL": "1",
    "BROKER_HEARTBEAT_TIMEOUT": "5",
    "SHUTDOWN_TIMEOUT": "10",
    "PYTHONUNBUFFERED": "1",
}
ROOT = Path(__file__).resolve().parents[3]


class Stack:
    """Redis + coordinator + one worker agent, owned by this process."""

    def __init__(self, *, proxy: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="opsdeck-load-"))
        self.secret = secrets.token_urlsafe(48)
        self.worker_id = f"load-{os.getpid()}"
        self.keys = Keys()
        self.port = free_port()
        self.redis = EmbeddedRedis(self.tmp / "redis", aof=False)
        self.use_proxy = proxy
        self.proxy: FaultProxy | None = None
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.client: redis.Redis | None = None
        self.seen: dict[int, str] = {}  # pid → role, every process this stack had

    @property
    def url(self) -> str:
        """Base URL of the coordinator."""
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        """A bearer token for the load users."""
        return mint(self.secret.encode(), ["tasks:write", "tasks:read"], subject="load", ttl=48 * 3600)

    def env(self, redis_url: str) -> dict[str, str]:
        """Environment of a stack process."""
        env = isolated_env()
        env.update(STACK_ENV)
        env.update(
            REDIS_URL=redis_url,
            JWT_SECRET=self.secret,
            COORDINATOR_PORT=str(self.port),
            OPSDECK_VAR_DIR=str(self.tmp / "var"),
            WORKER_ID=self.worker_id,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        return env

    def start(self, timeout: float = 30.0) -> None:
        """Start everything and wait until the coordinator is ready and the agent runs all processes."""
        self.redis.start()
        assert self.redis.proc is not None
        self.seen[self.redis.proc.pid] = "redis"
        self.client = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        upstream = self.redis.url
        if self.use_proxy:
            self.proxy = FaultProxy(self.redis.port)
            upstream = self.proxy.url
        env = self.env(upstream)
        self.coordinator = self._spawn("coordinator", env)
        self.agent = self._spawn("worker", env)
        self.seen[self.coordinator.pid] = "coordinator"
        self.seen[self.agent.pid] = "worker_agent"
        self.wait_ready(timeout)

    def _spawn(self, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{module}.log").open("ab")
        try:
            return spawn(python_module(module), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        finally:
            log.close()

    def heartbeat(self) -> dict[str, Any] | None:
        """The agent's heartbeat JSON (None when absent)."""
        assert self.client is not None
        try:
            raw = self.client.get(self.keys.worker(self.worker_id))
        except redis.RedisError:
            return None
        return orjson.loads(raw) if raw else None

    def dramatiq_pids(self) -> list[int]:
        """Pids of the agent's live Dramatiq processes, from its heartbeat (``procs``)."""
        beat = self.heartbeat() or {}
        procs = beat.get("procs") or []
        pids = [int(p["pid"]) for p in procs if isinstance(p, dict) and p.get("alive")]
        for pid in pids:
            self.seen.setdefault(pid, "dramatiq")
        return pids

    def wait_ready(self, timeout: float) -> None:
        """Until ``/health/ready`` is 200 and the heartbeat says running with every process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in (("coordinator", self.coordinator), ("worker", self.agent)):
                if proc is not None and proc.poll() is not None:
                    log = (self.tmp / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
            beat = self.heartbeat() or {}
            if beat.get("state") == "running" and beat.get("processes") == beat.get("processes_desired"):
                try:
                    with urllib.request.urlopen(self.url + "/health/ready", timeout=2) as resp:  # noqa: S310
                        if resp.status == 200:
                            self.dramatiq_pids()
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"the stack was not ready within {timeout:g}s (logs under {self.tmp})")

    def processes(self) -> dict[str, psutil.Process]:
        """Role → live process: coordinator, worker_agent and each Dramatiq process (``dramatiq[pid]``)."""
        out: dict[str, psutil.Process] = {}
        for role, proc in (("coordinator", self.coordinator), ("worker_agent", self.agent)):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    out[role] = psutil.Process(proc.pid)
        for pid in self.dramatiq_pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                out[f"dramatiq[{pid}]"] = psutil.Process(pid)
        return out

    def exited(self) -> dict[str, str]:
        """Processes that exited on their own before :meth:`stop`: name → exit code and log tail."""
        out = {}
        for name, proc in (("coordinator", self.coordinator), ("worker", self.agent)):
            if proc is not None and proc.poll() is not None:
                log = self.tmp / f"{name}.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                out[name] = f"exit code {proc.returncode}\n{tail}"
        return out

    def stop(self) -> list[int]:
        """Stop everything this stack started; returns pids that had to be SIGKILLed."""
        killed = stop_all([p for p in (self.agent, self.coordinator) if p is not None], 25.0)
        if self.proxy is not None:
            self.proxy.close()
        if self.client is not None:
            self.client.close()
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return killed

    def logs_tail(self, chars: int = 1500) -> str:
        """The end of the coordinator and worker logs (for a failed start)."""
        parts = []
        for name in ("coordinator", "worker"):
            path = self.tmp / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or "(no logs)"
