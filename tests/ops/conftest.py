"""Fixtures for the operations files: promtool from Debian's ``prometheus`` package."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import psutil
import pytest

#: Processes the ``prometheus`` package may start from its postinst (no systemd in containers).
SERVICE_NAMES = {"prometheus", "prometheus-node-exporter"}


def _service_pids() -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in SERVICE_NAMES:
            pids.add(proc.pid)
    return pids


def _apt_install() -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:  # stale or missing package lists on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600, check=False)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    return done


def _end(pid: int) -> None:
    """TERM one process we caused to start, KILL it if it lingers."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def promtool() -> Iterator[str]:
    """Path of ``promtool``; installs Debian's ``prometheus`` package when root and it is missing.

    The package's postinst may start a Prometheus server where no init policy forbids it; the
    processes that appear during the install are ended (by pid) so nothing keeps listening on 9090.
    """
    found = shutil.which("promtool")
    if found:
        yield found
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "promtool is not on PATH and cannot be installed here (needs root and apt-get): "
            "install Debian's 'prometheus' package"
        )
    before = _service_pids()
    done = _apt_install()
    for pid in _service_pids() - before:
        _end(pid)
    found = shutil.which("promtool")
    if done.returncode != 0 or not found:
        pytest.fail(f"apt-get install prometheus failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    yield found
