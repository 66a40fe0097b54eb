"""Coaching task types (``coach``, ``feedback``) and the read-only bandit view both apps share.

* ``coach`` — one chat turn: ``{session_id, message, user_id, turn_number}``; the worker picks an
  arm with the shared LinUCB, produces the suggestion and stores both with the turn.
* ``feedback`` — a rating of one turn: ``{session_id, turn_number, rating}`` (integer 1–5); the
  worker's ``bandit_update`` function applies it once per ``session_id:turn_number`` using the
  context and arm stored with the turn, never values sent by the client.

Both run in their own queue group ``coach`` (``coach.p0`` … ``coach.p3``), so chat never waits
behind diagnostics or deploys. :func:`bandit_summary` reads the bandit's counters from Redis
without numpy, for ``GET /api/v1/bandit`` (the coordinator must not import the worker) and, as
:func:`queue_summary` + :func:`summary_from` on its own pipeline, for the dashboard's live poller.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from shared.bandit_checkpoints import ROLLBACKS_SHOWN, checkpoint_views
from shared.bandit_schedule import AlphaSchedule, current_alpha
from shared.keys import Keys
from shared.tasks import Priority, TaskType

#: The coaching arms, in the bandit's order.
ARMS: Final = ("npc", "tools", "knowledge")
#: Queue group of both coaching types.
QUEUE_GROUP: Final = "coach"
#: Priority of a chat turn submitted through ``POST /api/v1/chat`` (a user is waiting).
CHAT_PRIORITY: Final = Priority.P1
#: Priority of a rating submitted through ``POST /api/v1/feedback/submit``.
FEEDBACK_PRIORITY: Final = Priority.P2
#: Session ids: safe in Redis key names and in the ``session_id:turn_number`` rating key.
SESSION_PATTERN: Final = r"^[A-Za-z0-9._-]{1,128}$"
#: Longest chat message accepted.
MAX_MESSAGE_CHARS: Final = 4000


class CoachPayload(BaseModel):
    """One chat turn to answer."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(pattern=SESSION_PATTERN, description="Conversation id (letters, digits, . _ -).")
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="What the prospect said.")
    user_id: str = Field(min_length=1, max_length=128, description="The seller being coached.")
    turn_number: int = Field(ge=1, le=1_000_000, strict=True, description="1-based turn of the session.")


class FeedbackPayload(BaseModel):
    """A rating of one answered turn."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(pattern=SESSION_PATTERN)
    turn_number: int = Field(ge=1, le=1_000_000, strict=True)
    rating: int = Field(ge=1, le=5, strict=True, description="1 (useless) to 5 (great).")


#: Allowed because :mod:`shared.task_types` lists it (defining it registers nothing).
COACH = TaskType("coach", CoachPayload, "Answers one chat turn with a coaching suggestion.", QUEUE_GROUP)
FEEDBACK = TaskType(
    "feedback", FeedbackPayload, "Applies a 1-5 rating of a turn to the bandit once.", QUEUE_GROUP
)


def rating_key(session_id: str, turn_number: int) -> str:
    """The idempotency key of a rating: ``session_id:turn_number``."""
    return f"{session_id}:{turn_number}"


def _window_stats(items: list[tuple[str, float]]) -> dict[str, Any]:
    """Count, mean, std and per-arm mean / z-scored mean of the last ratings (oldest first)."""
    n = len(items)
    if not n:
        return {"count": 0, "mean": None, "std": None, "arms": {}}
    mean = math.fsum(r for _, r in items) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for _, r in items) / n)
    arms: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(a for a, _ in items):
        mine = [r for a, r in items if a == arm]
        arm_mean = math.fsum(mine) / len(mine)
        arms[arm] = {
            "count": len(mine),
            "mean": arm_mean,
            "normalised_mean": (arm_mean - mean) / std if std else 0.0,
        }
    return {"count": n, "mean": mean, "std": std, "arms": arms}


#: ``bandit_summary``'s reads, in the order :func:`summary_from` takes their replies.
SUMMARY_COMMANDS: Final = 7


def queue_summary(pipe: Any, keys: Keys, *, window_size: int = 1000, name: str = "coach") -> None:
    """Queue :func:`bandit_summary`'s :data:`SUMMARY_COMMANDS` reads on ``pipe`` (the dashboard's
    live poller adds them to its own round trip)."""
    state_key = keys.bandit_state(name)
    pipe.hget(state_key, "arms")
    pipe.get(keys.bandit_decisions(name))
    pipe.lrange(keys.bandit_window(name), 0, window_size - 1)
    pipe.hgetall(state_key)
    pipe.hgetall(keys.bandit_checkpoint_meta(name))
    pipe.lrange(keys.bandit_rollbacks(name), 0, ROLLBACKS_SHOWN - 1)
    pipe.hmget(keys.bandit_guard(name), ["applied", "last_check", "rollbacks:auto", "rollbacks:manual"])


async def bandit_summary(
    client: aioredis.Redis,
    keys: Keys,
    *,
    alpha: float,
    warmup: int,
    schedule: AlphaSchedule | None = None,
    window_size: int = 1000,
    name: str = "coach",
) -> dict[str, Any]:
    """Phase, α of the next decision (``BANDIT_ALPHA``, or ``schedule``'s at the shared decision
    count) and the schedule, decisions and per-arm pulls / updates / mean reward, plus window
    statistics.

    One round trip. Before the first decision (no state yet) every arm shows zeros. ``pulls``
    counts decisions that chose the arm, ``updates`` ratings applied; priors are in neither.
    ``applied`` counts every rating applied (never rolled back), ``checkpoints`` the kept ones
    (newest first, with their window's reward), ``rollbacks`` the last records (why, when, to
    which checkpoint), ``last_check`` the last automatic rollback check.
    """
    async with client.pipeline(transaction=False) as pipe:
        queue_summary(pipe, keys, window_size=window_size, name=name)
        replies = await pipe.execute()
    return summary_from(replies, alpha=alpha, warmup=warmup, schedule=schedule)


def summary_from(
    replies: list[Any], *, alpha: float, warmup: int, schedule: AlphaSchedule | None = None
) -> dict[str, Any]:
    """:func:`bandit_summary`'s answer from the replies of :func:`queue_summary`'s reads."""
    arms_raw, decisions_raw, window_raw, fields, metas, rollbacks, guard = replies
    arms = arms_raw.decode().split(",") if arms_raw else list(ARMS)
    decisions = int(decisions_raw or 0)
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        updates = int(fields.get(f"{arm}:updates".encode(), 0))
        blob = fields.get(f"{arm}:reward_sum".encode())
        reward_sum = struct.unpack("<d", blob)[0] if blob else 0.0
        out[arm] = {
            "pulls": int(fields.get(f"{arm}:pulls".encode(), 0)),
            "updates": updates,
            "mean_reward": reward_sum / updates if updates else None,
        }
    items = []
    for raw in reversed(window_raw):
        arm, reward = raw.decode().split(" ")
        items.append((arm, float(reward)))
    return {
        "phase": "warmup" if decisions < warmup else "learned",
        "alpha": current_alpha(alpha, schedule, decisions + 1, warmup),
        "alpha_schedule": schedule.as_dict() if schedule is not None else None,
        "decisions": decisions,
        "warmup": warmup,
        "arms": out,
        "window": _window_stats(items),
        "applied": int(guard[0] or 0),
        "checkpoints": checkpoint_views(metas),
        "rollbacks": [orjson.loads(r) for r in rollbacks],
        "rollbacks_total": {"auto": int(guard[2] or 0), "manual": int(guard[3] or 0)},
        "last_check": orjson.loads(guard[1]) if guard[1] else None,
    }
