"""Fixtures for the operations files: promtool and amtool from Debian's packages.

``promtool`` comes with the ``prometheus`` package, ``amtool`` with ``prometheus-alertmanager``;
either is installed with apt-get when it is missing and the tests run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import psutil
import pytest

#: Processes the packages may start from their postinst (no systemd in containers).
SERVICE_NAMES = {"prometheus", "prometheus-node-exporter", "prometheus-alertmanager"}


def _service_pids() -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        # /proc/<pid>/comm keeps 15 characters: "prometheus-aler" is the Alertmanager
        if name in SERVICE_NAMES or any(len(name) == 15 and s.startswith(name) for s in SERVICE_NAMES):
            pids.add(proc.pid)
    return pids


def _apt_install(package: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
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


def debian_tool(tool: str, package: str) -> str:
    """Path of ``tool``; installs Debian's ``package`` when root and the tool is missing.

    The package's postinst may start a server where no init policy forbids it; the processes that
    appear during the install are ended (by pid) so nothing keeps listening (9090, 9093).
    Skips the test when the tool is missing and cannot be installed.
    """
    found = shutil.which(tool)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"{tool} is not on PATH and cannot be installed here (needs root and apt-get): "
            f"install Debian's {package!r} package"
        )
    before = _service_pids()
    done = _apt_install(package)
    for pid in _service_pids() - before:
        _end(pid)
    found = shutil.which(tool)
    if done.returncode != 0 or not found:
        pytest.fail(f"apt-get install {package} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of ``promtool`` (Debian's ``prometheus`` package, installed when missing)."""
    return debian_tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    """Path of ``amtool`` (Debian's ``prometheus-alertmanager`` package, installed when missing)."""
    return debian_tool("amtool", "prometheus-alertmanager")
