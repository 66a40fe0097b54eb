"""The chat turn record and its one owner, :class:`TurnStore` (coordinator and worker).

A chat session has a counter (``Keys.chat_turns``: the last turn number handed out) and one hash
per turn (``Keys.chat_turn``), both expiring after ``TASK_TTL``. Its life, and who writes what:

1. **number** (coordinator, ``POST /api/v1/chat`` and ``/ws/chat``): ``INCR`` of the counter.
2. **claim** (worker, the ``coach`` task): ``HSETNX task`` — the first task owns the turn.
3. **decide** (worker): ``bandit_decide.lua`` stores :data:`DECISION_FIELDS` in the same round
   trip as the decision (the bandit's script, called with this record's key by :meth:`decide`).
4. **answer** (worker): ``result``, ``source``, ``answered_at``; the session joins the active set.
5. **rate** (worker, the ``feedback`` task): ``HSETNX rating`` once the rating was applied.

Whether a turn can be rated is :func:`turn_state`, the one rule both the coordinator (404 / 409)
and the worker (:class:`~worker.coach.pipeline.UnknownTurn` / ``TurnPending``) apply.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import orjson
import redis
import redis.asyncio as aioredis

from shared.keys import Keys

#: Seconds a per-minute rollup hash is kept (as the task scripts keep it: 8 days).
ROLLUP_TTL: Final = 8 * 86400
#: Fields ``bandit_decide.lua`` writes into the record given as its third key (``alpha``: the
#: exploration weight the decision was scored with, so offline evaluation knows which policy acted).
DECISION_FIELDS: Final = ("arm", "propensity", "exploration", "x", "decision", "alpha")

_D_co = TypeVar("_D_co", covariant=True)


class Decider(Protocol[_D_co]):
    """A bandit that decides in one round trip and stores its decision in a record hash
    (``worker.bandit.redis_state.RedisLinUCB``)."""

    def decide(self, x: object, *, record: str | None = None, record_ttl: int = 0) -> _D_co:
        """Choose an arm for ``x``; with ``record``, store :data:`DECISION_FIELDS` there."""
        ...


class TurnState(enum.Enum):
    """Whether a turn can be rated."""

    #: Never handed out in its session (or expired).
    UNKNOWN = "unknown"
    #: Handed out, but no decision is stored yet.
    PENDING = "pending"
    #: Decided: its arm and context are stored, a rating can be applied.
    DECIDED = "decided"


def turn_state(decided: bool, counter: bytes | str | int | None, turn_number: int) -> TurnState:
    """The rule: a turn with a stored decision is rateable; one numbered at most the session's
    counter is pending; any other is unknown."""
    if decided:
        return TurnState.DECIDED
    return TurnState.PENDING if turn_number <= int(counter or 0) else TurnState.UNKNOWN


@dataclass(frozen=True, slots=True)
class Claim:
    """A turn as its claiming task found it."""

    #: The id of the task that owns the turn (the first to claim it).
    owner: str
    #: The stored result, when the turn was already answered.
    result: dict[str, Any] | None
    #: ``(arm, exploration, propensity)`` when a decision is stored.
    decision: tuple[str, bool, float] | None


@dataclass(frozen=True, slots=True)
class RatingContext:
    """What a rating needs from its turn: the rule's answer and, when decided, arm and context."""

    state: TurnState
    arm: str | None = None
    #: The packed float64 context the decision was made with.
    x: bytes | None = None


@dataclass(frozen=True, slots=True)
class TurnStore:
    """Every read and write of the chat turn record (module docstring); holds no client.

    The coordinator calls the ``async`` methods with its asyncio client, the worker the others
    with its sync client. Each method is the round trip its caller made before, no more.
    """

    keys: Keys
    #: Seconds the counter and the record live (``TASK_TTL``).
    ttl: int

    def record_key(self, session_id: str, turn_number: int) -> str:
        """The hash of one turn."""
        return self.keys.chat_turn(session_id, turn_number)

    # -- coordinator (asyncio) ---------------------------------------------------------------
    async def number(self, client: aioredis.Redis, session_id: str) -> int:
        """Hand out the session's next turn number (one round trip)."""
        counter = self.keys.chat_turns(session_id)
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, self.ttl)
            turn, _ = await pipe.execute()
        return int(turn)

    async def state(self, client: aioredis.Redis, session_id: str, turn_number: int) -> TurnState:
        """:func:`turn_state` of a turn, read in one round trip."""
        async with client.pipeline(transaction=False) as pipe:
            pipe.hexists(self.record_key(session_id, turn_number), "arm")
            pipe.get(self.keys.chat_turns(session_id))
            decided, counter = await pipe.execute()
        return turn_state(bool(decided), counter, turn_number)

    # -- worker (sync) -----------------------------------------------------------------------
    def claim(self, client: redis.Redis, session_id: str, turn_number: int, task_id: str) -> Claim:
        """Claim the turn for ``task_id`` unless a task did before; the turn as found (one round trip)."""
        key = self.record_key(session_id, turn_number)
        with client.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, "task", task_id)
            pipe.expire(key, self.ttl)
            pipe.hgetall(key)
            _, _, raw = pipe.execute()
        record = {k.decode(): v for k, v in raw.items()}
        decision = None
        if "arm" in record:
            decision = (record["arm"].decode(), record["exploration"] == b"1", float(record["propensity"]))
        result = dict(orjson.loads(record["result"])) if "result" in record else None
        return Claim(record["task"].decode(), result, decision)

    def decide(self, bandit: Decider[_D_co], x: object, session_id: str, turn_number: int) -> _D_co:
        """Let ``bandit`` decide for the turn and store the decision with it, in the decision's
        own round trip (``bandit_decide.lua`` writes :data:`DECISION_FIELDS`)."""
        return bandit.decide(x, record=self.record_key(session_id, turn_number), record_ttl=self.ttl)

    def answer(
        self,
        client: redis.Redis,
        session_id: str,
        turn_number: int,
        result: dict[str, Any],
        source: str,
        tier: str | None = None,
    ) -> None:
        """Store the turn's result and mark the session active (one round trip); with ``tier`` (the
        LLM tier whose model answered) also count it in the minute's rollup (``llm:tier:<tier>``,
        the realised tier mix the dashboard's bandit page shows)."""
        key = self.record_key(session_id, turn_number)
        now_ms = time.time_ns() // 1_000_000
        with client.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"result": orjson.dumps(result), "source": source, "answered_at": now_ms})
            pipe.expire(key, self.ttl)
            pipe.zadd(self.keys.chat_active_sessions, {session_id: now_ms})
            if tier is not None:
                rollup = self.keys.stats_minute(now_ms // 60_000)
                pipe.hincrby(rollup, f"llm:tier:{tier}", 1)
                pipe.expire(rollup, ROLLUP_TTL)
            pipe.execute()

    def rating_context(self, client: redis.Redis, session_id: str, turn_number: int) -> RatingContext:
        """The rule's answer for the turn, with its stored arm and context when decided."""
        with client.pipeline(transaction=False) as pipe:
            pipe.hmget(self.record_key(session_id, turn_number), ["arm", "x"])
            pipe.get(self.keys.chat_turns(session_id))
            (arm, x), counter = pipe.execute()
        state = turn_state(arm is not None and x is not None, counter, turn_number)
        if state is not TurnState.DECIDED:
            return RatingContext(state)
        return RatingContext(state, arm.decode(), bytes(x))

    def mark_rated(self, pipe: redis.client.Pipeline, session_id: str, turn_number: int, rating: int) -> None:
        """Queue on ``pipe`` (the caller's round trip) the rating's mark on the turn (first one wins)."""
        pipe.hsetnx(self.record_key(session_id, turn_number), "rating", rating)
