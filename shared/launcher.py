"""``opsdeck up``: the development launcher.

Starts an embedded Redis under ``./var/redis`` when ``REDIS_URL`` is unset, then every process
of the ``Procfile`` (coordinator, worker agent, dashboard), prints the URLs and a login token,
relays their output with a name prefix, and on Ctrl-C or SIGTERM stops them all — Redis last —
leaving no process behind. If one process exits on its own, everything is stopped.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO

from shared.auth import mint
from shared.embedded_redis import EmbeddedRedis
from shared.procutil import spawn, stop_all
from shared.settings import Settings

COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m")
RESET = "\033[0m"


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


def up(settings: Settings, procfile: Path = Path("Procfile")) -> int:
    """Run the whole stack in the foreground until interrupted; returns an exit code."""
    var = settings.opsdeck_var_dir
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    redis_server: EmbeddedRedis | None = None
    if settings.redis_url is None:
        redis_server = EmbeddedRedis(var / "redis")
        env["REDIS_URL"] = redis_server.start()
        print(f"opsdeck: embedded Redis on {env['REDIS_URL']} (AOF under {var / 'redis'})", flush=True)
    _ = settings.jwt_key  # create the development secret before the children race for it
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    entries = read_procfile(procfile)
    width = max(len(n) for n, _ in entries)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for i, (name, argv) in enumerate(entries):
            proc = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            threading.Thread(
                target=_relay, args=(name, COLORS[i % 4], proc.stdout, width), daemon=True
            ).start()
            procs.append((name, proc))
        token = mint(settings.jwt_key, ["admin"], subject="dev-operator", ttl=12 * 3600)
        c_port, d_port = settings.coordinator_bind_port, settings.dashboard_port
        print(
            f"\nopsdeck is up\n"
            f"  coordinator  http://{settings.coordinator_host}:{c_port}  (API /api/v1/tasks)\n"
            f"  dashboard    http://{settings.dashboard_host}:{d_port}   (log in with the token below)\n"
            f"  token        {token}\n"
            f"  more tokens  .venv/bin/opsdeck token --scope tasks:write --scope tasks:read\n"
            f"  stop         Ctrl-C\n",
            flush=True,
        )
        while not stopping.wait(0.3):
            exited = [(n, p) for n, p in procs if p.poll() is not None]
            if exited:
                name, proc = exited[0]
                print(f"opsdeck: {name} exited with {proc.returncode}; stopping everything", flush=True)
                return_code = 1
                break
        else:
            return_code = 0
    finally:
        print("opsdeck: stopping ...", flush=True)
        stop_all([p for _, p in procs], settings.shutdown_timeout + 5)
        if redis_server is not None:
            redis_server.stop()
        print("opsdeck: stopped", flush=True)
    return return_code
