"""Off-policy estimators of a target policy's value from logged bandit decisions (numpy only).

Every function takes per logged row ``t`` the reward ``r_t`` ∈ [0, 1] of the arm ``a_t`` the
logging policy μ chose, and the probabilities ``π(·|x_t)`` of the target and ``μ(·|x_t)`` of the
logger over the K arms (rows of an (n, K) array). With the importance weight
``w_t = π(a_t|x_t) / μ(a_t|x_t)``:

* **IPS** ``V = mean(w r)``: unbiased when μ covers π (``π(a|x) > 0 ⇒ μ(a|x) > 0``);
* **SNIPS** ``V = Σ w r / Σ w`` (self-normalised): slightly biased, much lower variance; for a
  deterministic target on uniformly logged rows it is exactly Li et al.'s (2011) *replay*
  estimator, the mean reward of the rows where the target agrees with the log;
* **DR** ``V = mean(q̂(x, π) + w (r − q̂(x, a)))`` (Dudík, Langford & Li 2011): a reward model
  ``q̂`` plus IPS on its residuals; unbiased when μ covers π whatever ``q̂`` is, and lower-variance
  the better ``q̂`` is. ``q̂`` is a ridge regression per arm, *cross-fitted* (each row predicted by
  the model fitted on the other fold), so it never scores the rows it was fitted on.

Intervals are normal 95 % intervals from each estimator's per-row terms (SNIPS by the delta
method). ``ess = (Σw)² / Σw²`` is the effective sample size: how many on-policy rows the weighted
sample is worth. **Support**: the share of the target's probability mass that falls on arms the
logger could have chosen, ``mean_t Σ_a π(a|x_t)·[μ(a|x_t) > 0]``. Below 1 no estimator above is
unbiased — the rows where the target would have done something the logger never does carry no
information about it — so :func:`evaluate` then gives no point estimate, only the bounds the data
do imply (rewards lie in [0, 1]: the supported part, estimated by IPS, plus anything from 0 to the
unsupported mass).
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

#: Two-sided 95 % normal quantile.
Z95: Final = 1.959963984540054
#: Support below 1 by more than this counts as missing support.
SUPPORT_TOLERANCE: Final = 1e-9
#: Ridge of the DR reward model.
RIDGE: Final = 1.0


def interval(value: float, se: float) -> dict[str, Any]:
    """``{"value", "se", "ci": [low, high]}`` (95 %, normal)."""
    return {"value": value, "se": se, "ci": [value - Z95 * se, value + Z95 * se]}


def _mean_se(terms: Array) -> tuple[float, float]:
    n = len(terms)
    mean = float(terms.mean())
    se = float(terms.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return mean, se


def ips(rewards: Array, weights: Array) -> dict[str, Any]:
    """Inverse propensity scoring: ``mean(w r)`` with its interval."""
    return interval(*_mean_se(weights * rewards))


def snips(rewards: Array, weights: Array) -> dict[str, Any] | None:
    """Self-normalised IPS: ``Σ w r / Σ w`` with a delta-method interval (None when ``Σ w = 0``)."""
    total = float(weights.sum())
    if total <= 0:
        return None
    value = float((weights * rewards).sum()) / total
    se = math.sqrt(float((weights**2 * (rewards - value) ** 2).sum())) / total
    return interval(value, se)


def doubly_robust(rewards: Array, weights: Array, q_logged: Array, q_target: Array) -> dict[str, Any]:
    """DR: ``mean(q̂(x, π) + w (r − q̂(x, a)))`` with its interval."""
    return interval(*_mean_se(q_target + weights * (rewards - q_logged)))


def effective_sample_size(weights: Array) -> float:
    """``(Σw)² / Σw²`` (0 when every weight is 0)."""
    sq = float((weights**2).sum())
    return float(weights.sum()) ** 2 / sq if sq else 0.0


def logger_distribution(arms: npt.NDArray[np.int64], propensities: Array, k: int) -> Array:
    """μ(·|x_t) per row from the logged arm and its propensity: ``p`` on the logged arm and the
    rest ``(1 − p)`` shared by the others — a deterministic log (p = 1) gives 0 to every other
    arm, a uniform one (p = 1/K) 1/K to each."""
    n = len(arms)
    rest = (1.0 - propensities) / (k - 1) if k > 1 else np.zeros(n)
    mu = np.repeat(rest[:, None], k, axis=1)
    mu[np.arange(n), arms] = propensities
    return np.clip(mu, 0.0, 1.0)


def reward_model(x: Array, arms: npt.NDArray[np.int64], rewards: Array, k: int, folds: int = 2) -> Array:
    """Cross-fitted ridge predictions ``q̂(x_t, a)`` for every row and arm, clipped to [0, 1].

    Row ``t`` is predicted by the models fitted on the rows of the other folds (fold = t mod
    ``folds``); an arm with no training row in those folds predicts their mean reward.
    """
    n, d = x.shape
    q = np.empty((n, k))
    fold = np.arange(n) % folds
    for f in range(folds):
        test, train = fold == f, fold != f
        fallback = float(rewards[train].mean()) if train.any() else 0.5
        for a in range(k):
            rows = train & (arms == a)
            if not rows.any():
                q[test, a] = fallback
                continue
            xa = x[rows]
            theta = np.linalg.solve(xa.T @ xa + RIDGE * np.eye(d), xa.T @ rewards[rows])
            q[test, a] = x[test] @ theta
    return np.clip(q, 0.0, 1.0)


def evaluate(
    rewards: Array,
    arms: npt.NDArray[np.int64],
    mu: Array,
    pi: Array,
    q: Array,
) -> dict[str, Any]:
    """IPS, SNIPS and DR of target ``pi`` on the rows, or the refusal and bounds without support.

    ``rewards`` (n,), ``arms`` (n,) the logged arm indexes, ``mu`` / ``pi`` (n, K) the logger's and
    target's distributions, ``q`` (n, K) the reward model. Returns ``turns``, ``support``,
    ``match_rate`` (mean ``π(a_t|x_t)``: for a deterministic target, the share of rows where it
    chose the logged arm), ``ess``, ``estimable``, ``reason``, ``ips``, ``snips``, ``dr`` and
    ``bounds`` (of the value, 95 %, from the IPS of the supported part).
    """
    n = len(rewards)
    out: dict[str, Any] = dict.fromkeys(("support", "match_rate", "reason", "ips", "snips", "dr", "bounds"))
    out.update(turns=n, ess=0.0, estimable=False)
    if n == 0:
        out["reason"] = "no logged turns"
        return out
    idx = np.arange(n)
    p_target = pi[idx, arms]
    weights = p_target / mu[idx, arms]
    support = float((pi * (mu > 0)).sum(axis=1).mean())
    unsupported = max(0.0, 1.0 - support)
    supported_part = ips(rewards, weights)
    out.update(support=support, match_rate=float(p_target.mean()), ess=effective_sample_size(weights))
    low, high = supported_part["ci"]
    out["bounds"] = [max(0.0, low), min(1.0, high + unsupported)]
    if unsupported > SUPPORT_TOLERANCE:
        out["reason"] = (
            f"no support: {unsupported:.1%} of the target's choices are arms the logging policy "
            "never takes on those turns, so no unbiased estimate exists; the value lies within `bounds`"
        )
        return out
    if n < 2:
        out["reason"] = "fewer than 2 turns: no interval"
        return out
    out.update(
        estimable=True,
        ips=supported_part,
        snips=snips(rewards, weights),
        dr=doubly_robust(rewards, weights, q[idx, arms], (pi * q).sum(axis=1)),
    )
    return out
