"""Offline evaluation of the coaching bandit from its logged turns: the one implementation behind the
coordinator's ``GET /api/v1/bandit/evaluation`` and the dashboard's bandit page.

**The log.** Every applied rating is an entry of the bandit's rating stream (``k`` =
``session_id:turn_number``, ``arm``, packed context ``x``, reward ``r`` ∈ [0, 1]); the turn's record
holds what the decision stored: ``propensity``, ``decision`` and, once the exploration schedule
logs it, ``alpha`` (a turn without it counts as decided with the configured ``BANDIT_ALPHA``). A
rating whose turn record has expired (``TASK_TTL``) is still replayed (below) but not evaluated.
:func:`read_log` reads the newest ``limit`` ratings (newer than ``since``) and the bandit's
``[A | b]`` in one transaction, and the records in one more round trip: bounded work whatever
the log's length, and the answer says how many turns it read and whether it stopped at the cap.

**The policies evaluated** (:func:`evaluate_log`): ``running`` — the logging policy itself
(``π = μ``); ``uniform``; and ``alpha=A`` for each candidate α — LinUCB's greedy UCB rule with α
on the model *as the logged ratings trained it*: the replay starts from the state before the
first rating read (the current ``[A | b]`` minus the ratings read — exact, the sums are kept
exactly) and applies every rating in log order, each turn being scored before its own rating is
learned. The model's trajectory does not depend on α (it learns from the logged ratings, whoever
chose the arm), so one pass scores every candidate. The replay assumes each rating arrived
before the next decision; ``replay_agreement`` (the share of learned-phase turns where the
replayed logged α picks the logged arm) measures how far that holds.

**What the log can and cannot say.** Warm-up turns were logged uniformly (propensity 1/K): every
target has support there, and IPS, SNIPS and DR are unbiased for it. After warm-up LinUCB is
deterministic (propensity 1 for the chosen arm, 0 for the others): a target is supported only
on the turns where it agrees with the log (``match_rate``), so on that segment only the running
policy — and a target that agrees on every turn — gets an estimate; for any other the answer is
a refusal with the bounds the data imply (:mod:`shared.offpolicy`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from shared.coaching import ARMS
from shared.keys import Keys
from shared.offpolicy import Array, evaluate, logger_distribution, reward_model

#: Propensities within this of 1/K (uniform) or 1 (deterministic) name the segment.
_EPS: Final = 1e-9


@dataclass
class Log:
    """The ratings read (log order) and, for those whose turn record is alive, the decision."""

    arms: tuple[str, ...]
    dim: int
    #: ``[A | b]`` per arm before the first rating read, (K, d, d+1); None without a bandit state.
    start: Array | None
    #: Per rating read: arm index, context, reward, and its evaluated row (−1: no turn record).
    rated_arm: list[int] = field(default_factory=list)
    rated_x: list[Array] = field(default_factory=list)
    rated_r: list[float] = field(default_factory=list)
    row_of: list[int] = field(default_factory=list)
    #: Per evaluated row: propensity, α the decision used, whether α was logged.
    propensity: list[float] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    alpha_logged: list[bool] = field(default_factory=list)
    truncated: bool = False

    @property
    def read(self) -> int:
        return len(self.rated_arm)


def parse_rating_key(key: str) -> tuple[str, int] | None:
    """``session_id:turn_number`` → ``(session_id, turn_number)`` (None when it is not one)."""
    session, _, turn = key.rpartition(":")
    return (session, int(turn)) if session and turn.isdigit() else None


async def read_log(
    client: aioredis.Redis,
    keys: Keys,
    *,
    alpha: float,
    limit: int,
    since_ms: int | None = None,
    name: str = "coach",
) -> Log:
    """The newest ``limit`` ratings (after ``since_ms``), the state before them and their decisions.

    Two round trips: a transaction with the ratings and ``[A | b]`` (so no rating slips in
    between), then one pipeline of the turn records' ``propensity`` and ``alpha``.
    """
    state_key = keys.bandit_state(name)
    low = f"{since_ms}-0" if since_ms is not None else "-"
    async with client.pipeline(transaction=True) as pipe:
        pipe.xrevrange(keys.bandit_log(name), "+", low, count=limit + 1)
        pipe.hmget(state_key, ["arms", "dim"])
        pipe.hgetall(state_key)
        entries, (arms_raw, dim_raw), fields = await pipe.execute()
    arms = tuple(arms_raw.decode().split(",")) if arms_raw else ARMS
    dim = int(dim_raw) if dim_raw else 0
    blobs = [fields.get(f"{arm}:n".encode()) for arm in arms]
    if not dim or any(b is None for b in blobs):
        return Log(arms, dim, None)
    log = Log(arms, dim, None, truncated=len(entries) > limit)
    entries = list(reversed(entries[:limit]))  # oldest first
    shape = (dim, dim + 1)
    now = np.stack([np.frombuffer(b, dtype="<f8").astype(np.float64).reshape(shape) for b in blobs])
    turns: list[tuple[str, int] | None] = []
    for _, f in entries:
        arm = arms.index(f[b"arm"].decode())
        x = np.frombuffer(f[b"x"], dtype="<f8").astype(np.float64)
        r = struct.unpack("<d", f[b"r"])[0]
        log.rated_arm.append(arm)
        log.rated_x.append(x)
        log.rated_r.append(r)
        turns.append(parse_rating_key(f[b"k"].decode()))
        now[arm, :, :dim] -= np.outer(x, x)
        now[arm, :, dim] -= r * x
    log.start = now
    async with client.pipeline(transaction=False) as pipe:
        for turn in turns:
            if turn is not None:
                pipe.hmget(keys.chat_turn(*turn), ["propensity", "alpha"])
        records = iter(await pipe.execute())
    for turn in turns:
        propensity, logged_alpha = next(records) if turn is not None else (None, None)
        if propensity is None:
            log.row_of.append(-1)
            continue
        log.row_of.append(len(log.propensity))
        log.propensity.append(float(propensity))
        log.alpha.append(float(logged_alpha) if logged_alpha is not None else alpha)
        log.alpha_logged.append(logged_alpha is not None)
    return log


def replay_scores(log: Log) -> tuple[Array, Array]:
    """``(mean, width)`` (rows × K): ``θ·x`` and ``xᵀA⁻¹x`` of every arm at each evaluated turn,
    on the model trained by the ratings before it (module docstring); O(d²) per rating."""
    assert log.start is not None
    k, d = len(log.arms), log.dim
    a_inv = np.empty((k, d, d))
    theta = np.empty((k, d))
    for i in range(k):
        a, b = log.start[i, :, :d], log.start[i, :, d]
        a_inv[i] = np.linalg.inv(a)
        theta[i] = np.linalg.solve(a, b)
    rows = len(log.propensity)
    mean, width = np.empty((rows, k)), np.empty((rows, k))
    for arm, x, r, row in zip(log.rated_arm, log.rated_x, log.rated_r, log.row_of, strict=True):
        if row >= 0:
            u = a_inv @ x  # (K, d)
            mean[row] = theta @ x
            width[row] = u @ x
        ui = a_inv[arm] @ x
        denom = 1.0 + float(ui @ x)
        theta[arm] += ui * ((r - float(theta[arm] @ x)) / denom)
        a_inv[arm] -= np.outer(ui, ui) / denom
    return mean, np.maximum(width, 0.0)


def greedy(mean: Array, width: Array, alpha: float | Array) -> npt.NDArray[np.int64]:
    """The arm LinUCB picks after warm-up: the first maximum of ``θ·x + α·sqrt(xᵀA⁻¹x)``."""
    a = np.asarray(alpha, dtype=np.float64)
    ucb = mean + (a[:, None] if a.ndim else a) * np.sqrt(width)
    choice: npt.NDArray[np.int64] = np.argmax(ucb, axis=1).astype(np.int64)
    return choice


def one_hot(choice: npt.NDArray[np.int64], k: int) -> Array:
    out = np.zeros((len(choice), k))
    out[np.arange(len(choice)), choice] = 1.0
    return out


def evaluate_log(log: Log, alphas: list[float], *, configured_alpha: float) -> dict[str, Any]:
    """The evaluation report of ``log`` for the running, uniform and each ``alphas`` policy."""
    k = len(log.arms)
    rows = [r for r in log.row_of if r >= 0]
    base: dict[str, Any] = {
        "turns_read": log.read,
        "turns_evaluated": len(rows),
        "turns_without_record": log.read - len(rows),
        "truncated": log.truncated,
        "arms": list(log.arms),
        "configured_alpha": configured_alpha,
        "confidence": 0.95,
    }
    if log.start is None or not rows:
        note = "no logged turns to evaluate" if log.start is not None else "no bandit state yet"
        return base | {
            "segments": {},
            "alpha_logged": {},
            "replay_agreement": None,
            "policies": [],
            "note": note,
        }
    order = [i for i, r in enumerate(log.row_of) if r >= 0]
    arms = np.array([log.rated_arm[i] for i in order], dtype=np.int64)
    x = np.stack([log.rated_x[i] for i in order])
    rewards = np.array([log.rated_r[i] for i in order])
    propensity = np.array(log.propensity)
    mu = logger_distribution(arms, propensity, k)
    q = reward_model(x, arms, rewards, k)
    mean, width = replay_scores(log)
    warm = np.abs(propensity - 1.0 / k) < _EPS
    learned = (np.abs(propensity - 1.0) < _EPS) & ~warm
    segments = {"all": np.ones(len(rows), dtype=bool), "warmup": warm, "learned": learned}
    running_replay = greedy(mean, width, np.array(log.alpha))
    agreement = float((running_replay[learned] == arms[learned]).mean()) if learned.any() else None
    targets: list[tuple[str, float | None, Array]] = [
        ("running", None, mu),
        ("uniform", None, np.full((len(rows), k), 1.0 / k)),
    ]
    for candidate in alphas:
        targets.append((f"alpha={candidate:g}", candidate, one_hot(greedy(mean, width, candidate), k)))
    policies = []
    for name, alpha, pi in targets:
        per = {}
        for seg, mask in segments.items():
            per[seg] = evaluate(rewards[mask], arms[mask], mu[mask], pi[mask], q[mask])
        policies.append({"policy": name, "alpha": alpha, "segments": per})
    logged = sum(log.alpha_logged)
    alpha_counts: dict[str, int] = {}
    for a, was in zip(log.alpha, log.alpha_logged, strict=True):
        label = f"{a:g}" if was else f"{a:g} (not logged: configured)"
        alpha_counts[label] = alpha_counts.get(label, 0) + 1
    return base | {
        "segments": {
            "warmup": int(warm.sum()),
            "learned": int(learned.sum()),
            "other": int((~warm & ~learned).sum()),
        },
        "alpha_logged": {"logged": logged, "not_logged": len(rows) - logged, "values": alpha_counts},
        "replay_agreement": agreement,
        "policies": policies,
    }
