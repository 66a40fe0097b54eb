"""Checkpoints and automatic rollback of the shared bandit (issue 18, part 4), against a real
redis-server (tests/conftest.py): snapshots every BANDIT_CHECKPOINT_EVERY ratings, the two-test
rule on a stream whose best arm flips (no rollback) and on a poisoned one (rollback), the
compare-and-set that refuses a rollback a rating raced, the cooldown, the log that still rebuilds
the model, the agent's counter, the settings."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from shared.bandit_checkpoints import ArmSums, RollbackPolicy, mix_contrast, welch_z
from shared.errors import ConfigError
from shared.settings import load_settings
from worker.bandit.features import DIM
from worker.bandit.linucb import ARMS
from worker.bandit.redis_state import RedisLinUCB, compare, recompute, unpack
from worker.metrics import AgentCollector

BEFORE = {"npc": 0.8, "tools": 0.5, "knowledge": 0.3}
AFTER_FLIP = {"npc": 0.3, "tools": 0.8, "knowledge": 0.3}


def contexts(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, DIM))
    x[:, 0] = 1.0
    return x


def model(rclient: Any, **kwargs: Any) -> RedisLinUCB:
    options: dict[str, Any] = {"warmup": 300, "seed": 1, "checkpoint_every": 500, "checkpoints_kept": 10,
                               "policy": RollbackPolicy(200, 0.001, 48 * 3600)} | kwargs  # fmt: skip
    return RedisLinUCB(rclient, **options)


def checkpoint_state(rclient: Any, m: RedisLinUCB, cid: int) -> dict[str, bytes]:
    fields = [f"{arm}:{f}" for arm in ARMS for f in ("m", "n", "reward_sum", "updates", "since")]
    values = rclient.hmget(m.checkpoints_key, [f"{cid}:{f}" for f in fields])
    return dict(zip(fields, values, strict=True))


def live_state(rclient: Any, m: RedisLinUCB) -> dict[str, bytes]:
    fields = [f"{arm}:{f}" for arm in ARMS for f in ("m", "n", "reward_sum", "updates", "since")]
    return dict(zip(fields, rclient.hmget(m.state_key, fields), strict=True))


# -- the statistics -------------------------------------------------------------------------------
def test_welch_and_the_mix_contrast_by_hand():
    best = ArmSums(400, 320.0, 400 * (0.04 + 0.64))  # mean 0.8, variance ~0.04
    now = ArmSums(400, 200.0, 400 * (0.09 + 0.25))  # mean 0.5, variance ~0.09
    z = welch_z(best, now)
    assert z == pytest.approx(0.3 / np.sqrt(best.var / 400 + now.var / 400))
    # same mix, lower per-arm reward: the world changed, nothing to gain by going back
    delta, z_mix = mix_contrast({"npc": best}, {"npc": now})
    assert delta == 0 and z_mix == 0
    # the mix moved from npc to knowledge and npc still earns 0.8 today: Δ = 0.8 − 0.5
    delta, z_mix = mix_contrast({"npc": best}, {"knowledge": now, "npc": ArmSums(30, 24.0, 30 * 0.68)})
    assert delta == pytest.approx((1 - 30 / 430) * 0.8 - (400 / 430) * 0.5) and z_mix > 5


# -- checkpoints ----------------------------------------------------------------------------------
def test_a_checkpoint_every_n_ratings_holds_the_model_and_its_window(rclient):
    m = model(rclient, checkpoint_every=100, checkpoints_kept=3)
    xs = contexts(450, 2)
    rng = np.random.default_rng(3)
    states = {}
    for t, x in enumerate(xs):
        arm = ARMS[t % 3]
        m.update(arm, x, float(rng.integers(0, 5)) / 4, key=f"k{t}")
        if (t + 1) % 100 == 0:
            states[(t + 1) // 100] = live_state(rclient, m)
    listed = m.checkpoints()
    assert [c["id"] for c in listed] == [4, 3, 2]  # newest first, 3 kept
    assert [c["applied"] for c in listed] == [400, 300, 200]
    for c in listed:
        assert checkpoint_state(rclient, m, c["id"]) == states[c["id"]]  # the model as it was, bit for bit
        assert c["reward"]["count"] == 100 and sum(a["count"] for a in c["reward"]["arms"].values()) == 100
    assert checkpoint_state(rclient, m, 1) == dict.fromkeys(checkpoint_state(rclient, m, 1))  # dropped
    assert rclient.hget(m.guard_key, "applied") == b"450"


def poisoned_history(m: RedisLinUCB, rewards_now: float = 0.0, start: int = 0) -> None:
    """Three windows of 50 good npc ratings, then one of 50 bad knowledge ratings (by update())."""
    xs = contexts(200, 4 + start)
    for t, x in enumerate(xs):
        good = t < 150
        arm = "npc" if good else "knowledge"
        reward = (0.75, 1.0)[t % 2] if good else (rewards_now, 0.25)[t % 2]
        m.update(arm, x, reward, key=f"p{start}:{t}")


class Unchecked(RedisLinUCB):
    """A worker whose update does not run the due check (to interleave it by hand)."""

    def check_rollback(self, attempts: int = 3) -> str | None:
        return None


def test_a_rating_that_races_the_check_refuses_the_rollback_then_it_goes_ahead(rclient):
    small: dict[str, Any] = {
        "checkpoint_every": 50,
        "checkpoints_kept": 5,
        "policy": RollbackPolicy(20, 0.001, 0),
    }
    m = Unchecked(rclient, warmup=0, **small)
    poisoned_history(m)
    read = m.read_check()
    assert read is not None
    applied, check = read
    assert applied == 200 and check["target"] in (1, 2, 3) and check["z_drop"] > check["z_critical"]
    target = check["target"]
    # another worker applies a rating between the check's read and its rollback
    racer = Unchecked(rclient, warmup=0, **small)
    assert racer.update("tools", contexts(1, 9)[0], 1.0, key="racer")
    before = live_state(rclient, m)
    assert m.resolve(applied, check) == "raced"
    assert live_state(rclient, m) == before  # nothing restored: the raced rating is still in the model
    assert m.rollbacks() == [] and rclient.hget(m.guard_key, "pending") == b"1"
    # decided again on what is there now (the raced rating included): rolled back
    assert RedisLinUCB.check_rollback(m) == "rolled back"
    assert live_state(rclient, m) == checkpoint_state(rclient, m, target)
    [record] = m.rollbacks()
    assert record["trigger"] == "auto" and record["checkpoint"] == target and record["applied"] == 201
    assert "arm mix would earn" in record["reason"]["why"]
    # a rating after the rollback is learned by the restored model, and the log rebuilds it
    assert m.update("npc", contexts(1, 10)[0], 1.0, key="after")
    problems = compare(m.load(), recompute(m.ratings()))
    assert problems == []
    kept = {r.key for r in m.ratings()}
    assert "after" in kept and "racer" not in kept and "p0:199" not in kept and "p0:0" in kept


def test_one_automatic_rollback_per_cooldown(rclient):
    small: dict[str, Any] = {"checkpoint_every": 50, "checkpoints_kept": 10}
    m = RedisLinUCB(rclient, warmup=0, policy=RollbackPolicy(20, 0.001, 48 * 3600), **small)
    poisoned_history(m)
    assert len(m.rollbacks()) == 1
    poisoned_history(m, start=1)  # poisoned again within the cooldown: refused, and said so
    assert len(m.rollbacks()) == 1
    assert rclient.hget(m.guard_key, "rollbacks:auto") == b"1"
    check = orjson.loads(rclient.hget(m.guard_key, "last_check"))
    assert check["outcome"] == "cooldown" and check["target"] is not None
    assert live_state(rclient, m) != checkpoint_state(rclient, m, check["target"])  # left alone

    rclient.flushdb()
    m = RedisLinUCB(rclient, warmup=0, policy=RollbackPolicy(20, 0.001, 0), **small)
    poisoned_history(m)
    poisoned_history(m, start=1)
    assert [r["trigger"] for r in m.rollbacks()] == ["auto", "auto"]


def test_manual_rollback_to_any_kept_checkpoint(rclient):
    m = model(rclient, warmup=0, checkpoint_every=50, checkpoints_kept=4)
    xs = contexts(230, 11)
    for t, x in enumerate(xs):
        m.update(ARMS[t % 3], x, 0.5, key=f"k{t}")
    record = m.rollback(2)
    assert record["trigger"] == "manual" and record["checkpoint_applied"] == 100 and record["applied"] == 230
    assert live_state(rclient, m) == checkpoint_state(rclient, m, 2)
    assert compare(m.load(), recompute(m.ratings())) == []
    assert m.rollback(4)["checkpoint_applied"] == 200  # forward again, to a later checkpoint
    assert compare(m.load(), recompute(m.ratings())) == [] and len(m.ratings()) == 200
    with pytest.raises(LookupError):
        m.rollback(5)  # never taken


def test_a_reinversion_computed_before_a_rollback_is_refused(rclient):
    m = model(rclient, warmup=0, checkpoint_every=20, checkpoints_kept=3, reinvert_every=0)
    for t, x in enumerate(contexts(40, 12)):
        m.update("npc", x, 0.5, key=f"k{t}")
    blob, updates, epoch = rclient.hmget(m.state_key, ["npc:n", "npc:updates", "epoch"])
    m.rollback(1)
    for t, x in enumerate(contexts(20, 13)):
        m.update("npc", x, 0.5, key=f"again{t}")  # back to 40 updates: the same count as read
    assert rclient.hget(m.state_key, "npc:updates") == updates
    stale = unpack(blob, (DIM, DIM + 1))
    assert not m._reinvert(keys=[m.state_key], args=["npc", updates, stale.tobytes(), epoch or b"0"])


# -- the simulation ------------------------------------------------------------------------------
def simulate(rclient: Any, kind: str, n: int = 7000, seed: int = 1) -> tuple[RedisLinUCB, list[float]]:
    """The coaching loop against the shared model: decide, rate, learn. ``drift``: the best arm
    flips at rating 3000 (npc 0.8 → 0.3, tools 0.5 → 0.8), an honest change of the world.
    ``poison``: the world stays, but from 3000 to 4500 half the ratings come from an adversary
    who rates every npc and tools answer 1 and every knowledge answer 5."""
    m = model(rclient, seed=seed)
    rng = np.random.default_rng(seed)
    windows: list[float] = []
    rewards: list[float] = []
    for t, x in enumerate(contexts(n, seed + 100)):
        decision = m.decide(x)
        if kind == "poison" and 3000 <= t < 4500 and rng.random() < 0.5:
            rating = 5 if decision.arm == "knowledge" else 1
        else:
            p = AFTER_FLIP if kind == "drift" and t >= 3000 else BEFORE
            rating = int(rng.binomial(4, p[decision.arm])) + 1
        m.update(decision.arm, x, (rating - 1) / 4, key=f"s:{t}")
        rewards.append((rating - 1) / 4)
        if (t + 1) % 500 == 0:
            windows.append(float(np.mean(rewards[-500:])))
    return m, windows


def test_rollback_fires_on_the_poisoned_stream_not_on_honest_drift(rclient):
    drift, drift_windows = simulate(rclient, "drift")
    assert min(drift_windows[6:]) < 0.5  # the reward did fall after the flip ...
    assert drift.rollbacks() == []  # ... and no rollback: going back would not bring it back
    assert drift_windows[-1] > 0.75  # the model adapted by itself (tools)
    assert drift.load().pulls[ARMS.index("tools")] > 2500
    assert compare(drift.load(), recompute(drift.ratings())) == []
    # the check did see the drop and named why it kept the model
    assert orjson.loads(rclient.hget(drift.guard_key, "last_check"))["outcome"] == "kept"

    rclient.flushdb()
    poisoned, windows = simulate(rclient, "poison")
    [record] = poisoned.rollbacks()
    assert record["trigger"] == "auto" and record["checkpoint_applied"] <= 3000  # back to before the attack
    reason = record["reason"]
    assert reason["z_drop"] > reason["z_critical"] and reason["z_mix"] > reason["z_critical"]
    assert record["applied"] > 4500  # decided on honest ratings after the attack
    assert min(windows[6:9]) < 0.5 and min(windows[-3:]) > 0.75  # the reward came back
    assert compare(poisoned.load(), recompute(poisoned.ratings())) == []
    assert rclient.hget(poisoned.guard_key, "rollbacks:auto") == b"1"


# -- metric and settings --------------------------------------------------------------------------
def test_the_agent_exports_the_rollback_counter():
    families = {
        f.name: f for f in AgentCollector(lambda: {"bandit_rollbacks": {"auto": 1, "manual": 2}}).collect()
    }
    samples = {s.labels["trigger"]: s.value for s in families["coordinator_bandit_rollbacks"].samples
               if s.name == "coordinator_bandit_rollbacks_total"}  # fmt: skip
    assert samples == {"auto": 1.0, "manual": 2.0}
    before_first_read = {f.name for f in AgentCollector(lambda: {}).collect()}
    assert "coordinator_bandit_rollbacks" not in before_first_read


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"bandit_rollback_min_samples": 600},
            "^BANDIT_ROLLBACK_MIN_SAMPLES .* must not exceed BANDIT_CHECKPOINT_EVERY",
        ),
        ({"bandit_rollback_cooldown": -1}, "^BANDIT_ROLLBACK_COOLDOWN: "),
        ({"bandit_checkpoints_kept": 1}, "^BANDIT_CHECKPOINTS_KEPT: "),
        ({"bandit_rollback_significance": 0}, "^BANDIT_ROLLBACK_SIGNIFICANCE: "),
        ({"bandit_checkpoint_every": -5}, "^BANDIT_CHECKPOINT_EVERY: "),
    ],
)
def test_bad_settings_name_the_variable(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_settings_defaults():
    s = load_settings()
    assert (s.bandit_checkpoint_every, s.bandit_checkpoints_kept, s.bandit_rollback_cooldown) == (
        500,
        10,
        172800.0,
    )
    assert s.rollback_policy == RollbackPolicy(200, 0.001, 172800.0)
    assert (
        load_settings(bandit_checkpoint_every=0, bandit_rollback_min_samples=900).bandit_checkpoint_every == 0
    )
