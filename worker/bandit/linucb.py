"""Disjoint LinUCB for the coaching arms, in memory (numpy float64).

Per arm ``a`` the model keeps ``A_a`` (d×d), its inverse ``A_a⁻¹``, ``b_a`` and ``θ_a = A_a⁻¹ b_a``.
A decision scores every arm with ``θ_a·x + α·sqrt(xᵀ A_a⁻¹ x)`` and takes the first maximum (the
same rule as MABWiser's ``LearningPolicy.LinUCB``). An update with reward ``r`` applies the
Sherman–Morrison rank-1 update to ``A⁻¹`` and the matching recursive-least-squares step to ``θ``::

    u = A⁻¹x,  q = xᵀu,  A⁻¹ ← A⁻¹ − u uᵀ / (1 + q),  θ ← θ + u (r − θ·x) / (1 + q)
    A ← A + x xᵀ,  b ← b + r x

so an update costs O(d²) and never inverts. ``A`` and ``b`` are kept as the exact sums they are
(they cost O(d²) too) and are the source of truth: every ``reinvert_every`` updates of an arm its
``A⁻¹`` is recomputed with ``numpy.linalg.inv(A)`` and ``θ`` with ``solve(A, b)``, which bounds
the rounding drift of the rank-1 chain; :func:`drift` measures it (``max |A·A⁻¹ − I|``, of the order
of 1e-15 after thousands of updates on the coaching features — the tests measure it).

**Priors.** Arm ``a`` with prior ``p`` starts as ``n`` (= 10) simulated pulls of the bias-only
context ``e₀`` with reward ``p``, and the ridge ``λ`` on every other coordinate::

    A₀ = λ(I − e₀e₀ᵀ) + n·e₀e₀ᵀ = diag(n, λ, …, λ),   b₀ = n·p·e₀,   θ₀ = A₀⁻¹b₀ = p·e₀

On the bias coordinate the ``n`` prior pulls are the regulariser (adding ``λ`` there as well would
give ``θ₀ = n·p/(n+λ)·e₀``, a biased start). ``θ₀`` is stored as ``p·e₀`` rather than computed as
``fl(1/n)·fl(n·p)`` (which is off by one ulp for 0.6 and 0.7), so every context — all have
``x₀ = 1`` — gets the initial estimate ``θ₀·x = p`` exactly, in float64 too. With ``priors=None``
the start is MABWiser's: ``A₀ = λI``, ``b₀ = θ₀ = 0``.

**Warm-up.** The first ``warmup`` (1000) decisions choose an arm uniformly at random (propensity
``1/K``, ``exploration=True``); decisions and their scores are still computed, and every rating
is learned. After that a decision is greedy on the UCB score (propensity 1.0) and counts as
exploration when the confidence bonus changed the choice (the UCB winner is not the arm with the
highest ``θ·x``).

**Rewards.** The model learns on a fixed scale: rating 1–5 → ``(rating − 1) / 4`` in [0, 1]
(:func:`reward_from_rating`). :class:`RewardWindow` keeps the last 1000 ratings for normalised
statistics shown to operators; it never feeds the model.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from shared.bandit_schedule import AlphaSchedule, current_alpha
from worker.bandit.features import DIM, check_context

Vector = npt.NDArray[np.float64]

#: The coaching arms, in the order of every stacked array.
ARMS: Final = ("npc", "tools", "knowledge")
#: Prior mean reward of each coaching arm.
PRIORS: Final = {"npc": 0.7, "tools": 0.6, "knowledge": 0.5}
#: Simulated pulls that carry each prior.
PRIOR_PULLS: Final = 10
#: Decisions made uniformly at random before LinUCB takes over (shared by all processes).
WARMUP: Final = 1000
#: Ratings kept for the normalised monitoring statistics.
WINDOW: Final = 1000
#: Updates of an arm between two re-inversions of its ``A``.
REINVERT_EVERY: Final = 1000
#: Default exploration weight α.
ALPHA: Final = 1.0
#: Default ridge λ.
LAMBDA: Final = 1.0


class Decision(NamedTuple):
    """One decision: the arm, every arm's UCB score, the chosen arm's propensity, exploration,
    and the exploration weight α it was scored with (``BANDIT_ALPHA_SCHEDULE``)."""

    arm: str
    ucb_scores: dict[str, float]
    propensity: float
    exploration: bool
    alpha: float = ALPHA


def reward_from_rating(rating: int) -> float:
    """A 1–5 rating on the model's fixed reward scale: ``(rating − 1) / 4`` ∈ [0, 1]."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"rating must be an integer from 1 to 5, got {rating!r}")
    return (rating - 1) / 4


def check_reward(reward: float) -> float:
    """``reward`` as a float; ValueError if it is NaN or infinite."""
    r = float(reward)
    if not math.isfinite(r):
        raise ValueError("reward is NaN or Inf")
    return r


@dataclass
class BanditState:
    """Every arm's parameters, stacked in ``arms`` order, plus the counters.

    Two arrays of shape (K, d, d+1) hold the parameters: ``m[k] = [A⁻¹ | θ]`` (what a decision
    reads) and ``n[k] = [A | b]`` (the exact sums, source of truth). One row-vector product
    ``x·m[k]`` then yields both ``xᵀA⁻¹`` and ``θ·x``. ``a_inv``, ``theta``, ``a`` and ``b`` are
    views into them. ``updates`` counts ratings applied (priors excluded), ``pulls`` decisions
    that chose the arm, ``since`` updates since the arm's last re-inversion.
    """

    arms: tuple[str, ...]
    m: npt.NDArray[np.float64]
    n: npt.NDArray[np.float64]
    updates: list[int]
    reward_sum: list[float]
    pulls: list[int]
    since: list[int]
    decisions: int = 0

    @property
    def dim(self) -> int:
        """Context dimension d."""
        return int(self.m.shape[1])

    @property
    def a_inv(self) -> npt.NDArray[np.float64]:
        """(K, d, d) view: every arm's ``A⁻¹``."""
        return self.m[:, :, :-1]

    @property
    def theta(self) -> npt.NDArray[np.float64]:
        """(K, d) view: every arm's ``θ``."""
        return self.m[:, :, -1]

    @property
    def a(self) -> npt.NDArray[np.float64]:
        """(K, d, d) view: every arm's ``A``."""
        return self.n[:, :, :-1]

    @property
    def b(self) -> npt.NDArray[np.float64]:
        """(K, d) view: every arm's ``b``."""
        return self.n[:, :, -1]

    def index(self, arm: str) -> int:
        """Position of ``arm`` in the stacked arrays (ValueError for an unknown arm)."""
        try:
            return self.arms.index(arm)
        except ValueError:
            raise ValueError(f"unknown arm {arm!r}; expected one of {self.arms}") from None

    def mean_reward(self) -> dict[str, float | None]:
        """Mean learned reward per arm over the ratings applied (None before the first)."""
        return {
            a: (s / n if n else None)
            for a, s, n in zip(self.arms, self.reward_sum, self.updates, strict=True)
        }


def initial_state(
    dim: int = DIM,
    arms: Sequence[str] = ARMS,
    *,
    priors: Mapping[str, float] | None = PRIORS,
    prior_pulls: int = PRIOR_PULLS,
    lam: float = LAMBDA,
) -> BanditState:
    """The state before any rating: priors as ``prior_pulls`` pulls of ``e₀`` (module docstring)."""
    k = len(arms)
    if k == 0 or len(set(arms)) != k:
        raise ValueError("arms must be distinct and non-empty")
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError("lambda must be positive")
    state = BanditState(
        tuple(arms),
        np.zeros((k, dim, dim + 1)),
        np.zeros((k, dim, dim + 1)),
        [0] * k,
        [0.0] * k,
        [0] * k,
        [0] * k,
    )
    state.a[:] = lam * np.eye(dim)
    state.a_inv[:] = (1.0 / lam) * np.eye(dim)
    if priors is not None:
        if prior_pulls <= 0:
            raise ValueError("prior_pulls must be positive when priors are given")
        for i, arm in enumerate(arms):
            p = check_reward(priors[arm])
            state.a[i, 0, 0] = float(prior_pulls)
            state.a_inv[i, 0, 0] = 1.0 / prior_pulls
            state.b[i, 0] = prior_pulls * p
            state.theta[i, 0] = p
    return state


def apply_update(state: BanditState, i: int, x: Vector, reward: float) -> None:
    """Sherman–Morrison update of arm ``i`` with context ``x`` and ``reward`` (in place, O(d²)).

    With ``v = x·[A⁻¹ | θ] = [uᵀ, θ·x]`` (``A⁻¹`` is symmetric) and ``c = [u/(1+q), −k]``,
    ``[A⁻¹ | θ] −= u cᵀ`` applies both the rank-1 update and the ``θ`` step in one pass; then
    ``[A | b] += x [xᵀ, r]``. The Lua script ``bandit_update.lua`` performs the same arithmetic.
    """
    m = state.m[i]
    d = x.shape[0]
    v = x @ m
    u = v[:d]
    denom = 1.0 + float(u @ x)
    c = v / denom
    c[d] = (float(v[d]) - reward) / denom
    m -= np.multiply.outer(u, c)
    xr = np.empty(d + 1)
    xr[:d] = x
    xr[d] = reward
    state.n[i] += np.multiply.outer(x, xr)
    state.updates[i] += 1
    state.reward_sum[i] += reward
    state.since[i] += 1


def reinvert(state: BanditState, i: int) -> None:
    """Recompute arm ``i``'s ``A⁻¹`` (symmetrised) and ``θ`` from ``A`` and ``b``."""
    a_inv, theta = inverse_and_theta(state.a[i], state.b[i])
    state.a_inv[i] = a_inv
    state.theta[i] = theta
    state.since[i] = 0


def inverse_and_theta(a: Vector, b: Vector) -> tuple[Vector, Vector]:
    """``(A⁻¹, θ)`` from ``A`` and ``b`` by LAPACK: inverse symmetrised, ``θ = solve(A, b)``."""
    inv = np.linalg.inv(a)
    inv = (inv + inv.T) * 0.5
    return inv, np.linalg.solve(a, b).astype(np.float64, copy=False)


def drift(state: BanditState, i: int) -> float:
    """``max |A·A⁻¹ − I|`` of arm ``i``: how far the rank-1 chain has drifted from the exact inverse."""
    m = state.a[i] @ state.a_inv[i]
    return float(np.abs(m - np.eye(m.shape[0])).max())


def score(m: npt.NDArray[np.float64], x: Vector, alpha: float) -> tuple[list[float], list[float]]:
    """``(mean, ucb)`` per arm from stacked ``[A⁻¹ | θ]``: ``θ·x`` and ``θ·x + α·sqrt(xᵀA⁻¹x)``."""
    z = x @ m  # (K, d+1): [xᵀA⁻¹, θ·x] per arm
    d = x.shape[0]
    mean = z[:, d].tolist()
    widths = (z[:, :d] @ x).tolist()
    return mean, [mu + alpha * math.sqrt(w) for mu, w in zip(mean, widths, strict=True)]


def choose(
    arms: Sequence[str], mean: list[float], ucb: list[float], warmup: bool, u: float, alpha: float = ALPHA
) -> tuple[int, Decision]:
    """The decision rule (module docstring); ``u`` ∈ [0, 1) picks the warm-up arm ``floor(u·K)``;
    ``alpha`` is the weight the scores were computed with (recorded in the decision).

    ``bandit_decide.lua`` implements the same rule for the Redis-backed model.
    """
    k = len(arms)
    scores = dict(zip(arms, ucb, strict=True))
    if warmup:
        i = int(u * k)
        return i, Decision(arms[i], scores, 1.0 / k, True, alpha)
    i = ucb.index(max(ucb))  # first maximum, like numpy.argmax
    return i, Decision(arms[i], scores, 1.0, mean[i] != max(mean), alpha)


class RewardWindow:
    """The last ``size`` ratings ``(arm, reward)``; normalised statistics for monitoring only."""

    def __init__(self, size: int = WINDOW, items: Iterable[tuple[str, float]] = ()) -> None:
        self.items: deque[tuple[str, float]] = deque(items, maxlen=size)

    def add(self, arm: str, reward: float) -> None:
        """Record one rating (the oldest falls out when full)."""
        self.items.append((arm, reward))

    def stats(self) -> dict[str, Any]:
        """Count, mean and std of the window, and per arm its count, mean and z-scored mean."""
        rewards = np.array([r for _, r in self.items], dtype=np.float64)
        n = len(rewards)
        mean = float(rewards.mean()) if n else None
        std = float(rewards.std()) if n else None
        arms: dict[str, dict[str, float | int | None]] = {}
        for arm in dict.fromkeys(a for a, _ in self.items):
            mine = np.array([r for a, r in self.items if a == arm])
            arm_mean = float(mine.mean())
            z = (arm_mean - mean) / std if std else 0.0  # type: ignore[operator]
            arms[arm] = {"count": len(mine), "mean": arm_mean, "normalised_mean": z}
        return {"count": n, "mean": mean, "std": std, "arms": arms}


@dataclass
class LinUCB:
    """In-memory disjoint LinUCB with priors, warm-up and periodic re-inversion (module docstring).

    ``seed`` seeds the warm-up choices (an int or a ``numpy.random.Generator``); with
    ``schedule`` decision ``n`` uses ``schedule.at(n, warmup)`` instead of ``alpha``.
    """

    dim: int = DIM
    arms: tuple[str, ...] = ARMS
    alpha: float = ALPHA
    schedule: AlphaSchedule | None = None
    lam: float = LAMBDA
    priors: Mapping[str, float] | None = field(default_factory=lambda: dict(PRIORS))
    prior_pulls: int = PRIOR_PULLS
    warmup: int = WARMUP
    reinvert_every: int = REINVERT_EVERY
    window_size: int = WINDOW
    seed: int | np.random.Generator | None = None
    state: BanditState = field(init=False)
    window: RewardWindow = field(init=False)
    rated: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError("alpha must be finite and >= 0")
        self.arms = tuple(self.arms)
        self.state = initial_state(
            self.dim, self.arms, priors=self.priors, prior_pulls=self.prior_pulls, lam=self.lam
        )
        self.window = RewardWindow(self.window_size)
        self.rng = (
            self.seed if isinstance(self.seed, np.random.Generator) else np.random.default_rng(self.seed)
        )

    @property
    def decisions(self) -> int:
        """Decisions made so far."""
        return self.state.decisions

    @property
    def phase(self) -> str:
        """``warmup`` until ``warmup`` decisions have been made, then ``learned``."""
        return "warmup" if self.state.decisions < self.warmup else "learned"

    def decide(self, x: object) -> Decision:
        """Choose an arm for context ``x`` (ValueError on a bad shape, NaN or Inf)."""
        xv = check_context(x, self.dim)
        self.state.decisions += 1
        alpha = current_alpha(self.alpha, self.schedule, self.state.decisions, self.warmup)
        mean, ucb = score(self.state.m, xv, alpha)
        u = self.rng.random()  # drawn for every decision, as the Redis model does
        i, decision = choose(self.arms, mean, ucb, self.state.decisions <= self.warmup, u, alpha)
        self.state.pulls[i] += 1
        return decision

    def update(self, arm: str, x: object, reward: float, key: str | None = None) -> bool:
        """Learn ``reward`` for ``arm`` in context ``x``; with ``key``, a repeated key is ignored.

        Returns True when applied. ValueError on an unknown arm, a bad context or a NaN/Inf reward.
        """
        i = self.state.index(arm)
        xv = check_context(x, self.dim)
        r = check_reward(reward)
        if key is not None:
            if key in self.rated:
                return False
            self.rated.add(key)
        apply_update(self.state, i, xv, r)
        self.window.add(arm, r)
        if self.reinvert_every and self.state.since[i] >= self.reinvert_every:
            reinvert(self.state, i)
        return True

    @property
    def pulls(self) -> dict[str, int]:
        """Decisions that chose each arm."""
        return dict(zip(self.arms, self.state.pulls, strict=True))

    @property
    def updates(self) -> dict[str, int]:
        """Ratings applied to each arm (priors excluded)."""
        return dict(zip(self.arms, self.state.updates, strict=True))

    def mean_reward(self) -> dict[str, float | None]:
        """Mean learned reward per arm (None before its first rating)."""
        return self.state.mean_reward()

    def summary(self) -> dict[str, Any]:
        """The JSON-able view ``GET /api/v1/bandit`` shows."""
        alpha = current_alpha(self.alpha, self.schedule, self.state.decisions + 1, self.warmup)
        return summarise(self.state, alpha, self.phase, self.window.stats(), self.schedule)


def summarise(
    state: BanditState,
    alpha: float,
    phase: str,
    window: dict[str, Any],
    schedule: AlphaSchedule | None = None,
) -> dict[str, Any]:
    """Phase, α (the next decision's), its schedule, decisions and per-arm pulls / updates /
    mean reward, plus window statistics."""
    means = state.mean_reward()
    arms = {
        arm: {"pulls": state.pulls[i], "updates": state.updates[i], "mean_reward": means[arm]}
        for i, arm in enumerate(state.arms)
    }
    return {
        "phase": phase,
        "alpha": alpha,
        "alpha_schedule": schedule.as_dict() if schedule is not None else None,
        "decisions": state.decisions,
        "arms": arms,
        "window": window,
    }
