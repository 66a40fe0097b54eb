"""``GET /health/llm?model=all|fast|balanced|creative``: per-model LLM health (public, like /health).

Reads the tier records the workers write after every call and every idle-tier probe
(``Keys.llm_tiers``: breaker state, last outcome, last success and failure, p50/p95 latency of
the tier's last ``LLM_HEALTH_WINDOW`` calls; worker.coach.llm.RedisTierReport) in one ``HMGET``
and judges each asked tier by :func:`shared.llm_tiers.tier_health`: **healthy** when its last
report says the breaker is closed, the call succeeded, and the report is not stale (at most
``2 × LLM_PROBE_INTERVAL + LLM_TIMEOUT`` old).

* 200 ``{"status": "healthy", …}`` when every asked tier is healthy;
* 503 ``{"status": "unhealthy", "unhealthy": [tiers], …}`` naming the others (each with ``reason``);
* 404 (JSON error naming ``query.model``) for a tier that does not exist or has no model;
* 200 ``{"status": "disabled"}`` when ``LLM_BASE_URL`` is unset (the built-in engine answers);
* 503 (``unavailable``, through the edge) when Redis cannot be read: nobody can tell.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from coordinator.appkeys import REDIS, SETTINGS
from coordinator.http import json_response, parse_query, redis_deadline
from shared.errors import NotFound
from shared.llm_tiers import TIERS, tier_health
from shared.store import iso

#: Fields of a tier record passed through as the worker wrote them.
_PASSED = ("breaker", "outcome", "detail", "worker", "probe", "last_error", "p50_ms", "p95_ms", "calls")


class LLMHealthQuery(BaseModel):
    """Query of ``GET /health/llm``."""

    model_config = ConfigDict(extra="forbid")

    #: ``all`` (every tier with a model) or one tier: ``fast``, ``balanced``, ``creative``.
    model: str = "all"


class TierHealth(BaseModel):
    """One tier's health as its last report shows it."""

    model_config = ConfigDict(extra="allow")

    healthy: bool
    model: str
    reason: str | None = None


class LLMHealthReport(BaseModel):
    """The answer of ``GET /health/llm``."""

    status: Literal["healthy", "unhealthy", "disabled"]
    model: str | None = None
    unhealthy: list[str] = []
    tiers: dict[str, TierHealth] = {}


def _asked(model: str, configured: dict[str, str]) -> list[str]:
    """The tiers ``model`` names; NotFound (404 naming ``query.model``) for another name."""
    if model == "all":
        return [t for t in TIERS if t in configured]
    if model in configured:
        return [model]
    known = f"tier {model!r} has no model (LLM_MODEL_{model.upper()} is unset)" if model in TIERS else None
    message = known or f"unknown model tier {model!r} (expected all, {', '.join(TIERS)})"
    raise NotFound(message, fields=[{"loc": ["query", "model"], "msg": message}])


def _record(raw: Any) -> dict[str, Any] | None:
    """A tier record as the worker wrote it; None when missing, ``{}`` when unreadable."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _judge(model: str, record: dict[str, Any] | None, now_ms: int, stale: float | None) -> dict[str, Any]:
    """One tier's answer: healthy or not (and why), and its record's fields (times as ISO)."""
    reason = tier_health(record, now_ms, stale)
    found: dict[str, Any] = {"healthy": reason is None, "model": model, "reason": reason}
    if record:
        found.update({name: record.get(name) for name in _PASSED})
        for name in ("at", "last_success", "last_failure"):
            value = record.get(name)
            found[name] = iso(int(value)) if isinstance(value, int | float) else None
        if isinstance(record.get("at"), int | float):
            found["age_s"] = round(max(0.0, (now_ms - record["at"]) / 1000), 3)
    return found


async def llm_health(request: web.Request) -> web.Response:
    """Per-tier LLM health (module docstring): 200 healthy, 503 naming the unhealthy tiers."""
    query = parse_query(request, LLMHealthQuery)
    settings = request.app[SETTINGS]
    if not settings.llm_base_url:
        return json_response({"status": "disabled"})
    configured = {t: m for t, m in settings.llm_models.items() if m}
    asked = _asked(query.model, configured)
    async with redis_deadline(request):
        raw = await request.app[REDIS].hmget(settings.keys.llm_tiers, asked)
    now_ms = int(time.time() * 1000)
    tiers = {
        tier: _judge(configured[tier], _record(value), now_ms, settings.llm_stale_after)
        for tier, value in zip(asked, raw, strict=True)
    }
    unhealthy = [t for t in asked if not tiers[t]["healthy"]]
    body = {
        "status": "unhealthy" if unhealthy else "healthy",
        "model": query.model,
        "unhealthy": unhealthy,
        "tiers": tiers,
    }
    return json_response(body, status=503 if unhealthy else 200)
