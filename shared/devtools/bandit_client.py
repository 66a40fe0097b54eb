"""``opsdeck bandit evaluate [--since S] [--alpha A …] [--limit N] [--json]``: the coordinator's
offline evaluation of the coaching bandit (``GET /api/v1/bandit/evaluation``), as a table.

The coordinator computes it (the estimators live with it: docs/coaching.md#offline-evaluation);
this command is an HTTP client like ``opsdeck deploy``: ``OPSDECK_URL`` (default
``http://COORDINATOR_HOST:COORDINATOR_PORT``), ``OPSDECK_TOKEN`` or a ``tasks:read`` token minted
from ``JWT_SECRET``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from typing import Any, TextIO

from shared.auth import mint
from shared.devtools.deploy_client import call, error_line
from shared.settings import Settings

SEGMENTS = ("all", "warmup", "learned")


def _cell(segment: dict[str, Any]) -> str:
    """One segment of one policy: DR (and IPS / SNIPS) with intervals, or why there is none."""
    if not segment["turns"]:
        return "no turns"
    if not segment["estimable"]:
        low, high = segment["bounds"]
        return f"no estimate (support {segment['support']:.0%}; bounds {low:.3f}-{high:.3f})"
    parts = []
    for name in ("ips", "snips", "dr"):
        est = segment[name]
        if est is not None:
            low, high = est["ci"]
            parts.append(f"{name} {est['value']:.3f} [{low:.3f}, {high:.3f}]")
    return "; ".join(parts) + f"; ess {segment['ess']:.0f}, match {segment['match_rate']:.0%}"


def render(report: dict[str, Any]) -> str:
    """The report as text: what was read, then one block per policy and segment."""
    seg = report.get("segments") or {}
    lines = [
        f"turns read {report['turns_read']} (limit {report['limit']}"
        f"{', truncated: older turns not read' if report['truncated'] else ''}"
        f"{', since ' + report['since'] if report.get('since') else ''}), evaluated "
        f"{report['turns_evaluated']} (warm-up {seg.get('warmup', 0)}, learned {seg.get('learned', 0)}); "
        f"configured alpha {report['configured_alpha']:g}",
    ]
    if report.get("replay_agreement") is not None:
        lines.append(
            f"replay agreement with the logged decisions (learned turns): {report['replay_agreement']:.1%}"
        )
    if report.get("note"):
        lines.append(report["note"])
    for policy in report["policies"]:
        lines.append(f"\n{policy['policy']}")
        for name in SEGMENTS:
            lines.append(f"  {name:<8} {_cell(policy['segments'][name])}")
    return "\n".join(lines)


def run(
    settings: Settings,
    *,
    since: str | None = None,
    alphas: list[float] | None = None,
    limit: int | None = None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    base: str | None = None,
    token: str | None = None,
) -> int:
    """Fetch and print the evaluation; exit code 0, or 1 with the coordinator's error."""
    base = (
        base
        or os.environ.get("OPSDECK_URL")
        or f"http://{settings.coordinator_host}:{settings.coordinator_bind_port}"
    )
    token = (
        token
        or os.environ.get("OPSDECK_TOKEN")
        or mint(settings.jwt_key, ["tasks:read"], subject="cli", ttl=300)
    )
    query: dict[str, str] = {}
    if since:
        query["since"] = since
    if alphas:
        query["alpha"] = ",".join(f"{a:g}" for a in alphas)
    if limit is not None:
        query["limit"] = str(limit)
    path = "/api/v1/bandit/evaluation" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    status, body = call(base.rstrip("/"), token, "GET", path)
    if status != 200:
        print(error_line("opsdeck bandit evaluate", status, body), file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2) if as_json else render(body), file=out)
    return 0
