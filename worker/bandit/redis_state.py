"""The LinUCB of :mod:`worker.bandit.linucb` with its state in Redis, shared by every process.

Layout (names from :class:`shared.keys.Keys`, ``name`` defaults to ``coach``):

* ``bandit_state(name)`` — hash. Per arm ``{arm}:m`` = ``[A⁻¹ | θ]`` and ``{arm}:n`` = ``[A | b]``
  (row-major d×(d+1) little-endian float64, so values round-trip exactly), ``{arm}:reward_sum``
  (one packed float64), ``{arm}:updates``, ``{arm}:since``, ``{arm}:pulls`` (integers); and the
  configuration it was created with (``dim``, ``arms``, ``lam``, ``prior_pulls``, ``priors``).
* ``bandit_decisions(name)`` — the one decision counter (INCR) shared by every process: decision
  number ``n ≤ warmup`` is a uniform random warm-up choice, so warm-up is exactly ``warmup`` long.
* ``bandit_rated(name)`` — set of ``session_id:turn_number`` already applied (idempotency).
* ``bandit_log(name)`` — stream of every rating applied, in order (for :func:`recompute`).
* ``bandit_window(name)`` — list of the last ``window_size`` ratings (monitoring only).
* ``stats_minute(m)`` — the per-minute rollups: both scripts count decisions, explorations, pulls,
  UCB score buckets, ratings and rewards there (:mod:`shared.bandit_rollup`; monitoring only).
* ``bandit_guard(name)``, ``bandit_checkpoints(name)``, ``bandit_checkpoint_meta(name)``,
  ``bandit_rollbacks(name)`` — checkpoints and rollbacks (:mod:`shared.bandit_checkpoints`): the
  update script counts every applied rating and, every ``checkpoint_every``, copies the model
  into a checkpoint with its window's reward sums and flags a rollback check, which the worker
  whose update took the checkpoint runs (:meth:`RedisLinUCB.check_rollback`); the restore is
  ``shared/lua/bandit_rollback.lua``, which bumps the state's ``epoch`` and appends a ``rollback``
  entry to the log (:meth:`RedisLinUCB.ratings` follows it).

A decision is one round trip: ``bandit_decide.lua`` reads every arm's ``[A⁻¹ | θ]``, scores and
chooses with the in-memory model's rule and arithmetic, increments the counter and the pull count
and can store the decision with the chat turn. A rating runs ``bandit_update.lua``:
idempotency check, Sherman–Morrison, counters, log and window in one atomic script, so concurrent
workers never lose an update and a redelivered rating never counts twice. Every
``reinvert_every`` updates of an arm, the process whose update crossed the period recomputes
``[A⁻¹ | θ]`` from ``[A | b]`` and writes it with a compare-and-set on the arm's update count.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
import redis

from shared import tracing
from shared.bandit_checkpoints import LOG_MAXLEN as SHARED_LOG_MAXLEN
from shared.bandit_checkpoints import (
    RollbackPolicy,
    checkpoint_list,
    checkpoint_views,
    evaluate,
    rollback_args,
    rollback_keys,
    rollback_source,
)
from shared.bandit_rollup import UCB_BUCKETS, UCB_WIDTH
from shared.bandit_schedule import AlphaSchedule, current_alpha
from shared.fastscript import FastScript
from shared.keys import Keys
from worker.bandit.features import DIM, check_context
from worker.bandit.linucb import (
    ALPHA,
    ARMS,
    LAMBDA,
    PRIOR_PULLS,
    PRIORS,
    REINVERT_EVERY,
    WARMUP,
    WINDOW,
    BanditState,
    Decision,
    RewardWindow,
    check_reward,
    initial_state,
    inverse_and_theta,
    summarise,
)
from worker.bandit.scripts import script_source

#: Default cap of the rating log stream (approximate trimming); 0 keeps every rating.
LOG_MAXLEN = SHARED_LOG_MAXLEN
#: Default applied ratings between two checkpoints (``BANDIT_CHECKPOINT_EVERY``; 0: none).
CHECKPOINT_EVERY = 500
#: Default checkpoints kept (``BANDIT_CHECKPOINTS_KEPT``).
CHECKPOINTS_KEPT = 10
log = logging.getLogger(__name__)
_F8 = np.dtype("<f8")


class Rating(NamedTuple):
    """One applied rating as the log holds it."""

    key: str
    arm: str
    x: np.ndarray[Any, np.dtype[np.float64]]
    reward: float


def pack(values: np.ndarray[Any, np.dtype[np.float64]]) -> bytes:
    """Little-endian float64 bytes of an array (row-major)."""
    return np.ascontiguousarray(values, dtype=_F8).tobytes()


def unpack(blob: bytes, shape: tuple[int, ...]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A writable float64 array of ``shape`` from :func:`pack` bytes."""
    return np.frombuffer(blob, dtype=_F8).reshape(shape).astype(np.float64)


class RedisLinUCB:
    """LinUCB whose state lives in Redis (module docstring); same parameters as ``LinUCB``.

    ``client`` is a synchronous ``redis.Redis`` (bytes replies). ``alpha`` and ``warmup`` are
    per-process settings (``schedule``, when given, replaces ``alpha``: see
    :mod:`shared.bandit_schedule`); ``dim``, ``arms``, ``lam``, ``priors`` and ``prior_pulls`` shape the
    state and must match the state already in Redis (ValueError otherwise).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str = "coach",
        keys: Keys | None = None,
        dim: int = DIM,
        arms: Sequence[str] = ARMS,
        alpha: float = ALPHA,
        lam: float = LAMBDA,
        priors: Mapping[str, float] | None = PRIORS,
        prior_pulls: int = PRIOR_PULLS,
        warmup: int = WARMUP,
        reinvert_every: int = REINVERT_EVERY,
        window_size: int = WINDOW,
        log_maxlen: int = LOG_MAXLEN,
        seed: int | np.random.Generator | None = None,
        schedule: AlphaSchedule | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoints_kept: int = CHECKPOINTS_KEPT,
        policy: RollbackPolicy | None = None,
    ) -> None:
        keys = keys or Keys()
        self.client = client
        self.dim = dim
        self.arms = tuple(arms)
        self.alpha = alpha
        self.lam = lam
        self.priors = dict(priors) if priors is not None else None
        self.prior_pulls = prior_pulls
        self.warmup = warmup
        self.reinvert_every = reinvert_every
        self.window_size = window_size
        self.log_maxlen = log_maxlen
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.state_key = keys.bandit_state(name)
        self.decisions_key = keys.bandit_decisions(name)
        self.rated_key = keys.bandit_rated(name)
        self.log_key = keys.bandit_log(name)
        self.window_key = keys.bandit_window(name)
        self.guard_key = keys.bandit_guard(name)
        self.checkpoints_key = keys.bandit_checkpoints(name)
        self.meta_key = keys.bandit_checkpoint_meta(name)
        self.rollbacks_key = keys.bandit_rollbacks(name)
        self.rollup_prefix = keys.stats_minute_prefix  # per-minute counters (shared.bandit_rollup)
        self._rollback_keys = rollback_keys(keys, name)
        self.checkpoint_every = checkpoint_every
        self.checkpoints_kept = checkpoints_kept
        self.policy = policy or RollbackPolicy()
        self._rollback = FastScript(client, rollback_source())
        self._shape = (len(self.arms), dim, dim + 1)
        self._update = FastScript(client, script_source("bandit_update"))
        self._init = FastScript(client, script_source("bandit_init"))
        self._decide = FastScript(client, script_source("bandit_decide"))
        self.schedule = schedule
        # constant alpha: start = end = alpha over 0 steps; a schedule: its start, end, decisions
        self._alpha = struct.pack("<d", schedule.start if schedule else alpha)
        self._alpha_end = struct.pack("<d", schedule.end if schedule else alpha)
        self._alpha_steps = schedule.decisions if schedule else 0
        self._scores_fmt = f"<{len(self.arms)}d"
        self._reinvert = FastScript(client, script_source("bandit_reinvert"))
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError("alpha must be finite and >= 0")

    # -- set-up --------------------------------------------------------------------------
    def _config(self) -> dict[str, str]:
        return {
            "dim": str(self.dim),
            "arms": ",".join(self.arms),
            "lam": repr(float(self.lam)),
            "prior_pulls": str(self.prior_pulls),
            "priors": json.dumps(self.priors, sort_keys=True),
        }

    def init(self) -> bool:
        """Create the state in Redis unless present (True if created); ValueError on a mismatch."""
        state = initial_state(
            self.dim, self.arms, priors=self.priors, prior_pulls=self.prior_pulls, lam=self.lam
        )
        fields: dict[str, str | bytes] = dict(self._config())
        zero = struct.pack("<d", 0.0)
        for i, arm in enumerate(self.arms):
            fields |= {f"{arm}:m": pack(state.m[i]), f"{arm}:n": pack(state.n[i]), f"{arm}:reward_sum": zero}
            fields |= {f"{arm}:updates": "0", f"{arm}:since": "0", f"{arm}:pulls": "0"}
        created = bool(self._init(keys=[self.state_key], args=[v for kv in fields.items() for v in kv]))
        if not created:
            stored = self.client.hmget(self.state_key, list(self._config()))
            have = dict(
                zip(self._config(), (v.decode() if v is not None else None for v in stored), strict=True)
            )
            if have != self._config():
                raise ValueError(f"bandit state in Redis was created with {have}, not {self._config()}")
        return created

    # -- decide / update -----------------------------------------------------------------
    def decide(self, x: object, *, record: str | None = None, record_ttl: int = 0) -> Decision:
        """Choose an arm for context ``x`` in one round trip (ValueError on a bad shape, NaN, Inf).

        ``bandit_decide.lua`` counts the decision, scores every arm, chooses and counts the pull.
        With ``record`` (a hash key: the chat turn's, passed only by
        :meth:`shared.turns.TurnStore.decide`) it also stores ``arm``, ``propensity``,
        ``exploration``, ``x`` (packed float64), ``decision`` (its number) and ``alpha`` (the
        exploration weight it used, so offline evaluation knows which policy acted) there, expiring
        after ``record_ttl`` seconds when positive, so feedback can use the stored context.
        """
        xv = check_context(x, self.dim)
        keys = [self.decisions_key, self.state_key] + ([record] if record is not None else [])
        args = [
            pack(xv),
            self._alpha,
            self.warmup,
            struct.pack("<d", self.rng.random()),
            record_ttl,
            self._alpha_end,
            self._alpha_steps,
            self.rollup_prefix,
            repr(UCB_WIDTH),
            UCB_BUCKETS,
            *self.arms,
        ]
        with tracing.span("bandit decide", {"db.system": "redis"}) as span:
            reply = self._decide(keys=keys, args=args)
            if int(reply[0]) == -1:
                self.init()
                reply = self._decide(keys=keys, args=args)
            n, best, exploration, scores, alpha_blob = reply
            span.set_attributes({"opsdeck.bandit.arm": self.arms[best - 1], "opsdeck.bandit.decision": n,
                                 "opsdeck.bandit.exploration": exploration == 1})  # fmt: skip
        ucb = struct.unpack(self._scores_fmt, scores)
        propensity = 1.0 / len(self.arms) if n <= self.warmup else 1.0
        alpha = struct.unpack("<d", alpha_blob)[0]
        return Decision(
            self.arms[best - 1], dict(zip(self.arms, ucb, strict=True)), propensity, exploration == 1, alpha
        )

    def update(self, arm: str, x: object, reward: float, key: str) -> bool:
        """Learn ``reward`` for ``arm`` in context ``x`` once per rating ``key``; True if applied.

        ValueError on an unknown arm, a bad context or a NaN/Inf reward (nothing is written).
        """
        if arm not in self.arms:
            raise ValueError(f"unknown arm {arm!r}; expected one of {self.arms}")
        xv = check_context(x, self.dim)
        r = check_reward(reward)
        args = [arm, key, pack(xv), struct.pack("<d", r), self.window_size, self.log_maxlen,
                self.checkpoint_every, self.checkpoints_kept, self.rollup_prefix]  # fmt: skip
        keys = [self.state_key, self.rated_key, self.log_key, self.window_key,
                self.guard_key, self.checkpoints_key, self.meta_key]  # fmt: skip
        with tracing.span("bandit update", {"db.system": "redis", "opsdeck.bandit.arm": arm}) as span:
            result = self._update(keys=keys, args=args)
            if int(result[0]) == -1:
                self.init()
                result = self._update(keys=keys, args=args)
            span.set_attribute("opsdeck.bandit.applied", int(result[0]) == 1)
        if int(result[0]) != 1:
            return False
        if self.reinvert_every and int(result[2]) >= self.reinvert_every:
            self.reinvert(arm)
        if int(result[3]) == 1:  # a checkpoint was taken and its rollback check is still due
            self.check_rollback()
        return True

    # -- checkpoints and rollback (shared.bandit_checkpoints) --------------------------------
    def read_check(self) -> tuple[int, dict[str, Any]] | None:
        """``(applied, check)`` when a rollback check is due, read in one transaction, else None."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.meta_key)
            pipe.hmget(self.guard_key, ["applied", "pending"])
            raw, (applied, pending) = pipe.execute()
        if pending != b"1" or not raw:
            return None
        return int(applied or 0), evaluate(checkpoint_list(raw), self.policy)

    def resolve(self, applied: int, check: dict[str, Any]) -> str:
        """Act on ``check`` unless a rating was applied since ``applied`` was read: ``rolled back``,
        ``kept``, ``cooldown`` or ``raced`` (nothing changed; read and decide again)."""
        args = rollback_args("auto", check["target"], expected=applied, cooldown=self.policy.cooldown,
                             reason=check, log_maxlen=self.log_maxlen)  # fmt: skip
        with tracing.span("bandit rollback check", {"db.system": "redis"}) as span:
            result = self._rollback(keys=self._rollback_keys, args=args)
            outcome = "rolled back" if int(result[0]) == 1 else result[1].decode()
            span.set_attribute("opsdeck.bandit.rollback", outcome)
        if outcome == "rolled back":
            log.warning("bandit rolled back to checkpoint %s: %s", check["target"], check["why"])
        elif outcome == "cooldown":
            log.warning("bandit rollback to %s refused (cooldown): %s", check["target"], check["why"])
        return "kept" if outcome == "checked" else outcome

    def check_rollback(self, attempts: int = 3) -> str | None:
        """Run the due rollback check (None when none is due); on ``raced`` read and decide again,
        up to ``attempts`` times (then the check stays due and the next rating's worker runs it)."""
        outcome = None
        for _ in range(attempts):
            read = self.read_check()
            if read is None:
                return outcome
            outcome = self.resolve(*read)
            if outcome != "raced":
                return outcome
        return outcome

    def rollback(self, checkpoint: int) -> dict[str, Any]:
        """Manual rollback to a kept checkpoint (the coordinator's route does the same); the
        record; LookupError for an unknown checkpoint."""
        args = rollback_args("manual", checkpoint, expected=None, cooldown=0, reason={"why": "manual"},
                             log_maxlen=self.log_maxlen)  # fmt: skip
        result = self._rollback(keys=self._rollback_keys, args=args)
        if int(result[0]) != 1:
            raise LookupError(f"no kept checkpoint {checkpoint}")
        record: dict[str, Any] = orjson.loads(result[1])
        return record

    def checkpoints(self) -> list[dict[str, Any]]:
        """The kept checkpoints, newest first (as ``GET /api/v1/bandit`` lists them)."""
        return checkpoint_views(self.client.hgetall(self.meta_key))

    def rollbacks(self) -> list[dict[str, Any]]:
        """Every rollback record kept, newest first."""
        return [orjson.loads(r) for r in self.client.lrange(self.rollbacks_key, 0, -1)]

    def reinvert(self, arm: str) -> bool:
        """Recompute ``arm``'s ``[A⁻¹ | θ]`` from ``[A | b]`` (compare-and-set); True if written."""
        blob, updates, epoch = self.client.hmget(self.state_key, [f"{arm}:n", f"{arm}:updates", "epoch"])
        nmat = unpack(blob, (self.dim, self.dim + 1))
        a_inv, theta = inverse_and_theta(nmat[:, :-1], nmat[:, -1])
        m = np.concatenate([a_inv, theta[:, None]], axis=1)
        args = [arm, updates, pack(m), epoch or b"0"]
        return bool(self._reinvert(keys=[self.state_key], args=args))

    # -- reading -------------------------------------------------------------------------
    def load(self) -> BanditState:
        """The whole state as a :class:`BanditState` (one round trip)."""
        fields = [
            f"{arm}:{f}" for arm in self.arms for f in ("m", "n", "reward_sum", "updates", "pulls", "since")
        ]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.state_key, fields)
        pipe.get(self.decisions_key)
        values, decisions = pipe.execute()
        if any(v is None for v in values):
            raise LookupError("no bandit state in Redis (call init())")
        k, d = len(self.arms), self.dim
        state = BanditState(
            self.arms, np.empty(self._shape), np.empty(self._shape), [], [], [], [], int(decisions or 0)
        )
        for i in range(k):
            m, n, rsum, updates, pulls, since = values[6 * i : 6 * i + 6]
            state.m[i] = unpack(m, (d, d + 1))
            state.n[i] = unpack(n, (d, d + 1))
            state.reward_sum.append(struct.unpack("<d", rsum)[0])
            state.updates.append(int(updates))
            state.pulls.append(int(pulls))
            state.since.append(int(since))
        return state

    @property
    def phase(self) -> str:
        """``warmup`` until ``warmup`` decisions have been made by all processes, then ``learned``."""
        return "warmup" if int(self.client.get(self.decisions_key) or 0) < self.warmup else "learned"

    def window(self) -> RewardWindow:
        """The last ratings (oldest first) as a :class:`RewardWindow`."""
        items = []
        for raw in reversed(self.client.lrange(self.window_key, 0, self.window_size - 1)):
            arm, reward = raw.decode().split(" ")
            items.append((arm, float(reward)))
        return RewardWindow(self.window_size, items)

    def summary(self) -> dict[str, Any]:
        """The JSON-able view ``GET /api/v1/bandit`` shows (phase, alpha, per-arm counts, window)."""
        state = self.load()
        phase = "warmup" if state.decisions < self.warmup else "learned"
        alpha = current_alpha(self.alpha, self.schedule, state.decisions + 1, self.warmup)
        return summarise(state, alpha, phase, self.window().stats(), self.schedule)

    def current_alpha(self, decisions: int | None = None) -> float:
        """α of the next decision (after ``decisions``, read from Redis when not given)."""
        if decisions is None:
            decisions = int(self.client.get(self.decisions_key) or 0)
        return current_alpha(self.alpha, self.schedule, decisions + 1, self.warmup)

    def ratings(self, batch: int = 10_000) -> list[Rating]:
        """The ratings the model holds, in the order they were applied: every rating in the log,
        minus those a rollback discarded (a ``rollback`` entry names the log entry its
        checkpoint was taken at; the model goes back to the ratings held then)."""
        # a persistent list: each node is (rating, node before it) and every entry id maps to the
        # head after it, so a rollback to entry L makes the head what it was at L in O(1)
        head: tuple[Rating, Any] | None = None
        at: dict[bytes, tuple[Rating, Any] | None] = {}
        start = "-"
        while True:
            entries = self.client.xrange(self.log_key, min=start, count=batch)
            for entry_id, f in entries:
                if b"rollback" in f:
                    head = at.get(f[b"rollback"])
                else:
                    x = np.frombuffer(f[b"x"], dtype=_F8).astype(np.float64)
                    rating = Rating(f[b"k"].decode(), f[b"arm"].decode(), x, struct.unpack("<d", f[b"r"])[0])
                    head = (rating, head)
                at[entry_id] = head
            if len(entries) < batch:
                break
            start = "(" + entries[-1][0].decode()
        out: list[Rating] = []
        while head is not None:
            out.append(head[0])
            head = head[1]
        out.reverse()
        return out


def recompute(
    ratings: Iterable[Rating],
    dim: int = DIM,
    arms: Sequence[str] = ARMS,
    *,
    priors: Mapping[str, float] | None = PRIORS,
    prior_pulls: int = PRIOR_PULLS,
    lam: float = LAMBDA,
) -> BanditState:
    """The state a rating log implies, from scratch: ``A = A₀ + Σxxᵀ``, ``b = b₀ + Σrx``, LAPACK inverse.

    Duplicate keys in the log count once (as the update script counts them). Pulls and decisions
    are not in a rating log and stay 0.
    """
    state = initial_state(dim, arms, priors=priors, prior_pulls=prior_pulls, lam=lam)
    seen: set[str] = set()
    xs: list[list[np.ndarray[Any, np.dtype[np.float64]]]] = [[] for _ in arms]
    rs: list[list[float]] = [[] for _ in arms]
    for rating in ratings:
        if rating.key in seen:
            continue
        seen.add(rating.key)
        i = state.index(rating.arm)
        xs[i].append(check_context(rating.x, dim))
        rs[i].append(check_reward(rating.reward))
    for i in range(len(arms)):
        if xs[i]:
            big_x = np.stack(xs[i])
            r = np.array(rs[i])
            state.a[i] += big_x.T @ big_x
            state.b[i] += big_x.T @ r
            for value in rs[i]:
                state.reward_sum[i] += value
        state.updates[i] = len(xs[i])
        state.a_inv[i], state.theta[i] = inverse_and_theta(state.a[i], state.b[i])
    return state


def compare(actual: BanditState, expected: BanditState, atol: float = 1e-6) -> list[str]:
    """Differences between two states (empty when they agree); ``expected`` is usually recomputed.

    Checks per arm: update counts equal; ``A`` and ``b`` equal to 1e-9 relative; ``A⁻¹`` and ``θ``
    within ``atol``; and ``max |A⁻¹·A_expected − I| ≤ atol``, which is scale-free: once ``A`` is
    large, ``A⁻¹`` is small and an absolute tolerance on it alone would miss a lost update.
    """
    problems: list[str] = []
    eye = np.eye(expected.dim)
    for i, arm in enumerate(expected.arms):
        j = actual.index(arm)
        if actual.updates[j] != expected.updates[i]:
            problems.append(f"{arm}: {actual.updates[j]} updates, expected {expected.updates[i]}")
        if not np.allclose(actual.a[j], expected.a[i], rtol=1e-9, atol=1e-9):
            problems.append(f"{arm}: A differs by {np.abs(actual.a[j] - expected.a[i]).max():.3g}")
        if not np.allclose(actual.b[j], expected.b[i], rtol=1e-9, atol=1e-9):
            problems.append(f"{arm}: b differs by {np.abs(actual.b[j] - expected.b[i]).max():.3g}")
        err = float(np.abs(actual.a_inv[j] - expected.a_inv[i]).max())
        if err > atol:
            problems.append(f"{arm}: A⁻¹ differs by {err:.3g}")
        err = float(np.abs(actual.a_inv[j] @ expected.a[i] - eye).max())
        if err > atol:
            problems.append(f"{arm}: A⁻¹·A differs from I by {err:.3g}")
        err = float(np.abs(actual.theta[j] - expected.theta[i]).max())
        if err > atol:
            problems.append(f"{arm}: θ differs by {err:.3g}")
    return problems
