"""Spawning child processes that never outlive their parent and never share its signals."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _die_with_parent_ignoring_usr() -> None:
    _die_with_parent()
    # Ignored dispositions survive exec: a SIGUSR1/2 sent before the child installs its handlers
    # is dropped instead of killing it (the default action of both is to terminate).
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    ignore_usr: bool = False,
    umask: int | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (a Ctrl-C to our terminal is not sent to it; we forward
    signals ourselves) with SIGTERM delivered to it if we die, even by SIGKILL (Linux).
    ``ignore_usr`` starts it with SIGUSR1/SIGUSR2 ignored until it installs handlers; ``umask``
    sets the child's file-creation mask (e.g. ``0o077``: what it creates is its owner's only)."""
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        start_new_session=True,
        preexec_fn=_die_with_parent_ignoring_usr if ignore_usr else _die_with_parent,
        umask=-1 if umask is None else umask,
        **popen,
    )


#: Prefixes of the environment variables Opsdeck's own settings read.
SETTINGS_PREFIXES = ("REDIS_", "OPSDECK_", "WORKER_", "JWT_")


def isolated_env() -> dict[str, str]:
    """This process's environment without Opsdeck's settings (:data:`SETTINGS_PREFIXES`), so a
    child process started for a test, benchmark or load run gets only what its caller sets."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[int]:
    """SIGTERM each live process once, wait for all up to ``timeout`` seconds in total, then
    SIGKILL the rest; returns the pids that had to be killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(proc.pid)
            proc.kill()
            proc.wait()
    return killed


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux): a process whose parent
    dies is re-parented to us instead of init, so we can wait for it and reap it. True if set."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reap_orphans(tracked: Collection[int]) -> list[tuple[int, int]]:
    """Reap every exited child of ours that is not in ``tracked`` (children we hold a Popen for
    and reap through it): orphans re-parented to a subreaper. Returns ``(pid, status)`` pairs."""
    reaped = []
    for _ in range(10_000):  # bounded: at most that many zombies per call
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid in tracked:
            break  # nothing exited, or one of ours: its Popen reaps it (then the next call goes on)
        _, status = os.waitpid(info.si_pid, 0)
        reaped.append((info.si_pid, status))
    return reaped
