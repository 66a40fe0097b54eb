"""The bandit page (``/bandit``) and its JSON API: the coaching bandit as the workers share it.

Live, at no Redis cost per viewer: the page shows the stream's ``bandit`` section
(:class:`BanditLive`, a row of :data:`dashboard.live_sections.SECTIONS`), which the poller reads in
one round trip per tick for every socket on it, and not at all while nobody is on the page —
the coordinator's own reader (:func:`shared.coaching.queue_summary` /
:func:`~shared.coaching.summary_from`: phase, α and its schedule, per-arm counters, the rating
window, checkpoints, rollbacks), the LLM tiers' health hash (``Keys.llm_tiers``, every field a
worker writes shown as it is) and the last 15 per-minute rollups (:mod:`shared.bandit_rollup`).
The longer chart ranges (``GET /api/bandit/history``) and the offline evaluation
(``GET /api/bandit/evaluation``, :mod:`shared.bandit_evaluation`, cached for
:data:`EVALUATION_TTL` per process: it reads thousands of turns) are read on request. A rollback
(``POST /api/bandit/checkpoints/{id}/rollback``, admins) runs the coordinator's script through
:func:`shared.bandit_checkpoints.manual_rollback` and is audited.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dashboard import audit
from dashboard.appkeys import KEYS, REDIS, SETTINGS, USER
from dashboard.history import RANGES, Range
from dashboard.pages import render
from shared.bandit_checkpoints import manual_rollback
from shared.bandit_rollup import queue_range, read_range, summarise
from shared.coaching import ARMS, queue_summary, summary_from
from shared.errors import NotFound, ValidationFailed
from shared.keys import Keys
from shared.llm_tiers import TIERS, shares
from shared.settings import Settings
from shared.web import json_response, parse_query

if TYPE_CHECKING:
    from dashboard.live_sections import LiveContext

#: Name of the stream section.
SECTION: Final = "bandit"
#: Minutes of rollups in the live section (the charts' 15 m range).
LIVE_MINUTES: Final = 15
#: Seconds an offline evaluation is reused before it is computed again.
EVALUATION_TTL: Final = 60.0
#: Newest logged turns the evaluation reads (the coordinator's default ``limit``).
EVALUATION_TURNS: Final = 5000
#: Two-sided 95 % normal quantile.
Z95: Final = 1.959963984540054


def window_intervals(window_raw: list[bytes]) -> dict[str, dict[str, Any]]:
    """Per arm of the rating window (``arm reward`` items): its mean reward's 95 % interval (normal,
    sample standard deviation) and the same interval normalised like ``normalised_mean``
    (z-scored against the whole window's mean and standard deviation)."""
    items = [(a, float(r)) for a, r in (raw.decode().split(" ") for raw in window_raw)]
    if not items:
        return {}
    n = len(items)
    mean = math.fsum(r for _, r in items) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for _, r in items) / n)
    out: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(a for a, _ in items):
        mine = [r for a, r in items if a == arm]
        m = math.fsum(mine) / len(mine)
        if len(mine) < 2:
            out[arm] = {"ci": None, "normalised_ci": None}
            continue
        half = Z95 * math.sqrt(math.fsum((r - m) ** 2 for r in mine) / (len(mine) - 1) / len(mine))
        ci = [m - half, m + half]
        out[arm] = {"ci": ci, "normalised_ci": [(c - mean) / std for c in ci] if std else None}
    return out


def tier_rows(raw: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
    """``Keys.llm_tiers`` as tier → its JSON fields (whatever the workers write; a field that is
    not a JSON object is shown as ``{"value": text}``)."""
    out: dict[str, dict[str, Any]] = {}
    for tier, blob in sorted(raw.items()):
        try:
            value = orjson.loads(blob)
        except orjson.JSONDecodeError:
            value = blob.decode(errors="replace")
        out[tier.decode(errors="replace")] = value if isinstance(value, dict) else {"value": value}
    return out


def target_mix(settings: Settings) -> dict[str, Any]:
    """The tier mix ``LLM_TIER_WEIGHTS`` asks for, renormalised over the tiers with a model
    (:func:`shared.llm_tiers.shares`, as the workers route); over every weighted tier, and said so,
    when this dashboard's settings name no model (its environment may lack ``LLM_MODEL_*``)."""
    weights = settings.tier_weights
    configured = [tier for tier, model in settings.llm_models.items() if model]
    if configured:
        return {"shares": shares(weights, configured), "over": "configured"}
    return {"shares": shares(weights, list(TIERS)), "over": "weights"}


class BanditSection:
    """The stream's ``bandit`` section: its reads ride on the poller's pipeline."""

    #: Commands :meth:`queue` adds: the summary's 7, the tier hash, one per rollup minute.
    COMMANDS: Final = 7 + 1 + LIVE_MINUTES

    def __init__(self, settings: Settings) -> None:
        self.keys: Keys = settings.keys
        self.alpha = settings.bandit_alpha
        self.warmup = settings.bandit_warmup
        self.schedule = settings.alpha_schedule
        self.mix = target_mix(settings)
        self._first = 0

    def queue(self, pipe: Any, now: float | None = None) -> None:
        """Queue this section's :attr:`COMMANDS` reads on ``pipe``."""
        queue_summary(pipe, self.keys)
        pipe.hgetall(self.keys.llm_tiers)
        self._first = queue_range(pipe, self.keys, LIVE_MINUTES, now)

    def build(self, replies: list[Any]) -> dict[str, Any]:
        """The section from the replies of :meth:`queue`'s reads."""
        summary = summary_from(replies[:7], alpha=self.alpha, warmup=self.warmup, schedule=self.schedule)
        arms = list(summary["arms"])
        total = sum(a["pulls"] for a in summary["arms"].values())
        intervals = window_intervals(replies[2])
        for name, arm in summary["arms"].items():
            arm["share"] = arm["pulls"] / total if total else None
            arm["window"] = {**summary["window"]["arms"].get(name, {}), **intervals.get(name, {})}
        warmup = summary["warmup"]
        summary["warmup_progress"] = min(1.0, summary["decisions"] / warmup) if warmup else 1.0
        summary["llm_tiers"] = tier_rows(replies[7])
        summary["llm_mix"] = self.mix
        summary["recent"] = summarise(replies[8:], arms or list(ARMS), self._first, 1)
        return summary

    async def read(self, client: Any) -> dict[str, Any]:
        """The section, read now (one round trip: ``GET /api/bandit``)."""
        async with client.pipeline(transaction=False) as pipe:
            self.queue(pipe)
            replies = await pipe.execute()
        return self.build(replies)


class BanditLive:
    """The live section ``bandit`` (no argument, no query): :class:`BanditSection` read per tick."""

    def __init__(self, arg: str, query: dict[str, str]) -> None:
        if arg or query:
            raise ValueError("the bandit section takes no argument and no query")
        self._section: BanditSection | None = None

    async def read(self, ctx: LiveContext) -> Any:
        """The section now (one round trip)."""
        if self._section is None:
            self._section = BanditSection(ctx.store.settings)
        return await self._section.read(ctx.redis)


class EvaluationCache:
    """One offline evaluation per :data:`EVALUATION_TTL` per process; callers that arrive while it
    is computed wait for that one."""

    def __init__(self, ttl: float = EVALUATION_TTL) -> None:
        self.ttl = ttl
        self._value: dict[str, Any] | None = None
        self._at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self, client: Any, settings: Settings) -> dict[str, Any]:
        """The cached report, or a new one (the configured α, a uniform policy, the running one)."""
        async with self._lock:
            if self._value is None or time.monotonic() - self._at > self.ttl:
                from shared.bandit_evaluation import evaluate_log, read_log  # numpy: on first use

                alpha = settings.bandit_alpha
                log = await read_log(client, settings.keys, alpha=alpha, limit=EVALUATION_TURNS)
                report: dict[str, Any] = await asyncio.to_thread(
                    evaluate_log, log, [alpha], configured_alpha=alpha
                )
                self._value = report | {"limit": EVALUATION_TURNS, "computed_at": time.time()}
                self._at = time.monotonic()
            return self._value


EVALUATION = web.AppKey("bandit_evaluation", EvaluationCache)


# -- response models (they generate /api/openapi.json) ------------------------------------------
class BanditArm(BaseModel):
    """One arm: the shared model's counters and its share and statistics in the rating window."""

    pulls: int = Field(description="Decisions that chose the arm.")
    updates: int = Field(description="Ratings applied to the arm (priors excluded).")
    mean_reward: float | None = Field(description="Mean reward (0-1) over every rating applied.")
    share: float | None = Field(description="The arm's share of all pulls.")
    window: dict[str, Any] = Field(
        description="In the last 1000 ratings: count, mean with its 95 % interval ci, normalised_mean "
        "(z-scored against the window) with normalised_ci."
    )


class BanditRange(BaseModel):
    """The per-minute rollups over a range, per point of ``step_seconds``."""

    step_seconds: int
    points: list[dict[str, Any]] = Field(
        description="{t, decisions, explore, explore_ratio, llm_tiers: {tier: turns answered}, "
        "arms: {arm: {pulls, rated, mean_reward}}}"
    )
    totals: dict[str, Any] = Field(description="The same sums over the whole range.")
    ucb: dict[str, Any] = Field(
        description="UCB score distribution: bucket width, lower edges, counts per arm per bucket."
    )


class BanditHistory(BanditRange):
    """``GET /api/bandit/history``."""

    range: Range


class BanditState(BaseModel):
    """``GET /api/bandit`` and the live section ``bandit``: what ``GET /api/v1/bandit`` shows, plus
    shares, intervals, warm-up progress, the LLM tiers and the last 15 minutes."""

    phase: Literal["warmup", "learned"]
    alpha: float = Field(description="Exploration weight of the next decision.")
    alpha_schedule: dict[str, Any] | None
    decisions: int
    warmup: int
    warmup_progress: float = Field(description="Share of the warm-up decisions made (0-1).")
    arms: dict[str, BanditArm]
    window: dict[str, Any]
    applied: int
    checkpoints: list[dict[str, Any]]
    rollbacks: list[dict[str, Any]]
    rollbacks_total: dict[str, int]
    last_check: dict[str, Any] | None
    llm_tiers: dict[str, dict[str, Any]] = Field(description="Keys.llm_tiers, per tier.")
    llm_mix: dict[str, Any] = Field(
        description="The target tier mix: shares (LLM_TIER_WEIGHTS renormalised) and over "
        "(configured: the tiers with a model; weights: this dashboard names no model)."
    )
    recent: BanditRange = Field(description="The last 15 minutes, per minute.")


class BanditEvaluationReport(BaseModel):
    """``GET /api/bandit/evaluation``: the coordinator's evaluation report for the configured α
    (docs/coaching.md#offline-evaluation), with when it was computed."""

    model_config = ConfigDict(extra="allow")
    turns_read: int
    turns_evaluated: int
    policies: list[dict[str, Any]]
    limit: int
    computed_at: float


class BanditRollback(BaseModel):
    """The rollback record (as the coordinator's ``POST /api/v1/bandit/rollback`` answers)."""

    at_ms: int
    trigger: Literal["manual", "auto"]
    checkpoint: int
    checkpoint_applied: int
    applied: int
    epoch: int
    reason: dict[str, Any]


class HistoryQuery(BaseModel):
    """Query of ``GET /api/bandit/history``."""

    model_config = ConfigDict(extra="forbid")
    range: Range = "1h"


async def page(request: web.Request) -> web.Response:
    """``GET /bandit``: the page (filled by ``static/bandit.js`` from the live section)."""
    return render(request, "bandit.html", "bandit", {"live": [SECTION], "ranges": list(RANGES)})


def section_of(request: web.Request) -> BanditSection:
    """A reader of the section for this app's settings."""
    return BanditSection(request.app[SETTINGS])


async def bandit_state(request: web.Request) -> web.Response:
    """``GET /api/bandit``: the live section, read now."""
    return json_response(await section_of(request).read(request.app[REDIS]))


async def bandit_history(request: web.Request) -> web.Response:
    """``GET /api/bandit/history?range=``: decisions, exploration ratio, pulls and mean reward per
    arm per point, the range's totals and UCB score distribution, from the per-minute rollups."""
    query = parse_query(request, HistoryQuery)
    minutes, step = RANGES[query.range]
    client = request.app[REDIS]
    arms_raw = await client.hget(request.app[KEYS].bandit_state(), "arms")
    arms = arms_raw.decode().split(",") if arms_raw else list(ARMS)
    data = await read_range(client, request.app[KEYS], arms, minutes, step)
    return json_response({"range": query.range, **data})


async def bandit_evaluation(request: web.Request) -> web.Response:
    """``GET /api/bandit/evaluation``: the offline evaluation (cached, module docstring)."""
    return json_response(await request.app[EVALUATION].get(request.app[REDIS], request.app[SETTINGS]))


def checkpoint_id(request: web.Request) -> int:
    """The route's checkpoint id (a 422 naming it unless a positive integer)."""
    raw = request.match_info["id"]
    if not raw.isdigit() or int(raw) < 1 or len(raw) > 18:
        raise ValidationFailed(
            "path is invalid", fields=[{"loc": ["path", "id"], "msg": "expected a checkpoint id (1, 2, …)"}]
        )
    return int(raw)


async def rollback(request: web.Request) -> web.Response:
    """``POST /api/bandit/checkpoints/{id}/rollback``: restore a kept checkpoint (admins; 404 for
    one not kept); audited as ``bandit.rollback``."""
    user = request[USER]
    checkpoint = checkpoint_id(request)
    client, keys = request.app[REDIS], request.app[KEYS]
    record = await manual_rollback(client, keys, checkpoint, user.subject)
    if record is None:
        raise NotFound(
            f"checkpoint {checkpoint} is not kept (the bandit page lists them)",
            fields=[{"loc": ["path", "id"], "msg": "unknown checkpoint"}],
        )
    discarded = int(record.get("applied") or 0) - int(record.get("checkpoint_applied") or 0)
    await audit.record(
        client, keys, "bandit.rollback", f"bandit checkpoint {checkpoint}", user.subject,
        reason=f"{max(discarded, 0)} ratings after it discarded",
    )  # fmt: skip
    return json_response(record)
