"""The coaching bandit's per-minute counters, kept in the task rollups (``Keys.stats_minute``,
8 days) so the dashboard's bandit page charts the same ranges as its other charts (15 m … 7 d).

Written by the worker's scripts in the same atomic call as what they count
(``worker/bandit/lua/bandit_decide.lua``, ``bandit_update.lua``; the key prefix, bucket width and
bucket count are their arguments, from here), read by the dashboard (:func:`read_range`):

* ``bandit:decisions``, ``bandit:explore`` — decisions, and those that explored (a warm-up
  decision, or one whose confidence bonus changed the choice: ``coordinator_bandit_decisions_total``'s
  ``exploration="true"``);
* ``bandit:pull:{arm}`` — decisions that chose the arm;
* ``bandit:ucb:{arm}:{i}`` — decisions at which the arm's UCB score fell in bucket ``i``:
  ``[i·w, (i+1)·w)`` with ``w`` = :data:`UCB_WIDTH`, below 0 in bucket 0, from the last bucket up
  in the last (the distribution Grafana's ``coordinator_bandit_ucb_score`` panel shows, per minute
  and across processes);
* ``bandit:rated:{arm}``, ``bandit:reward:{arm}`` — ratings applied to the arm and the sum of their
  rewards (``(rating − 1) / 4`` ∈ [0, 1]);
* ``llm:tier:{tier}`` — turns answered by that LLM tier's model (written with the turn's answer,
  :meth:`shared.turns.TurnStore.answer`): the realised tier mix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from shared.llm_tiers import TIERS

#: Width of a UCB score bucket.
UCB_WIDTH: Final = 0.25
#: UCB score buckets (the last one open-ended: scores from 3.75 up).
UCB_BUCKETS: Final = 16
DECISIONS: Final = "bandit:decisions"
EXPLORE: Final = "bandit:explore"


def pull_field(arm: str) -> str:
    """Decisions that chose ``arm``."""
    return f"bandit:pull:{arm}"


def ucb_field(arm: str, bucket: int) -> str:
    """Decisions at which ``arm``'s UCB score fell in ``bucket``."""
    return f"bandit:ucb:{arm}:{bucket}"


def rated_field(arm: str) -> str:
    """Ratings applied to ``arm``."""
    return f"bandit:rated:{arm}"


def reward_field(arm: str) -> str:
    """Sum of the rewards of the ratings applied to ``arm``."""
    return f"bandit:reward:{arm}"


def tier_field(tier: str) -> str:
    """Turns answered by ``tier``'s model."""
    return f"llm:tier:{tier}"


def bucket_edges() -> list[float]:
    """Lower edge of every UCB bucket."""
    return [i * UCB_WIDTH for i in range(UCB_BUCKETS)]


def _empty(arms: Sequence[str]) -> dict[str, Any]:
    return {
        "decisions": 0,
        "explore": 0,
        "arms": {a: {"pulls": 0, "rated": 0, "reward_sum": 0.0} for a in arms},
        "ucb": {a: [0] * UCB_BUCKETS for a in arms},
        "llm_tiers": dict.fromkeys(TIERS, 0),
    }


def fold(acc: dict[str, Any], raw: dict[bytes, bytes], arms: Sequence[str]) -> None:
    """Add one minute's rollup hash (HGETALL: only the fields written, so quiet minutes cost
    nothing) to ``acc`` (from :func:`_empty`)."""
    if not raw:
        return
    acc["decisions"] += int(raw.get(DECISIONS.encode(), 0))
    acc["explore"] += int(raw.get(EXPLORE.encode(), 0))
    for tier in TIERS:
        acc["llm_tiers"][tier] += int(raw.get(tier_field(tier).encode(), 0))
    for arm in arms:
        row = acc["arms"][arm]
        row["pulls"] += int(raw.get(pull_field(arm).encode(), 0))
        row["rated"] += int(raw.get(rated_field(arm).encode(), 0))
        row["reward_sum"] += float(raw.get(reward_field(arm).encode(), 0))
        hist = acc["ucb"][arm]
        for i in range(UCB_BUCKETS):
            hist[i] += int(raw.get(ucb_field(arm, i).encode(), 0))


def point(t: int, acc: dict[str, Any]) -> dict[str, Any]:
    """One chart point: decisions, exploration share, turns answered per LLM tier, and per arm
    pulls, ratings, mean reward."""
    decisions = acc["decisions"]
    return {
        "t": t,
        "decisions": decisions,
        "explore": acc["explore"],
        "explore_ratio": round(acc["explore"] / decisions, 4) if decisions else None,
        "llm_tiers": dict(acc["llm_tiers"]),
        "arms": {
            arm: {
                "pulls": row["pulls"],
                "rated": row["rated"],
                "mean_reward": round(row["reward_sum"] / row["rated"], 4) if row["rated"] else None,
            }
            for arm, row in acc["arms"].items()
        },
    }


def summarise(
    replies: Sequence[dict[bytes, bytes]], arms: Sequence[str], first_minute: int, step: int
) -> dict[str, Any]:
    """Points of ``step`` minutes from one rollup hash per minute (oldest first), the range's
    totals and its UCB score distribution per arm."""
    points = []
    total = _empty(arms)
    for i in range(0, len(replies), step):
        acc = _empty(arms)
        for raw in replies[i : i + step]:
            fold(acc, raw, arms)
            fold(total, raw, arms)
        points.append(point((first_minute + i) * 60, acc))
    totals = point(first_minute * 60, total)
    del totals["t"]
    return {
        "step_seconds": step * 60,
        "points": points,
        "totals": totals,
        "ucb": {"width": UCB_WIDTH, "edges": bucket_edges(), "counts": total["ucb"]},
    }


def queue_range(pipe: Any, keys: Any, minutes: int, now: float | None = None) -> int:
    """Queue one HGETALL per minute of the last ``minutes`` on ``pipe``; the first minute."""
    last = int((time.time() if now is None else now) // 60)
    for m in range(last - minutes + 1, last + 1):
        pipe.hgetall(keys.stats_minute(m))
    return last - minutes + 1


async def read_range(
    client: Any, keys: Any, arms: Sequence[str], minutes: int, step: int, now: float | None = None
) -> dict[str, Any]:
    """:func:`summarise` of the last ``minutes`` (one pipelined round trip)."""
    async with client.pipeline(transaction=False) as pipe:
        first = queue_range(pipe, keys, minutes, now)
        replies = await pipe.execute()
    return summarise(replies, arms, first, step)
