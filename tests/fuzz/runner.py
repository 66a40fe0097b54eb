"""Run the schemathesis CLI against a live server's OpenAPI document, the way both fuzz tests do."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_schemathesis(
    schema_url: str,
    tmp_path: Path,
    headers: list[str],
    *,
    config: Path | None = None,
    budget: float = 600,
    exclude_paths: tuple[str, ...] = (),
) -> str:
    """``schemathesis run`` with every check but ``positive_data_acceptance``, 10 examples per
    operation and a fixed seed; fails the test on any finding, or when the run takes over
    ``budget`` seconds (``exclude_paths``: operations left out). Returns the CLI's output."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency"
    options = ["--config-file", str(config)] if config else []
    excluded = [arg for path in exclude_paths for arg in ("--exclude-path", path)]
    started = time.monotonic()
    run = subprocess.run(
        [
            cli, *options, "run", schema_url, *(arg for h in headers for arg in ("-H", h)),
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "10", "--seed", "1", "--request-timeout", "15", "--max-failures", "20",
            "--report", "junit", "--report-dir", str(tmp_path / "reports"), *excluded,
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    last = run.stdout.splitlines()[-1]
    assert "failures" not in last or " 0 failures" in last, last
    assert time.monotonic() - started < budget, f"schemathesis took over {budget} s"
    return run.stdout
