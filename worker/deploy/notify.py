"""Deploy notifications: one message per deploy event to the team, never in the rollout's way.

Events come from :meth:`Notifier.transition`, the hook ``on_transition`` that
:meth:`worker.deploy.machine.Rollout._transition` calls — the one function every status change of
the state machine goes through (and :class:`worker.deploy.restore.Restore`'s) — so any status
(the analysis runs' inconclusive ``paused`` with its ``paused_reason``) notifies without code here:
``started`` (step 0 runs), ``canary:<n>`` (the steps before ``n`` passed, going on to ``n``),
``switched:0`` (a blue-green rollout moved all traffic, the old version kept for the scale-down
delay), ``<status>:<n>`` for a rollout that stops to wait (``paused``, ``awaiting_confirmation``, any new
one), and the endings (``succeeded``, ``rolled_back``, ``failed``, ``canceled``). The hook only
sends a ``deploy_notify`` message (one Redis call, no HTTP): delivery runs in that actor, one
attempt per message with a short timeout, retried by Dramatiq with exponential backoff, at P3 on
the deploy queues (after every step and operator action), so a slow or dead receiver holds no
step.

Channels: a Slack-compatible incoming webhook (``{"text", "blocks"}``; the URL is read from the
variable DEPLOY_NOTIFY_WEBHOOK_ENV names, so it is never in a file or a log) and a generic JSON
webhook (DEPLOY_NOTIFY_GENERIC_ENV; signed like the webhook provider with the secret of
DEPLOY_NOTIFY_SECRET_ENV, ``Idempotency-Key: <deploy_id>:<event>``). Each message links the
deploy's page on the dashboard (DASHBOARD_URL).

Exactly one message per event: the first ``deploy_notify`` message of an event takes ownership of
it in Redis (HSETNX, :meth:`Keys.deploy_notified`); a second message for the same event (the hook
ran again after a redelivered step) finds another owner and does nothing, while a retry or
redelivery of the owner (same message id) goes on, skipping the channels already marked ``sent``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import redis

from shared.logging import get_logger
from shared.settings import Settings
from worker.deploy.errors import DeployError, ProviderRejected
from worker.deploy.http import RetryPolicy, request
from worker.deploy.state import now_ms
from worker.deploy.webhook import SIGNATURE_HEADER, sign

log = get_logger(__name__)

#: Seconds one delivery attempt may take (a hanging receiver holds one worker thread this long).
DELIVERY_TIMEOUT = 5.0
#: How long the per-deploy ownership/sent marks are kept (seconds).
NOTIFIED_TTL = 14 * 24 * 3600
#: Deploys whose last event a process remembers.
LAST_KEPT = 1000
#: Statuses that are steps of the way, not news (``in_progress`` at step 0 is ``started``).
QUIET = frozenset({"queued", "in_progress", "promoting"})
#: Statuses after which a deploy ends: their event carries no step.
ENDINGS = frozenset({"succeeded", "failed", "rolled_back", "canceled"})
#: Record fields a stop's reason may be in, first found wins (analysis runs may add their own).
REASON_FIELDS = ("pause_reason", "paused_reason", "reason", "error")

#: ``send(payload, delay_seconds)`` enqueues one ``deploy_notify`` message.
Send = Callable[[dict[str, Any], float], None]


class NotifyFailed(DeployError):
    """A channel did not take the message (retried by Dramatiq with backoff)."""


def event_for(status: str, step: int | None) -> str | None:
    """The event a change to ``status`` (at ``step``) is, or None when it is not news."""
    if status == "in_progress":
        return "started" if step == 0 else None
    if status in QUIET:
        return None
    if status in ENDINGS:
        return status
    if status == "canary" and not step:  # step 0's analysis run (analysis_steps.py): nothing passed yet
        return None
    return f"{status}:{step or 0}"


def channels(settings: Settings) -> list[tuple[str, str]]:
    """``[(channel, url)]`` of the configured channels whose variable holds a URL."""
    out = []
    for name, env in (("slack", settings.deploy_notify_webhook_env),
                      ("generic", settings.deploy_notify_generic_env)):  # fmt: skip
        url = os.environ.get(env or "", "") if env else ""
        if url:
            out.append((name, url))
    return out


class Notifier:
    """Turns status changes into ``deploy_notify`` messages and delivers them."""

    def __init__(self, client: redis.Redis, settings: Settings, send: Send) -> None:
        self.client = client
        self.settings = settings
        self.keys = settings.keys
        self.send = send
        #: The last event this process sent per deploy (a status set twice in a row sends once).
        self._last: dict[str, str] = {}

    # -- the hook (inside the rollout: cheap, never raises) ---------------------------------------
    def transition(self, deploy_id: str, fields: dict[str, Any]) -> None:
        """Called by ``_transition`` with a status: send the event's message if it is news."""
        status = fields["status"]
        status = str(getattr(status, "value", status))
        if fields.get("phase") == "switched":  # a blue-green switch (status promoting): news
            status = "switched"
        if (status in QUIET and status != "in_progress") or not channels(self.settings):
            return
        try:
            step = fields.get("step")
            if step is None and status not in ENDINGS:
                raw = self.client.hget(self.keys.deploy(deploy_id), "step")
                step = int(raw) if raw else 0
            event = event_for(status, step)
            if event is None or self._last.get(deploy_id) == event:
                return
            if self.client.hexists(self.keys.deploy_notified(deploy_id), f"{event}|done"):
                return  # told already (the hook runs again after a redelivery)
            self.send({"deploy_id": deploy_id, "event": event}, 0.0)
            self._last[deploy_id] = event
            if len(self._last) > LAST_KEPT:
                del self._last[next(iter(self._last))]
        except Exception as exc:  # a notification never stops a rollout
            log.warning("deploy notification not sent", deploy_id=deploy_id, status=status,
                        error=type(exc).__name__)  # fmt: skip

    # -- delivery (the deploy_notify actor) ---------------------------------------------------------
    def deliver(self, deploy_id: str, event: str, message_id: str) -> str:
        """Deliver one event to every channel once; ``sent``, ``duplicate`` or ``nothing``.

        NotifyFailed when a channel failed (the message is retried; channels done stay done)."""
        key = self.keys.deploy_notified(deploy_id)
        with self.client.pipeline() as pipe:
            pipe.hsetnx(key, event, message_id)
            pipe.hget(key, event)
            pipe.expire(key, NOTIFIED_TTL)
            _, owner, _ = pipe.execute()
        if owner is None or owner.decode() != message_id:
            return "duplicate"
        record = self.client.hgetall(self.keys.deploy(deploy_id))
        targets = channels(self.settings)
        if not record or not targets:
            return "nothing"
        from shared.deploy.models import decode_deploy

        rec = decode_deploy(record, iso_times=False)
        failed = []
        for name, url in targets:
            if self.client.hget(key, f"{event}|{name}") == b"sent":
                continue
            try:
                self._post(name, url, rec, event)
            except ProviderRejected as exc:  # 4xx: the receiver refuses it; retrying will not help
                log.warning("deploy notification refused", channel=name, deploy_id=deploy_id,
                            notify_event=event, error=str(exc))  # fmt: skip
            except DeployError as exc:
                failed.append(f"{name}: {exc}")
                continue
            self.client.hset(key, f"{event}|{name}", "sent")
        if failed:
            raise NotifyFailed("; ".join(failed))
        self.client.hset(key, f"{event}|done", "1")
        return "sent"

    def _post(self, channel: str, url: str, rec: dict[str, Any], event: str) -> None:
        policy = RetryPolicy(retries=0, timeout=DELIVERY_TIMEOUT)
        link = f"{self.settings.dashboard_base_url}/deploys/{rec['id']}"
        if channel == "slack":
            request(
                "POST", url, policy=policy, json_body=slack_payload(rec, event, link), what="Slack notify"
            )
            return
        doc = generic_payload(rec, event, link)
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = {"Idempotency-Key": f"{rec['id']}:{event}"}
        secret_env = self.settings.deploy_notify_secret_env
        if secret_env and os.environ.get(secret_env):
            headers[SIGNATURE_HEADER] = sign(os.environ[secret_env], body)
        request("POST", url, policy=policy, headers=headers, data=body, what="webhook notify")


def reason(rec: dict[str, Any]) -> str | None:
    """Why the deploy stopped or ended, when the record says."""
    for name in REASON_FIELDS:
        if rec.get(name):
            return str(rec[name])
    return None


def summary(rec: dict[str, Any], event: str) -> str:
    """One sentence about ``event`` of the deploy ``rec`` (plain text)."""
    name, _, n = event.partition(":")
    steps = rec.get("steps") or [100]
    step = int(n) if n else int(rec.get("step") or 0)
    weight = steps[min(step, len(steps) - 1)]
    who = f"{rec['service']} {rec.get('version') or '(latest)'}"
    why = reason(rec)
    if rec.get("kind") == "rollback" and name in ("started", "succeeded"):
        return f"{who}: rollback {'started' if name == 'started' else 'done, now stable'}"
    texts = {
        "started": f"{who}: deploy started ({' → '.join(f'{s}%' for s in steps)})"
        if rec.get("strategy") != "blue_green"
        else f"{who}: blue-green deploy started (a preview beside the stable version)",
        "switched": f"{who}: all traffic switched to the new version; the old one is kept "
        f"{((rec.get('retire_at') or 0) - (rec.get('switched_at') or 0)) / 1000:g}s for an instant rollback",
        "canary": f"{who}: {steps[step - 1] if step else 0}% passed its gates, going on to {weight}%",
        "paused": f"{who}: paused at step {step} ({weight}%)" + (f": {why}" if why else ""),
        "awaiting_confirmation": f"{who}: waiting for confirmation before "
        + ("promotion" if len(steps) == 1 else f"step {step} ({weight}%)")
        + f" — promote it on the dashboard or `opsdeck deploy --confirm {rec['id']}`",
        "succeeded": f"{who}: live at 100%, now the stable version",
        "rolled_back": f"{who}: rolled back" + (f": {why}" if why else ""),
        "failed": f"{who}: failed" + (f": {why}" if why else ""),
        "canceled": f"{who}: canceled" + (f": {why}" if why else ""),
    }
    return texts.get(name) or f"{who}: {name.replace('_', ' ')} at step {step} ({weight}%)" + (
        f": {why}" if why else ""
    )


def slack_payload(rec: dict[str, Any], event: str, link: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the fallback) and ``blocks``."""
    text = summary(rec, event)
    return {
        "text": f"{text} <{link}|open on the dashboard>",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"<{link}|deploy {rec['id'][:8]}> · {event} · {rec.get('provider')}"},  # noqa: E501
            ]},
        ],
    }  # fmt: skip


def generic_payload(rec: dict[str, Any], event: str, link: str) -> dict[str, Any]:
    """The generic webhook's event document."""
    return {
        "deploy_id": rec["id"], "service": rec["service"], "version": rec.get("version"), "event": event,
        "status": rec.get("status"), "step": rec.get("step"), "weight": rec.get("weight"),
        "steps": rec.get("steps"), "reason": reason(rec), "text": summary(rec, event), "url": link,
        "at": now_ms(),
    }  # fmt: skip
