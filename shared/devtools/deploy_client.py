"""``opsdeck deploy SERVICE [--version V] [--watch]``: start a deploy over the coordinator's HTTP API;
``opsdeck deploy --confirm ID [--watch]``: confirm a rollout that waits in ``awaiting_confirmation``
or one paused by an inconclusive analysis (the step is accepted) (``POST /api/v1/deploys/{id}/promote``;
refused, exit 1, when the deploy is not waiting);
``opsdeck deploy rollback SERVICE [--to VERSION | --tag TAG | --provider-deploy ID] [--watch]``: one
command per rollback method (``POST /api/v1/services/{service}/rollback``).

The coordinator is ``OPSDECK_URL`` (default ``http://COORDINATOR_HOST:COORDINATOR_PORT``); the
token is ``OPSDECK_TOKEN``, or one minted with the ``deploy`` scope from ``JWT_SECRET`` (the
``opsdeck token`` logic) when that is set.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from shared.auth import mint
from shared.settings import Settings

#: Seconds between polls of ``--watch``.
WATCH_INTERVAL = 1.0
#: Statuses after which ``--watch`` stops.
DONE = frozenset({"succeeded", "failed", "rolled_back", "canceled"})


def call(base: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One JSON request to the coordinator: (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the operator's coordinator
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, OSError) as exc:  # refused, unresolvable, timed out: one line
        reason = getattr(exc, "reason", exc)
        raise SystemExit(
            f"opsdeck: cannot reach the coordinator at {base} ({reason}): is it running (`make up`)?"
            " Set OPSDECK_URL to use another one"
        ) from None


def error_line(command: str, status: int, body: Any) -> str:
    """``command: <status> <message> (<field>: <why>; ...)`` from the API's JSON error shape."""
    error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
    fields = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in error.get("fields", []))
    return f"{command}: {status} {error.get('message', body)}{f' ({fields})' if fields else ''}"


def progress(record: dict[str, Any]) -> str:
    """One line: status, a bar of the canary steps, the current weight and the last gate."""
    steps, step, status = record.get("steps") or [100], record.get("step") or 0, record["status"]
    done = len(record.get("gates") or [])
    bar = " ".join(f"[{'x' if i < done else '>' if i == step and status not in DONE else ' '}]{w}%"
                   for i, w in enumerate(steps))  # fmt: skip
    version = record.get("version") or "(latest)"
    line = f"{record['service']} {version}  {status:<11} {bar}  weight {record.get('weight') or 0}%"
    if record.get("phase"):  # a blue-green rollout: preview, analysis, switched, retired, ...
        line += f"  phase {record['phase']}"
    if record.get("error"):
        line += f"  — {record['error']}"
    return line


def coordinator(settings: Settings, scope: str = "deploy") -> tuple[str, str]:
    """The coordinator's base URL and a bearer token with ``scope``."""
    base = (
        os.environ.get("OPSDECK_URL")
        or f"http://{settings.coordinator_host}:{settings.coordinator_bind_port}"
    )
    token = os.environ.get("OPSDECK_TOKEN") or mint(settings.jwt_key, [scope], subject="cli", ttl=3600)
    return base.rstrip("/"), token


def run(settings: Settings, service: str, version: str | None, watch: bool, out: TextIO = sys.stdout) -> int:
    """Start the deploy, optionally follow it; exit code 0 on success (or when not watching)."""
    base, token = coordinator(settings)
    status, body = call(base, token, "POST", "/api/v1/deploys", {"service": service, "version": version})
    if status != 202:
        print(error_line("opsdeck deploy", status, body), file=sys.stderr)
        return 1
    print(f"deploy {body['id']} queued: {base}{body['status_url']}", file=out)
    return follow(base, token, body["status_url"], out) if watch else 0


def confirm(settings: Settings, deploy_id: str, watch: bool, out: TextIO = sys.stdout) -> int:
    """Confirm a rollout awaiting confirmation (its promote action); optionally follow it."""
    base, token = coordinator(settings)
    url = f"/api/v1/deploys/{urllib.parse.quote(deploy_id, safe='')}"
    status, record = call(base, token, "GET", url)
    if status != 200:
        print(error_line("opsdeck deploy --confirm", status, record), file=sys.stderr)
        return 1
    judged = record["status"] == "paused" and record.get("inconclusive_step") is not None
    if record["status"] != "awaiting_confirmation" and not judged:
        print(f"opsdeck deploy --confirm: deploy {deploy_id} is {record['status']}, not awaiting "
              "confirmation (nothing confirmed)", file=sys.stderr)  # fmt: skip
        return 1
    step, steps = (
        record.get("inconclusive_step" if judged else "confirm_step") or 0,
        record.get("steps") or [100],
    )
    what = "promotion" if len(steps) == 1 else f"step {step} ({steps[step]}%)"  # the API's numbering
    status, body = call(base, token, "POST", f"{url}/promote")
    if status != 202:
        print(error_line("opsdeck deploy --confirm", status, body), file=sys.stderr)
        return 1
    if judged:  # an inconclusive analysis: the step counts as passed
        nxt = "promotion" if step == len(steps) - 1 else f"step {step + 1} ({steps[step + 1]}%)"
        print(
            f"deploy {deploy_id} accepted: {record['service']}'s {what} counts as passed, on to {nxt}",
            file=out,
        )
    else:
        print(f"deploy {deploy_id} confirmed: {record['service']} goes on to {what}", file=out)
    return follow(base, token, url, out) if watch else 0


def rollback(
    settings: Settings,
    service: str,
    target: dict[str, str | None],
    watch: bool,
    out: TextIO | None = None,
) -> int:
    """Roll ``service`` back (``target``: ``to``, ``tag`` or ``provider_deploy``; none: the stable
    pointer); optionally follow the deploy it acted on or recorded."""
    out = out or sys.stdout
    base, token = coordinator(settings)
    body = {k: v for k, v in target.items() if v is not None}
    path = f"/api/v1/services/{urllib.parse.quote(service, safe='')}/rollback"
    status, reply = call(base, token, "POST", path, body)
    if status != 202:
        print(error_line("opsdeck deploy rollback", status, reply), file=sys.stderr)
        return 1
    deploy, method = reply["deploy"], reply["method"]
    if method == "stable":
        version = deploy.get("version") or "(latest)"
        where = "the version stable before it" if deploy["status"] == "succeeded" else "the stable version"
        what = f"deploy {deploy['id']} ({version}) goes back to {where}"
    else:
        to = deploy.get("version") or deploy.get("rollback_provider_id")
        what = f"rollback deploy {deploy['id']} queued: {service} back to {to} (from {method})"
    print(f"{what}: {base}{reply['status_url']}", file=out)
    return follow(base, token, reply["status_url"], out) if watch else 0


def follow(base: str, token: str, status_url: str, out: TextIO) -> int:
    """One line per change until the deploy ends (0 on success); how to confirm when it waits."""
    last, hinted, told = "", False, ""
    while True:
        status, record = call(base, token, "GET", status_url)
        if status == 200:
            line = progress(record)
            if line != last:
                print(line, file=out, flush=True)
                last = line
            if record["status"] in DONE:
                return 0 if record["status"] == "succeeded" else 1
            if record["status"] == "awaiting_confirmation" and not hinted:
                print(f"  to go on: opsdeck deploy --confirm {record['id']}", file=out, flush=True)
                hinted = True
            reason = record.get("paused_reason") if record["status"] == "paused" else None
            if reason and reason != told:  # an inconclusive analysis waits for a human
                print(f"  {reason}\n  to accept the step: opsdeck deploy --confirm {record['id']}; to stop: "
                      "abort it on the dashboard (or POST .../abort)", file=out, flush=True)  # fmt: skip
                told = reason
        time.sleep(WATCH_INTERVAL)
