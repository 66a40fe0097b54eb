"""``GET /api/v1/bandit/evaluation``: offline evaluation of the coaching bandit (scope ``tasks:read``).

Reads at most ``limit`` logged turns (default 5000, at most 20000; the answer says how many and
whether it stopped at the cap) in two round trips under the Redis deadline (503 when Redis is
down, like every route), then computes off the event loop. The method is
:mod:`shared.bandit_evaluation` (numpy, imported on the first call so the coordinator's
start-up does not pay for it) and :mod:`shared.offpolicy`; docs/coaching.md explains it.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from coordinator.appkeys import REDIS, SETTINGS, STORE
from coordinator.http import json_response, parse_query, redis_deadline
from shared.errors import ValidationFailed

#: Turns read when the caller gives no ``limit``.
DEFAULT_LIMIT: Final = 5000
#: The most turns one evaluation reads.
MAX_LIMIT: Final = 20_000
#: The most α values one evaluation scores (the configured one included).
MAX_ALPHAS: Final = 8
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class EvaluationQuery(BaseModel):
    """Query of ``GET /api/v1/bandit/evaluation``."""

    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(
        default=None,
        max_length=64,
        description="Only ratings newer than this: a duration (30m, 24h, 7d) or an ISO 8601 time.",
    )
    alpha: str | None = Field(
        default=None,
        max_length=256,
        description=f"Candidate α values, comma-separated (the configured one is always evaluated; at most "
        f"{MAX_ALPHAS} in all).",
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Newest logged turns to read.")


class BanditEvaluation(BaseModel):
    """``GET /api/v1/bandit/evaluation`` (docs/coaching.md#offline-evaluation)."""

    turns_read: int
    turns_evaluated: int
    turns_without_record: int
    truncated: bool = Field(description="True when more ratings matched than `limit` (the oldest not read).")
    limit: int
    since: str | None
    arms: list[str]
    configured_alpha: float
    confidence: float
    segments: dict[str, int] = Field(
        description="Turns per logging phase: warmup (uniform), learned (greedy)"
    )
    alpha_logged: dict[str, Any]
    replay_agreement: float | None
    policies: list[dict[str, Any]] = Field(
        description="Per policy (running, uniform, alpha=A) and segment (all, warmup, learned): turns, "
        "support, match_rate, ess, estimable, reason, ips, snips, dr ({value, se, ci}) and bounds.",
    )


def since_ms(raw: str | None, now: float | None = None) -> tuple[int | None, str | None]:
    """``since`` as epoch milliseconds and an ISO 8601 echo (ValueError when it is neither form)."""
    if raw is None or not raw.strip():
        return None, None
    text = raw.strip()
    match = _DURATION.match(text)
    if match:
        seconds = float(match[1]) * _UNIT[match[2]]
        at = (time.time() if now is None else now) - seconds
    else:
        parsed = datetime.fromisoformat(text)
        at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(at):
        raise ValueError(text)
    at = max(at, 0.0)
    return int(at * 1000), datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def candidate_alphas(raw: str | None, configured: float) -> list[float]:
    """The configured α followed by the distinct candidates of ``raw`` (comma-separated)."""
    values = [configured]
    for part in (raw or "").split(","):
        if part.strip():
            value = float(part)
            if not (math.isfinite(value) and 0 <= value <= 100):
                raise ValueError(f"alpha {part.strip()!r} is not a number from 0 to 100")
            if value not in values:
                values.append(value)
    if len(values) > MAX_ALPHAS:
        raise ValueError(f"at most {MAX_ALPHAS} alpha values (the configured one included)")
    return values


def _invalid(name: str, msg: str) -> ValidationFailed:
    return ValidationFailed("query is invalid", fields=[{"loc": ["query", name], "msg": msg}])


async def evaluation(request: web.Request) -> web.Response:
    """Estimates of the running policy, a uniform one and candidate α values from the logged turns."""
    from shared.bandit_evaluation import evaluate_log, read_log

    query = parse_query(request, EvaluationQuery)
    settings = request.app[SETTINGS]
    try:
        alphas = candidate_alphas(query.alpha, settings.bandit_alpha)
    except ValueError as exc:
        raise _invalid("alpha", str(exc)) from None
    try:
        low, since = since_ms(query.since)
    except ValueError:
        raise _invalid("since", "expected a duration such as 30m, 24h or 7d, or an ISO 8601 time") from None
    async with redis_deadline(request):
        log = await read_log(
            request.app[REDIS],
            request.app[STORE].keys,
            alpha=settings.bandit_alpha,
            limit=query.limit,
            since_ms=low,
        )
    report: dict[str, Any] = await asyncio.to_thread(
        evaluate_log, log, alphas, configured_alpha=settings.bandit_alpha
    )
    return json_response(report | {"limit": query.limit, "since": since})
