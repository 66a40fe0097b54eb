"""Deploy pages: the history with the configured services, and one rollout's live progress.

Both are server-rendered from :mod:`dashboard.api_deploys`; ``static/app.js`` polls the JSON API
every 2 s to refresh the history table and a rollout's status, weight, steps and gates.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from dashboard.api_deploys import DeployQuery, checked_deploy_id, deploy_rows, deploy_store, service_rows
from dashboard.pages import render

#: Statuses in which each action's button is shown (the store stays the judge: 409 otherwise).
ACTION_WHEN = {
    "promote": ("in_progress", "canary", "paused", "awaiting_confirmation"),
    "pause": ("queued", "in_progress", "canary"),
    "resume": ("paused",),
    "abort": ("queued", "in_progress", "canary", "paused", "awaiting_confirmation", "promoting"),
    "rollback": ("in_progress", "canary", "paused", "awaiting_confirmation", "promoting", "succeeded"),
}
#: Class of each measurement verdict's cell (the deploy page's measurements table).
VERDICT_CLASS = {
    "success": "st-succeeded",
    "failure": "st-failed",
    "inconclusive": "st-paused",
    "error": "st-paused",
}
#: Confirmation text of each action's button.
ACTION_CONFIRM = {
    "promote": "Promote: a rollout awaiting confirmation goes on to the step it waits before, one paused by "
    "an inconclusive analysis accepts the step and goes on; otherwise skip the remaining canary steps and "
    "go to 100 % now (gates still run)?",
    "pause": "Hold the rollout after the current step?",
    "resume": "Continue the rollout?",
    "abort": "Abort the rollout and return all traffic to the stable version?",
    "rollback": "Roll this deploy back to the previous stable version?",
}


#: What each phase of a blue-green rollout means (``{preview_url}``/``{retire_at}`` filled in);
#: static/app.js has the same texts for the live refresh.
PHASE_TEXT = {
    "preview": "Deploying the new version beside the stable one: the preview takes no traffic.",
    "analysis": "Pre-promotion analysis against the preview at {preview_url}: no traffic on it yet.",
    "switching": "Switching all traffic to the new version.",
    "switched": "All traffic is on the new version; the old one is kept until {retire_at} UTC: "
    "rollback switches back at once.",
    "retired": "The old version is retired; the new one is stable.",
    "discarded": "The preview was discarded: traffic never moved from the stable version.",
    "switched_back": "Switched back: all traffic is on the old version again.",
}


def phase_text(d: dict[str, Any]) -> str:
    """The sentence for a blue-green deploy's phase (the deploy page)."""
    text = PHASE_TEXT.get(d.get("phase") or "", "Waiting to start: a preview, its analysis, then one switch.")
    retire = str(d.get("retire_at") or "-").replace("T", " ").removesuffix("Z")
    return text.format(preview_url=d.get("preview_url") or "(unknown)", retire_at=retire)


async def deploys(request: web.Request) -> web.Response:
    """``/deploys?service=&limit=``: services (stable and active deploy) and the deploy history."""
    params = {k: v for k, v in request.query.items() if v}
    try:
        query, error = DeployQuery.model_validate(params), ""
    except ValidationError as exc:
        query, error = DeployQuery(), "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
    context = {
        "items": await deploy_rows(request, query.service, query.limit),
        "services": await service_rows(request),
        "service": query.service or "",
        "limit": query.limit,
        "error": error,
    }
    return render(request, "deploys.html", "deploys", context)


async def deploy(request: web.Request) -> web.Response:
    """``/deploys/{id}``: one rollout — canary steps, weight, gates, measurements, error and actions."""
    record = await deploy_store(request).get(checked_deploy_id(request))
    context = {"d": record, "when": ACTION_WHEN, "confirm": ACTION_CONFIRM, "verdict_class": VERDICT_CLASS,
               "phase_text": phase_text}  # fmt: skip
    return render(request, "deploy.html", "deploy", context)
