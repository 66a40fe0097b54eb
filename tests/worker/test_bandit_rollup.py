"""The bandit's per-minute counters (shared.bandit_rollup): written by the real decide and update
scripts in their own atomic call, read back over a range as the dashboard's bandit page does."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from shared.bandit_rollup import UCB_BUCKETS, UCB_WIDTH, read_range
from shared.keys import Keys
from worker.bandit.features import DIM
from worker.bandit.redis_state import RedisLinUCB

KEYS = Keys()


def test_decisions_and_ratings_land_in_the_minute_rollup(rclient, redis_url):
    bandit = RedisLinUCB(rclient, warmup=10, seed=1)
    rng = np.random.default_rng(2)
    decisions = []
    for i in range(40):
        x = rng.random(DIM)
        d = bandit.decide(x)
        decisions.append(d)
        if i % 2 == 0:
            assert bandit.update(d.arm, x, 0.75 if d.arm == "npc" else 0.25, key=f"s:{i}")
    assert not bandit.update(decisions[0].arm, rng.random(DIM), 1.0, key="s:0")  # counted once

    async def read() -> dict[str, Any]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await read_range(client, KEYS, bandit.arms, 15, 1)
        finally:
            await client.aclose()

    got = asyncio.run(read())
    totals = got["totals"]
    assert totals["decisions"] == 40
    assert totals["explore"] == sum(d.exploration for d in decisions) >= 10  # warm-up explores
    for arm in bandit.arms:
        row = totals["arms"][arm]
        assert row["pulls"] == sum(d.arm == arm for d in decisions)
        rated = sum(decisions[i].arm == arm for i in range(0, 40, 2))
        assert row["rated"] == rated
        if rated:
            assert row["mean_reward"] == (0.75 if arm == "npc" else 0.25)
        counts = got["ucb"]["counts"][arm]
        assert len(counts) == UCB_BUCKETS and sum(counts) == 40  # every arm scored at every decision
        expected = [0] * UCB_BUCKETS
        for d in decisions:
            expected[min(UCB_BUCKETS - 1, max(0, int(d.ucb_scores[arm] // UCB_WIDTH)))] += 1
        assert counts == expected
    assert sum(p["decisions"] for p in got["points"]) == 40 and len(got["points"]) == 15
    busy = [p["t"] // 60 for p in got["points"] if p["decisions"]]
    assert busy and all(rclient.ttl(KEYS.stats_minute(m)) > 7 * 86400 for m in busy)  # kept 8 days
