"""What the developer tools print to a person: the launcher's banner, the clients' errors."""

from __future__ import annotations

import subprocess
import sys

from shared.devtools.embedded_redis import free_port
from shared.devtools.launcher import banner
from shared.settings import Settings
from tests.conftest import ROOT, SECRET


def test_the_banner_says_how_to_log_in_with_and_without_a_password():
    token_only = banner(Settings(jwt_secret=SECRET), "tok")  # type: ignore[arg-type]
    assert "(log in with the token below)" in token_only and "tok" in token_only
    both = banner(Settings(jwt_secret=SECRET, dashboard_password="pw-long-enough"), "tok")  # type: ignore[arg-type]
    assert "log in with your name and DASHBOARD_PASSWORD, or the token below" in both
    assert "pw-long-enough" not in both


def test_a_client_command_without_a_coordinator_says_so_in_one_line(tmp_path):
    port = free_port()  # nothing listens there
    env = {"PATH": "/usr/bin:/bin", "JWT_SECRET": SECRET, "COORDINATOR_PORT": str(port),
           "OPSDECK_VAR_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}  # fmt: skip
    for args in (["deploy", "web"], ["bandit", "evaluate"]):
        done = subprocess.run(
            [sys.executable, "-m", "shared.devtools.cli", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert f"cannot reach the coordinator at http://127.0.0.1:{port}" in done.stderr
