"""``opsdeck worker stop --all | WORKER...``: the emergency stop of worker agents through the control
channel (``POST /api/v1/workers/stop``, scope ``admin``): each agent gets a ``stop`` command (its
desired state becomes ``stopped``, kept across restarts; ``start`` from the dashboard undoes it)
recorded in the audit log under the token's subject.

The coordinator and the token as for ``opsdeck deploy`` (OPSDECK_URL; OPSDECK_TOKEN, or one minted
from JWT_SECRET, here with the ``admin`` scope).
"""

from __future__ import annotations

import sys
from typing import TextIO

from shared.devtools.deploy_client import call, coordinator, error_line
from shared.settings import Settings


def stop(settings: Settings, workers: list[str], every: bool, out: TextIO | None = None) -> int:
    """Send the stop command; one line per worker; exit 1 when the coordinator refused."""
    out = out or sys.stdout
    base, token = coordinator(settings, scope="admin")
    body = {"all": True} if every else {"workers": workers}
    status, reply = call(base, token, "POST", "/api/v1/workers/stop", body)
    if status != 202:
        print(error_line("opsdeck worker stop", status, reply), file=sys.stderr)
        return 1
    for command in reply["commands"]:
        again = "" if command["created"] else " (already sent)"
        print(f"stop sent to {command['worker']}: command {command['command_id']}{again}", file=out)
    return 0
