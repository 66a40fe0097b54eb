"""Optional annotated git tag ``<service>-stable-<version>-<YYYYMMDD>`` when a version becomes stable."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from shared.logging import get_logger

log = get_logger(__name__)

#: Characters git refuses (or that would read badly) in a tag name become "-".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def tag_name(service: str, version: str, when: datetime | None = None) -> str:
    """The tag for ``version`` of ``service`` on ``when`` (default today, UTC)."""
    day = (when or datetime.now(UTC)).strftime("%Y%m%d")
    safe = _UNSAFE.sub("-", version).strip("-.") or "unknown"
    return f"{service}-stable-{safe}-{day}"


def create_tag(repo: Path, service: str, version: str, message: str) -> str | None:
    """Create the annotated tag in ``repo``; the tag name, or None (logged) when git refuses."""
    name = tag_name(service, version)
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "tag", "-a", name, "-m", message],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("git tag failed", tag=name, error=str(exc))
        return None
    if done.returncode != 0 and "already exists" not in done.stderr:
        log.warning("git tag failed", tag=name, error=done.stderr.strip()[:300])
        return None
    return name
