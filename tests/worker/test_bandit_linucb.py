"""In-memory LinUCB: priors, warm-up, Sherman–Morrison accuracy, bad input, and regret vs MABWiser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.bandit.features import DIM
from worker.bandit.linucb import (
    ARMS,
    PRIORS,
    LinUCB,
    RewardWindow,
    drift,
    initial_state,
    reward_from_rating,
)

CHI2_2DF_P001 = 9.210  # chi-square critical value, 2 degrees of freedom, p = 0.01


def contexts(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Random contexts shaped like the coaching features: bias 1, the rest in [0, 1]."""
    x = np.random.default_rng(seed).random((n, dim))
    x[:, 0] = 1.0
    return x


def test_priors_are_the_initial_estimate_exactly():
    model = LinUCB(alpha=0.0, warmup=0)
    for x in contexts(200, 1):
        assert {a: model.state.theta[i] @ x for i, a in enumerate(ARMS)} == PRIORS  # exact, not approx
        assert model.decide(x).ucb_scores == PRIORS
    # the construction: 10 pulls of e0 carry the prior, the ridge covers only the other coordinates
    s = initial_state()
    for i, arm in enumerate(ARMS):
        assert np.array_equal(s.a[i], np.diag([10.0] + [1.0] * (DIM - 1)))
        assert s.b[i, 0] == 10 * PRIORS[arm] and not s.b[i, 1:].any()
        assert np.allclose(s.a_inv[i] @ s.a[i], np.eye(DIM), atol=0)
        assert s.theta[i, 0] == PRIORS[arm] and math.isclose(
            s.a_inv[i] @ s.b[i] @ np.eye(DIM)[0], PRIORS[arm]
        )
    assert model.updates == dict.fromkeys(ARMS, 0)  # priors are not counted as ratings


def test_greedy_start_prefers_npc_then_learns_from_ratings():
    model = LinUCB(warmup=0, seed=1)
    x = contexts(1, 2)[0]
    assert model.decide(x).arm == "npc"
    for _ in range(30):
        model.update("npc", x, reward_from_rating(1))
    assert model.decide(x).arm != "npc"
    assert model.mean_reward()["npc"] == 0.0 and model.updates["npc"] == 30


def test_warmup_is_uniform_and_exactly_1000_decisions_long():
    model = LinUCB(seed=12345)
    xs = contexts(1100, 3)
    decisions = [model.decide(x) for x in xs]
    warm, learned = decisions[:1000], decisions[1000:]
    assert model.phase == "learned"
    assert all(d.exploration and d.propensity == 1 / 3 for d in warm)
    assert all(d.propensity == 1.0 for d in learned)
    counts = np.array([sum(d.arm == a for d in warm) for a in ARMS])
    chi2 = float(((counts - 1000 / 3) ** 2 / (1000 / 3)).sum())
    assert chi2 < CHI2_2DF_P001, counts
    # with no ratings the priors decide after warm-up: npc every time
    assert {d.arm for d in learned} == {"npc"}
    assert model.pulls == {a: int(c) + (100 if a == "npc" else 0) for a, c in zip(ARMS, counts, strict=True)}


def test_phase_switches_at_the_boundary():
    model = LinUCB(warmup=3, seed=0)
    x = contexts(1, 0)[0]
    phases = []
    for _ in range(4):
        phases.append(model.phase)
        model.decide(x)
    assert phases == ["warmup", "warmup", "warmup", "learned"]


def test_reward_scale():
    assert [reward_from_rating(r) for r in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match="rating"):
            reward_from_rating(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_rejected_and_change_nothing(bad):
    model = LinUCB(seed=0)
    x = contexts(1, 0)[0]
    before = (model.state.m.copy(), model.state.n.copy())
    poisoned = x.copy()
    poisoned[3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.decide(poisoned)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.update("npc", poisoned, 0.5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.update("npc", x, bad)
    with pytest.raises(ValueError, match="unknown arm"):
        model.update("oracle", x, 0.5)
    assert model.decisions == 0 and model.updates == dict.fromkeys(ARMS, 0)
    assert np.array_equal(model.state.m, before[0]) and np.array_equal(model.state.n, before[1])


def test_duplicate_rating_keys_count_once():
    model = LinUCB()
    x = contexts(1, 0)[0]
    assert model.update("tools", x, 1.0, key="s1:3")
    assert not model.update("tools", x, 1.0, key="s1:3")
    assert model.updates["tools"] == 1


def test_sherman_morrison_tracks_the_exact_inverse_and_reinversion_resets_drift():
    model = LinUCB(reinvert_every=0)  # never re-invert: measure the raw rank-1 chain
    xs = contexts(10_000, 4)
    rewards = np.random.default_rng(4).random(10_000)
    for x, r in zip(xs, rewards, strict=True):
        model.update("knowledge", x, float(r))
    i = ARMS.index("knowledge")
    s = model.state
    chained = drift(s, i)
    assert chained < 1e-9  # measured ~1e-13 on these features after 10k updates
    exact_inv = np.linalg.inv(s.a[i])
    assert np.abs(s.a_inv[i] - exact_inv).max() < 1e-12
    assert np.abs(s.theta[i] - np.linalg.solve(s.a[i], s.b[i])).max() < 1e-9
    periodic = LinUCB(reinvert_every=1000)
    for x, r in zip(xs, rewards, strict=True):
        periodic.update("knowledge", x, float(r))
    assert periodic.state.since[i] == 0  # 10,000 is a multiple of the period
    assert drift(periodic.state, i) <= chained


def test_reward_window_keeps_the_last_1000_ratings():
    model = LinUCB()
    x = contexts(1, 0)[0]
    rewards = [reward_from_rating(1 + i % 5) for i in range(1500)]
    for i, r in enumerate(rewards):
        model.update(ARMS[i % 3], x, r)
    stats = model.window.stats()
    assert stats["count"] == 1000
    assert stats["mean"] == pytest.approx(np.mean(rewards[-1000:]))
    assert sum(a["count"] for a in stats["arms"].values()) == 1000
    assert RewardWindow().stats() == {"count": 0, "mean": None, "std": None, "arms": {}}
    summary = model.summary()
    assert summary["arms"]["npc"]["updates"] == 500 and summary["phase"] == "warmup"


# -- regret against MABWiser on a synthetic linear problem -----------------------------------------

T = 20_000
NOISE = 0.1


def problem(seed: int = 2024, dim: int = DIM, rounds: int = T):
    """Contexts, true per-arm parameters, noisy rewards and expected rewards of a linear problem."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.0, (3, dim)) / np.sqrt(dim)
    x = rng.random((rounds, dim))
    x[:, 0] = 1.0
    expected = x @ theta.T
    return x, expected + rng.normal(0.0, NOISE, expected.shape), expected


def run_ours(model: LinUCB, x, rewards) -> np.ndarray:
    chosen = np.empty(len(x), dtype=np.int64)
    for t in range(len(x)):
        arm = model.decide(x[t]).arm
        j = model.arms.index(arm)
        chosen[t] = j
        model.update(arm, x[t], float(rewards[t, j]))
    return chosen


def run_mabwiser(x, rewards, alpha: float, warm_arms: np.ndarray) -> np.ndarray:
    """MABWiser's LinUCB: the same warm-up rounds (one batch ``fit``), then predict + partial_fit."""
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(arms=[0, 1, 2], learning_policy=LearningPolicy.LinUCB(alpha=alpha), seed=0)
    w = len(warm_arms)
    chosen = np.empty(len(x), dtype=np.int64)
    if w:
        chosen[:w] = warm_arms
        mab.fit(warm_arms, rewards[np.arange(w), warm_arms], x[:w])
    else:
        mab.fit([0], [float(rewards[0, 0])], x[:1])
        chosen[0] = 0
        w = 1
    for t in range(w, len(x)):
        j = int(mab.predict(x[t : t + 1]))
        chosen[t] = j
        mab.partial_fit([j], [float(rewards[t, j])], x[t : t + 1])
    return chosen


def regret(expected: np.ndarray, chosen: np.ndarray) -> float:
    return float((expected.max(axis=1) - expected[np.arange(len(chosen)), chosen]).sum())


def test_same_configuration_as_mabwiser_makes_the_same_decisions():
    """Without priors or warm-up our LinUCB is MABWiser's (λ = 1, first maximum): same choices."""
    x, rewards, _ = problem(rounds=2000, seed=7)
    ours = run_ours(LinUCB(priors=None, warmup=0, alpha=0.5), x, rewards)
    theirs = run_mabwiser(x, rewards, 0.5, np.array([], dtype=np.int64))
    assert (ours == theirs).mean() == 1.0


def test_regret_within_5_percent_of_mabwiser_and_best_arm_learned():
    """20,000 rounds, d = 11, 3 arms; both get the same 1000 uniform warm-up rounds, same alpha."""
    alpha, seed = 1.0, 99
    x, rewards, expected = problem()
    ours = run_ours(LinUCB(alpha=alpha, seed=seed), x, rewards)
    warm_rng = np.random.default_rng(seed)  # our model draws one uniform per decision from it
    warm_arms = np.array([int(warm_rng.random() * 3) for _ in range(1000)])
    assert np.array_equal(ours[:1000], warm_arms)
    theirs = run_mabwiser(x, rewards, alpha, warm_arms)
    ours_regret, theirs_regret = regret(expected, ours), regret(expected, theirs)
    assert ours_regret <= 1.05 * theirs_regret, (ours_regret, theirs_regret)
    best = expected.argmax(axis=1)
    assert (ours[-2000:] == best[-2000:]).mean() > 0.80
