"""Helpers for tests: waiting on conditions and supervising real processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from shared.procutil import python_module, spawn, stop_all

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class Processes:
    """Opsdeck processes started by a test, with their output captured to files."""

    def __init__(self) -> None:
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, module: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
        """``python -m module`` with ``env``; stdout and stderr go to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
        proc = spawn(python_module(module, *args), env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.started.append((proc, log))
        return proc

    def stop_all(self) -> None:
        """Stop everything still running (TERM, then KILL after 20 s)."""
        stop_all([p for p, _ in self.started], 20.0)


def read_log(path: Path) -> str:
    """A captured log (empty if missing)."""
    return path.read_text(errors="replace") if path.exists() else ""


def task_fields(client: Any, keys: Any, task_id: str) -> dict[str, str]:
    """A task hash as str → str."""
    raw = client.hgetall(keys.task(task_id))
    return {k.decode(): v.decode() for k, v in raw.items()}
