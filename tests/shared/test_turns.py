"""The chat turn record has one owner, TurnStore: the "unknown vs pending" rule, each writer's
round trip, and the field names bandit_decide.lua writes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import redis.asyncio as aioredis

from shared.keys import Keys
from shared.turns import DECISION_FIELDS, TurnState, TurnStore, turn_state
from worker.bandit.scripts import script_source

KEYS = Keys("opsdeck:", "dramatiq")


@pytest.mark.parametrize(
    ("decided", "counter", "turn", "expected"),
    [
        (True, None, 9, TurnState.DECIDED),
        (True, b"3", 1, TurnState.DECIDED),
        (False, b"3", 3, TurnState.PENDING),
        (False, b"3", 1, TurnState.PENDING),
        (False, b"3", 4, TurnState.UNKNOWN),
        (False, None, 1, TurnState.UNKNOWN),
    ],
)
def test_the_one_rule(decided, counter, turn, expected):
    assert turn_state(decided, counter, turn) is expected


def test_the_decide_script_writes_the_decision_fields():
    source = script_source("bandit_decide")
    call = re.search(r'redis\.call\("hset", KEYS\[3\],(.*?)\)\n', source, re.S)
    assert call is not None
    assert tuple(re.findall(r'"(\w+)", ', call.group(1))) == DECISION_FIELDS


async def test_a_turn_from_number_to_rating(rclient, redis_url):
    turns = TurnStore(KEYS, ttl=600)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await turns.state(client, "s", 1) is TurnState.UNKNOWN
        assert await turns.number(client, "s") == 1
        assert await turns.state(client, "s", 1) is TurnState.PENDING
        assert turns.rating_context(rclient, "s", 1).state is TurnState.PENDING

        claim = turns.claim(rclient, "s", 1, "task-1")
        assert (claim.owner, claim.result, claim.decision) == ("task-1", None, None)
        assert turns.claim(rclient, "s", 1, "task-2").owner == "task-1"

        x = np.arange(3, dtype="<f8").tobytes()
        fields = {"arm": "npc", "propensity": "1", "exploration": 0, "x": x, "decision": 7}
        rclient.hset(turns.record_key("s", 1), mapping=fields)  # as bandit_decide.lua stores it
        assert turns.claim(rclient, "s", 1, "task-1").decision == ("npc", False, 1.0)
        assert await turns.state(client, "s", 1) is TurnState.DECIDED
        context = turns.rating_context(rclient, "s", 1)
        assert (context.state, context.arm, context.x) == (TurnState.DECIDED, "npc", x)

        turns.answer(rclient, "s", 1, {"arm": "npc"}, "builtin")
        assert turns.claim(rclient, "s", 1, "task-1").result == {"arm": "npc"}
        assert rclient.zscore(KEYS.chat_active_sessions, "s") is not None
        with rclient.pipeline(transaction=False) as pipe:
            turns.mark_rated(pipe, "s", 1, 5)
            turns.mark_rated(pipe, "s", 1, 2)
            pipe.execute()
        assert rclient.hget(turns.record_key("s", 1), "rating") == b"5"
        assert 0 < rclient.ttl(turns.record_key("s", 1)) <= 600
    finally:
        await client.aclose()
