"""``opsdeck up``: the development launcher.

Starts an embedded Redis under ``./var/redis`` when ``REDIS_URL`` is unset, then every process
of the ``Procfile`` (coordinator, worker agent, dashboard), prints the URLs and a login token, and
relays their output with a name prefix.

- A part that exits on its own (crash, SIGKILL, SIGTERM, exit 0) is started again after a capped
  exponential backoff (0.5 s, 1 s, 2 s, ... up to :data:`MAX_RESTART_BACKOFF`), with one line
  saying which part, how it ended and when it comes back. A run of :data:`STABLE_AFTER` seconds
  resets its backoff; after :data:`GIVE_UP_AFTER` quick failures in a row the launcher says so in
  one line and stops everything (exit 1): a part that cannot start is a problem to fix, not to
  hide behind the others.
- The embedded Redis is supervised the same way: when it dies the launcher reaps it, says so, and
  starts it again on the same port with the same data directory, so it replays its AOF (up to the
  last second of writes can be lost with ``appendfsync everysec``). The apps reconnect by
  themselves.
- The launcher is the reaper of its orphans (Linux): the worker processes of an agent that died
  keep finishing their tasks (they drain on the SIGTERM they get when the agent dies) and are
  reaped here, never left as zombies.
- Ctrl-C or SIGTERM stops the apps first (one SIGTERM each; the agent drains its processes within
  ``SHUTDOWN_TIMEOUT``), then waits for orphaned worker processes still draining, and stops Redis
  last (SIGTERM: it flushes its AOF), so no draining process loses Redis. A second Ctrl-C kills
  whatever is still running (unfinished messages are then redelivered at the next start); Redis is
  still stopped cleanly.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import psutil

from shared.auth import mint
from shared.devtools.embedded_redis import EmbeddedRedis
from shared.procutil import become_subreaper, reap_orphans, spawn, stop_all
from shared.settings import Settings

COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m")
RESET = "\033[0m"

#: Wait before the first restart of a part (seconds); doubled on each quick failure in a row.
RESTART_BACKOFF = 0.5
#: Longest wait before a restart (seconds).
MAX_RESTART_BACKOFF = 10.0
#: A part that ran this long before it ended starts its backoff again (seconds).
STABLE_AFTER = 30.0
#: Quick failures in a row after which the launcher gives up and stops everything.
GIVE_UP_AFTER = 5
#: Seconds between looks at the parts.
TICK = 0.2


def restart_delay(failures: int) -> float:
    """Wait before restarting a part that failed ``failures`` times in a row (1 = first)."""
    return min(MAX_RESTART_BACKOFF, RESTART_BACKOFF * 2.0 ** max(0, min(failures, 32) - 1))


def describe_exit(returncode: int) -> str:
    """``exited with 3`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with {returncode}"


def say(line: str) -> None:
    """One launcher line on stdout."""
    print(f"opsdeck: {line}", flush=True)


def read_procfile(path: Path) -> list[tuple[str, list[str]]]:
    """``name: command`` lines; a leading ``python`` runs this interpreter."""
    entries = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        argv = shlex.split(command)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        entries.append((name.strip(), argv))
    return entries


def _relay(name: str, color: str, stream: IO[bytes], width: int) -> None:
    tty = sys.stdout.isatty()
    prefix = f"{color}{name:<{width}} |{RESET} " if tty else f"{name:<{width}} | "
    for raw in iter(stream.readline, b""):
        sys.stdout.write(prefix + raw.decode(errors="replace"))
        sys.stdout.flush()
    stream.close()


@dataclass
class Part:
    """One supervised process: how to start it and its restart bookkeeping."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    #: What the restart line says about where it comes back (Redis: its port and data).
    comes_back: str = ""
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None

    def start(self, now: float) -> None:
        """Start (or restart) the process."""
        self.proc = self.launch()
        self.started_at = now
        self.restart_at = None

    def check(self, now: float) -> bool:
        """Restart the part if it is due; notice it ended (one line). False: give up."""
        if self.proc is None:
            if self.restart_at is not None and now >= self.restart_at:
                self.start(now)
            return True
        code = self.proc.poll()
        if code is None:
            return True
        pid, ran = self.proc.pid, now - self.started_at
        self.proc = None
        self.failures = 1 if ran >= STABLE_AFTER else self.failures + 1
        if self.failures >= GIVE_UP_AFTER:
            say(
                f"{self.name} (pid {pid}) {describe_exit(code)} after {ran:.1f}s: it ended {self.failures} "
                f"times in a row within {STABLE_AFTER:.0f}s of starting; giving up, stopping everything"
            )
            return False
        delay = restart_delay(self.failures)
        self.restarts += 1
        self.restart_at = now + delay
        say(
            f"{self.name} (pid {pid}) {describe_exit(code)} after {ran:.1f}s; "
            f"restarting it{self.comes_back} in {delay:.1f}s (restart {self.restarts})"
        )
        return True


def up(settings: Settings, procfile: Path = Path("Procfile")) -> int:
    """Run the whole stack in the foreground until interrupted; returns an exit code."""
    var = settings.opsdeck_var_dir
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    entries = read_procfile(procfile)
    width = max(len(n) for n, _ in entries)
    become_subreaper()
    stopping = threading.Event()
    parts: list[Part] = []
    redis_server: EmbeddedRedis | None = None
    redis_part: Part | None = None

    def redis_pid() -> int | None:
        return redis_server.proc.pid if redis_server and redis_server.proc else None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            say("second stop signal: killing what is still running")
            _kill_all([p.proc for p in parts if p is not redis_part and p.proc], redis_pid())
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return_code = 0
    try:
        if settings.redis_url is None:
            redis_server = EmbeddedRedis(var / "redis")
            env["REDIS_URL"] = redis_server.start()
            redis_part = Part(
                "embedded Redis",
                redis_server.launch,
                f" on port {redis_server.port} with its AOF under {redis_server.data_dir}",
                proc=redis_server.proc,
                started_at=time.monotonic(),
            )
            parts.append(redis_part)
            assert redis_server.proc is not None
            say(
                f"embedded Redis on {env['REDIS_URL']} (pid {redis_server.proc.pid}, "
                f"AOF under {redis_server.data_dir})"
            )
        _ = settings.jwt_key  # create the development secret before the children race for it

        for i, (name, argv) in enumerate(entries):

            def launch(
                name: str = name, argv: list[str] = argv, color: str = COLORS[i % 4]
            ) -> subprocess.Popen[bytes]:
                proc = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                assert proc.stdout is not None
                threading.Thread(
                    target=_relay, args=(name, color, proc.stdout, width), name=f"relay-{name}", daemon=True
                ).start()
                return proc

            part = Part(name, launch)
            part.start(time.monotonic())
            parts.append(part)
        token = mint(settings.jwt_key, ["admin"], subject="dev-operator", ttl=12 * 3600)
        print(banner(settings, token), flush=True)
        while not stopping.wait(TICK):
            now = time.monotonic()
            if not all(part.check(now) for part in parts):
                return_code = 1
                break
            reap_orphans({p.proc.pid for p in parts if p.proc is not None})
    finally:
        say("stopping ...")
        apps = [p.proc for p in parts if p is not redis_part and p.proc is not None]
        stop_all(apps, settings.shutdown_timeout + 5)
        _wait_for_orphans(redis_pid(), settings.shutdown_timeout + 5)
        if redis_server is not None:
            redis_server.stop()
            say("embedded Redis stopped")
        say("stopped")
    return return_code


def _orphans(redis_pid: int | None) -> list[psutil.Process]:
    """Our children other than Redis: once the apps have exited, orphaned worker processes."""
    try:
        return [p for p in psutil.Process().children() if p.pid != redis_pid]
    except psutil.Error:
        return []


def _wait_for_orphans(redis_pid: int | None, timeout: float) -> None:
    """Wait (up to ``timeout`` seconds) for orphans still finishing their work, then kill them;
    they are ours to reap (subreaper)."""
    left = _orphans(redis_pid)
    if not left:
        return
    say(f"waiting up to {timeout:.0f}s for {len(left)} process(es) still finishing their work")
    _, alive = psutil.wait_procs(left, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    if alive:
        say(f"killed {len(alive)} process(es) still running after {timeout:.0f}s")


def _kill_all(procs: list[subprocess.Popen[bytes]], redis_pid: int | None) -> None:
    """SIGKILL the apps and any orphan (a second Ctrl-C), never Redis."""
    pids = {p.pid for p in procs if p.returncode is None} | {p.pid for p in _orphans(redis_pid)}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def banner(settings: Settings, token: str) -> str:
    """What ``make up`` prints once everything is up: the URLs, how to log in, a token."""
    c_port, d_port = settings.coordinator_bind_port, settings.dashboard_port
    login = (
        "log in with your name and DASHBOARD_PASSWORD, or the token below"
        if settings.dashboard_password is not None
        else "log in with the token below"
    )
    return (
        f"\nopsdeck is up\n"
        f"  coordinator  http://{settings.coordinator_host}:{c_port}  (API /api/v1/tasks)\n"
        f"  dashboard    http://{settings.dashboard_host}:{d_port}   ({login})\n"
        f"  token        {token}\n"
        f"  more tokens  .venv/bin/opsdeck token --scope tasks:write --scope tasks:read\n"
        f"  stop         Ctrl-C\n"
    )
