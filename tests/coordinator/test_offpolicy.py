"""The off-policy estimators against simulated logs with a known ground truth (issue 18, part 5).

A finite pool of contexts with known expected rewards per arm (ratings 1-5 drawn around them, on
the model's [0, 1] scale) is logged by a known policy; the true value of every target is then
exact: ``V(π) = mean over the pool of Σ_a π(a|x) μ(x, a)``. Over ``SEEDS`` independent logs each
estimator's 95 % interval must cover ``V`` in a share of seeds consistent with 95 %: with S seeds
the share of a correct 95 % interval is Binomial(S, 0.95) / S, standard deviation
sqrt(0.95·0.05/S) = 0.0126 for S = 300, and the test accepts 0.95 ± 4 standard deviations
(a correct interval fails that by chance with probability ~6e-5 per check, below 1e-3 over the
checks here; and every draw is seeded, so the outcome is fixed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from shared.offpolicy import evaluate, logger_distribution, reward_model

K, D, POOL, ROWS, SEEDS = 3, 4, 40, 1000, 300
TOLERANCE = 4 * math.sqrt(0.95 * 0.05 / SEEDS)


def world(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Contexts (bias + 3 features) and their expected rewards per arm, in (0.05, 0.95)."""
    x = np.column_stack([np.ones(POOL), rng.random((POOL, D - 1))])
    theta = rng.normal(0, 1.5, (K, D))
    mean = 1 / (1 + np.exp(-(x @ theta.T)))  # not linear: the DR model is misspecified on purpose
    return x, 0.05 + 0.9 * mean


def targets(x: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """π(·|x) over the pool: a good deterministic policy, a bad one, uniform and a soft one."""
    best = np.zeros((POOL, K))
    best[np.arange(POOL), truth.argmax(axis=1)] = 1
    worst = np.zeros((POOL, K))
    worst[np.arange(POOL), truth.argmin(axis=1)] = 1
    soft = np.exp(4 * truth) / np.exp(4 * truth).sum(axis=1, keepdims=True)
    return {"best": best, "worst": worst, "uniform": np.full((POOL, K), 1 / K), "soft": soft}


def simulate(seed: int, logger: str) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """One log of ``ROWS`` turns; every target's evaluation and true value."""
    rng = np.random.default_rng(seed)
    x_pool, truth = world(np.random.default_rng(12345))  # one world, many logs
    pool_idx = rng.integers(0, POOL, ROWS)
    if logger == "uniform":  # the warm-up phase: propensity 1/K
        arms = rng.integers(0, K, ROWS)
        propensity = np.full(ROWS, 1 / K)
        mu = logger_distribution(arms, propensity, K)
    else:  # a skewed stochastic logger (e.g. a softmax explorer): the full μ is known
        mu_pool = np.array([[0.6, 0.3, 0.1]] * POOL)
        mu_rows = mu_pool[pool_idx]
        arms = (rng.random(ROWS)[:, None] > mu_rows.cumsum(axis=1)).sum(axis=1)
        mu = mu_rows
    ratings = rng.binomial(4, truth[pool_idx, arms])  # rating − 1 ∈ 0..4, mean 4μ
    rewards = ratings / 4
    x = x_pool[pool_idx]
    q = reward_model(x, arms, rewards, K)
    out, true = {}, {}
    for name, pi_pool in targets(x_pool, truth).items():
        out[name] = evaluate(rewards, arms, mu, pi_pool[pool_idx], q)
        true[name] = float((pi_pool * truth).sum(axis=1).mean())
    return out, true


@pytest.mark.parametrize("logger", ["uniform", "skewed"])
def test_intervals_cover_the_true_value_in_95_percent_of_seeds(logger):
    covered: dict[tuple[str, str], int] = {}
    errors: dict[tuple[str, str], list[float]] = {}
    for seed in range(SEEDS):
        results, true = simulate(seed, logger)
        for target, res in results.items():
            assert res["estimable"] and res["support"] == pytest.approx(1.0)
            for est in ("ips", "snips", "dr"):
                low, high = res[est]["ci"]
                covered[target, est] = covered.get((target, est), 0) + (low <= true[target] <= high)
                errors.setdefault((target, est), []).append(res[est]["value"] - true[target])
    shares = {key: n / SEEDS for key, n in covered.items()}
    bad = {key: share for key, share in shares.items() if abs(share - 0.95) > TOLERANCE}
    assert not bad, (bad, TOLERANCE)
    for key, errs in errors.items():  # unbiased (SNIPS: to O(1/n)): mean error within 4 of its SEs
        e = np.array(errs)
        assert abs(e.mean()) <= 4 * e.std(ddof=1) / math.sqrt(SEEDS) + 1e-3, key


def test_dr_is_tighter_than_ips_and_ess_is_as_expected():
    results, _ = simulate(7, "uniform")
    best = results["best"]
    assert best["dr"]["se"] < best["ips"]["se"]
    assert best["ess"] == pytest.approx(ROWS / K, rel=0.1)  # one turn in K matches a deterministic target
    assert results["uniform"]["ess"] == pytest.approx(ROWS)  # on-policy: every weight is 1


def test_a_deterministic_log_supports_only_what_agrees_with_it():
    """Learned phase: the logger is greedy (propensity 1). Its own value is estimable; a target that
    disagrees on some turns gets no estimate — only bounds that still contain the truth."""
    contained = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        x_pool, truth = world(np.random.default_rng(12345))
        pool_idx = rng.integers(0, POOL, ROWS)
        greedy_arm = (truth + rng.normal(0, 0.1, truth.shape)).argmax(axis=1)  # a decent, fixed logger
        arms = greedy_arm[pool_idx]
        rewards = rng.binomial(4, truth[pool_idx, arms]) / 4
        mu = logger_distribution(arms, np.ones(ROWS), K)
        assert mu.sum(axis=1) == pytest.approx(1.0) and (mu.max(axis=1) == 1).all()
        q = reward_model(x_pool[pool_idx], arms, rewards, K)
        own = evaluate(rewards, arms, mu, mu, q)
        assert own["estimable"] and own["ess"] == pytest.approx(ROWS)
        assert own["ips"]["value"] == pytest.approx(rewards.mean())
        pi = targets(x_pool, truth)["uniform"][pool_idx]
        other = evaluate(rewards, arms, mu, pi, q)
        assert not other["estimable"] and other["ips"] is None and other["dr"] is None
        assert other["support"] == pytest.approx(1 / K) and "no support" in other["reason"]
        low, high = other["bounds"]
        contained += low <= float(truth.mean()) <= high
    assert contained >= 95  # the bounds hold at least as often as their 95 % IPS part
