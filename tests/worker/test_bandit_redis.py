"""The Redis-backed LinUCB: equal to the in-memory model, exact under concurrency, idempotent.

Real redis-server from tests/conftest.py; the concurrency tests run two worker processes.
"""

from __future__ import annotations

import math
import multiprocessing
import struct
from typing import Any

import numpy as np
import pytest
import redis

from shared.keys import Keys
from worker.bandit.features import DIM
from worker.bandit.linucb import ARMS, BanditState, LinUCB, apply_update
from worker.bandit.redis_state import Rating, RedisLinUCB, compare, pack, recompute, unpack
from worker.bandit.scripts import script_source

KEYS = Keys()
PER_WORKER = 5000
REDELIVERED = 500  # each worker also re-sends this many of the other worker's ratings


def contexts(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, DIM))
    x[:, 0] = 1.0
    return x


def worker_ratings(worker: int) -> list[Rating]:
    """The 5,000 distinct ratings worker ``worker`` applies (deterministic)."""
    rng = np.random.default_rng(1000 + worker)
    xs = contexts(PER_WORKER, 2000 + worker)
    arms = rng.integers(len(ARMS), size=PER_WORKER)
    rewards = rng.integers(1, 6, size=PER_WORKER)
    return [
        Rating(f"session-{worker}-{i // 10}:{i % 10}", ARMS[a], x, (int(r) - 1) / 4)
        for i, (a, x, r) in enumerate(zip(arms, xs, rewards, strict=True))
    ]


def full_log() -> list[Rating]:
    return worker_ratings(0) + worker_ratings(1)


# -- in one process ---------------------------------------------------------------------------------


def test_redis_model_equals_in_memory_model_for_the_same_stream(rclient):
    kwargs: dict[str, Any] = {"warmup": 300, "reinvert_every": 250, "alpha": 0.8}
    memory = LinUCB(seed=42, **kwargs)
    shared = RedisLinUCB(rclient, seed=42, log_maxlen=0, **kwargs)
    assert shared.init()
    xs = contexts(1500, 5)
    rewards = np.random.default_rng(6).integers(1, 6, size=(1500, len(ARMS)))
    for t, x in enumerate(xs):
        a, b = memory.decide(x), shared.decide(x)
        assert (a.arm, a.propensity, a.exploration) == (b.arm, b.propensity, b.exploration), t
        assert b.ucb_scores == pytest.approx(a.ucb_scores, rel=1e-12, abs=1e-15)
        r = (int(rewards[t, ARMS.index(a.arm)]) - 1) / 4
        assert memory.update(a.arm, x, r, key=f"s:{t}") and shared.update(b.arm, x, r, key=f"s:{t}")
    state = shared.load()
    assert np.array_equal(state.n, memory.state.n)  # A and b: the same sums, bit for bit
    assert np.allclose(state.m, memory.state.m, rtol=1e-12, atol=1e-15)
    assert (state.updates, state.pulls, state.since) == (
        memory.state.updates,
        memory.state.pulls,
        memory.state.since,
    )
    assert state.reward_sum == memory.state.reward_sum and state.decisions == 1500
    assert shared.summary()["arms"] == memory.summary()["arms"]
    assert shared.window().items == memory.window.items and shared.window().stats() == memory.window.stats()


def test_priors_are_applied_exactly_in_redis(rclient):
    shared = RedisLinUCB(rclient, alpha=0.0, warmup=0)
    for x in contexts(50, 1):
        assert shared.decide(x).ucb_scores == {"npc": 0.7, "tools": 0.6, "knowledge": 0.5}
    assert shared.load().updates == [0, 0, 0]


def test_duplicate_ratings_count_once(rclient):
    shared = RedisLinUCB(rclient)
    x = contexts(1, 0)[0]
    assert shared.update("tools", x, 1.0, key="s1:4")
    before = rclient.hgetall(KEYS.bandit_state("coach"))
    for _ in range(5):
        assert not shared.update("tools", x, 1.0, key="s1:4")
        assert not shared.update("npc", x, 0.0, key="s1:4")  # a redelivery can't change its arm either
    assert rclient.hgetall(KEYS.bandit_state("coach")) == before
    assert shared.load().updates == [0, 1, 0] and rclient.xlen(KEYS.bandit_log("coach")) == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_rejected_before_anything_is_written(rclient, bad):
    shared = RedisLinUCB(rclient)
    shared.init()
    x = contexts(1, 0)[0]
    poisoned = x.copy()
    poisoned[2] = bad
    before = rclient.hgetall(KEYS.bandit_state("coach"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        shared.decide(poisoned)
    with pytest.raises(ValueError, match="NaN or Inf"):
        shared.update("npc", poisoned, 0.5, key="k")
    with pytest.raises(ValueError, match="NaN or Inf"):
        shared.update("npc", x, bad, key="k")
    # the script refuses too, should a caller bypass the Python checks
    script = rclient.register_script(script_source("bandit_update"))
    keys = [KEYS.bandit_state("coach"), KEYS.bandit_rated("coach"), KEYS.bandit_log("coach"), "w"]
    with pytest.raises(redis.ResponseError, match="NaN or Inf"):
        script(keys=keys, args=["npc", "k", pack(poisoned), struct.pack("<d", 0.5), 10, 0])
    with pytest.raises(redis.ResponseError, match="NaN or Inf"):
        script(keys=keys, args=["npc", "k", pack(x), struct.pack("<d", bad), 10, 0])
    assert rclient.hgetall(KEYS.bandit_state("coach")) == before
    assert not rclient.exists(KEYS.bandit_rated("coach"), KEYS.bandit_decisions("coach"))


def test_state_is_created_once_and_a_mismatched_configuration_refused(rclient):
    assert RedisLinUCB(rclient).init()
    assert not RedisLinUCB(rclient).init()
    with pytest.raises(ValueError, match="created with"):
        RedisLinUCB(rclient, priors=None).init()
    assert RedisLinUCB(rclient, name="other", priors=None).init()  # another bandit, its own keys


def test_decision_is_stored_with_the_callers_record(rclient):
    shared = RedisLinUCB(rclient, warmup=0)
    x = contexts(1, 3)[0]
    decision = shared.decide(x, record="turn:s1:0", record_ttl=60)
    stored = rclient.hgetall("turn:s1:0")
    assert stored[b"arm"].decode() == decision.arm == "npc"
    assert float(stored[b"propensity"]) == decision.propensity == 1.0
    assert np.array_equal(unpack(stored[b"x"], (DIM,)), x) and stored[b"decision"] == b"1"
    assert 0 < rclient.ttl("turn:s1:0") <= 60


def test_recompute_from_the_redis_log(rclient):
    shared = RedisLinUCB(rclient, reinvert_every=300, log_maxlen=0)
    ratings = worker_ratings(0)[:1000]
    for rating in ratings:
        shared.update(rating.arm, rating.x, rating.reward, key=rating.key)
    logged = shared.ratings()
    assert [r.key for r in logged] == [r.key for r in ratings]
    assert all(
        np.array_equal(a.x, b.x) and a.reward == b.reward for a, b in zip(logged, ratings, strict=True)
    )
    assert compare(shared.load(), recompute(logged)) == []


# -- two worker processes -------------------------------------------------------------------------


class NaiveRedisLinUCB(RedisLinUCB):
    """NEGATIVE CONTROL: the same model updated by read → compute → write (no script, no lock).

    Counters use atomic HINCRBY and idempotency an atomic SADD, so counts come out right;
    only the read-then-write of the matrices races.
    """

    def update(self, arm: str, x: object, reward: float, key: str) -> bool:
        if not self.client.sadd(self.rated_key, key):
            return False
        i = self.arms.index(arm)
        shape = (self.dim, self.dim + 1)
        m, n = self.client.hmget(self.state_key, [f"{arm}:m", f"{arm}:n"])  # read ...
        zeros = [0] * 3
        state = BanditState(
            self.arms, np.zeros((3, *shape)), np.zeros((3, *shape)), zeros, [0.0] * 3, zeros, zeros
        )
        state.m[i], state.n[i] = unpack(m, shape), unpack(n, shape)
        apply_update(state, i, np.asarray(x, dtype=np.float64), reward)  # ... compute ...
        self.client.hset(self.state_key, mapping={f"{arm}:m": pack(state.m[i]), f"{arm}:n": pack(state.n[i])})
        self.client.hincrby(self.state_key, f"{arm}:updates", 1)
        return True


def apply_worker(url: str, worker: int, naive: bool, start: multiprocessing.synchronize.Event) -> None:
    """Body of one worker process: its own ratings plus redeliveries of the other worker's."""
    client = redis.Redis.from_url(url)
    cls = NaiveRedisLinUCB if naive else RedisLinUCB
    model = cls(client, reinvert_every=700, log_maxlen=0)
    model.init()
    mine, theirs = worker_ratings(worker), worker_ratings(1 - worker)
    stream = mine + theirs[:REDELIVERED]
    np.random.default_rng(worker).shuffle(stream)
    start.wait(30)
    for rating in stream:
        model.update(rating.arm, rating.x, rating.reward, key=rating.key)
    client.close()


def run_two_workers(url: str, naive: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=apply_worker, args=(url, w, naive, start)) for w in (0, 1)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(90)
        assert p.exitcode == 0


def test_two_processes_lose_no_update_and_match_the_recomputed_state(redis_url, rclient):
    run_two_workers(redis_url, naive=False)
    shared = RedisLinUCB(rclient)
    state = shared.load()
    assert sum(state.updates) == 2 * PER_WORKER == 10_000
    assert rclient.scard(KEYS.bandit_rated("coach")) == 10_000
    expected = recompute(full_log())
    assert compare(state, expected) == []
    assert np.abs(state.a_inv - expected.a_inv).max() < 1e-6
    logged = shared.ratings()
    assert sorted(r.key for r in logged) == sorted(r.key for r in full_log())


def test_negative_control_read_then_write_is_caught(redis_url, rclient):
    """The same check fails for a non-atomic update although every count is right."""
    run_two_workers(redis_url, naive=True)
    state = RedisLinUCB(rclient).load()
    assert sum(state.updates) == 10_000  # counts alone do not see lost updates
    problems = compare(state, recompute(full_log()))
    assert problems, "the non-atomic implementation lost no update: the control proves nothing"
    assert any("A differs" in p for p in problems)


def warmup_worker(url: str, start: multiprocessing.synchronize.Event, out: Any) -> None:
    """Body of one deciding process: 800 decisions, reported as (propensity, arm) pairs."""
    client = redis.Redis.from_url(url)
    model = RedisLinUCB(client)
    xs = contexts(800, 9)
    start.wait(30)
    out.put([(d.propensity, d.arm) for d in (model.decide(x) for x in xs)])
    client.close()


def test_warmup_is_exactly_1000_decisions_across_processes(redis_url, rclient):
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=warmup_worker, args=(redis_url, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = out.get(timeout=60) + out.get(timeout=60)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    warm = [arm for propensity, arm in results if propensity == 1 / 3]
    learned = [arm for propensity, arm in results if propensity == 1.0]
    assert len(warm) == 1000 and len(learned) == 600
    assert set(learned) == {"npc"}  # no ratings yet: the priors decide
    assert set(warm) == set(ARMS)
    state = RedisLinUCB(rclient).load()
    assert state.decisions == 1600 and sum(state.pulls) == 1600
    assert RedisLinUCB(rclient).phase == "learned"
