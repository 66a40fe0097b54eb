"""Checkpoints of the shared bandit and the rollback rule (issue 18, part 4), shared by the worker
(automatic checks), the coordinator (``GET /api/v1/bandit``, ``POST /api/v1/bandit/rollback``) and
the dashboard's bandit page (:func:`manual_rollback`).

**Checkpoints.** Every ``BANDIT_CHECKPOINT_EVERY`` (500) applied ratings ``bandit_update.lua``
copies the whole model into Redis in the same atomic call as the rating that crossed the period,
with the sums of its *window*: the rewards (``(rating − 1) / 4`` ∈ [0, 1]) of the ratings applied
since the previous checkpoint, per arm (count, sum, sum of squares). The last
``BANDIT_CHECKPOINTS_KEPT`` are kept.

**The check** runs once per new checkpoint (the newest window is "the windowed reward since the
checkpoint before") against the *best recent* one: the kept checkpoint, other than the newest,
whose window has the highest mean reward. It rolls back to it when both one-sided tests reject at
level ``p`` = ``BANDIT_ROLLBACK_SIGNIFICANCE`` (0.001) with a Bonferroni correction for having
picked the best of the ``k`` compared windows (critical value ``z* = Φ⁻¹(1 − p/k)``), both windows
holding at least ``BANDIT_ROLLBACK_MIN_SAMPLES`` (200) ratings:

1. *The reward dropped* — Welch's statistic on the two windows' means,
   ``z = (m_best − m_now) / sqrt(s²_best/n_best + s²_now/n_now)`` (sample variances, unequal
   allowed). With ≥ 200 bounded rewards per window the t distribution with Welch–Satterthwaite
   degrees of freedom (≥ ~200) is the normal one to within 1 % in the tail used, so ``z*`` is the
   normal quantile (slightly anti-conservative, far below the Bonferroni slack).
2. *The model is why* — a drop alone cannot tell poisoned learning from an honest change of the
   world (the best arm got worse for everyone; rolling back would restore the same choices and not
   the reward). The second test asks whether the checkpoint's *arm mix* would earn more than the
   current one **at today's per-arm rewards**: ``Δ = Σ_a (w_best(a) − w_now(a))·μ̂_a`` with
   ``w`` each window's share of ratings per arm and ``μ̂_a`` the arm's mean in the newest window
   (in the best window when the newest has fewer than :data:`MIN_ARM_RATINGS` of it; the least
   favourable value 0 or 1 when neither has: the test stays conservative);
   ``z = Δ / sqrt(Σ_a (w_best(a) − w_now(a))² s²_a / n_a)``. An honest drift leaves the mix where
   it was until the model adapts (Δ ≈ 0) and then moves it towards the arms that are better now
   (Δ < 0); a poisoned model moved its mix away from the arms that still earn (Δ ≫ 0).

Rejecting both is an intersection-union test, valid at level ``p`` without a further correction.
The arm mix summarises a contextual policy by its marginal arm shares: a poisoning that only
reorders choices within contexts, leaving the shares alone, is not seen by test 2.

**Rollback** (``shared/lua/bandit_rollback.lua``) restores the checkpoint atomically. An automatic
one is a compare-and-set on the ``applied`` count its check read: a rating applied between that
read and the script makes it refuse (``raced``), and the worker reads and decides again, so no
rating is discarded that the decision did not see. At most one automatic rollback per
``BANDIT_ROLLBACK_COOLDOWN`` (48 h). Manual rollbacks (``POST /api/v1/bandit/rollback``, scope
``admin``) go to any kept checkpoint and discard what was applied after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from shared.keys import Keys
from shared.store import script_source

#: Ratings of an arm a window needs before its mean stands for the arm in test 2.
MIN_ARM_RATINGS: Final = 20
#: The rating log's cap (approximate trimming) the worker's model uses (``worker.bandit.redis_state``).
LOG_MAXLEN: Final = 1_000_000
#: Rollback records kept (newest first).
ROLLBACKS_KEPT: Final = 100
#: Rollback records ``GET /api/v1/bandit`` shows.
ROLLBACKS_SHOWN: Final = 10
#: Largest |z| stored (a zero variance gives an infinite statistic; JSON has no infinity).
Z_CAP: Final = 1e9


@dataclass(frozen=True, slots=True)
class RollbackPolicy:
    """When the check rolls back (module docstring)."""

    min_samples: int = 200
    significance: float = 0.001
    cooldown: float = 48 * 3600.0


@dataclass(frozen=True, slots=True)
class ArmSums:
    """Count, sum and sum of squares of one arm's rewards in a window."""

    n: int
    s: float
    q: float

    @property
    def mean(self) -> float:
        return self.s / self.n if self.n else math.nan

    @property
    def var(self) -> float:
        """Sample variance (0 with fewer than 2 ratings)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.q - self.s * self.s / self.n) / (self.n - 1))


def window_of(meta: dict[str, Any]) -> dict[str, ArmSums]:
    """Per-arm sums of a checkpoint's window (from its meta JSON)."""
    return {arm: ArmSums(int(v[0]), float(v[1]), float(v[2])) for arm, v in (meta.get("arms") or {}).items()}


def total(window: dict[str, ArmSums]) -> ArmSums:
    """The whole window's sums."""
    return ArmSums(
        sum(a.n for a in window.values()),
        math.fsum(a.s for a in window.values()),
        math.fsum(a.q for a in window.values()),
    )


def window_view(window: dict[str, ArmSums]) -> dict[str, Any]:
    """``{"count", "mean", "std", "arms": {arm: {"count", "mean"}}}`` of a window (rewards 0–1)."""
    t = total(window)
    return {
        "count": t.n,
        "mean": t.mean if t.n else None,
        "std": math.sqrt(t.var) if t.n else None,
        "arms": {arm: {"count": a.n, "mean": a.mean if a.n else None} for arm, a in window.items() if a.n},
    }


def _z(diff: float, var: float) -> float:
    if var > 0:
        return max(-Z_CAP, min(Z_CAP, diff / math.sqrt(var)))
    return Z_CAP if diff > 1e-12 else (-Z_CAP if diff < -1e-12 else 0.0)


def welch_z(best: ArmSums, now: ArmSums) -> float:
    """Test 1: ``(m_best − m_now) / sqrt(s²_best/n_best + s²_now/n_now)``."""
    return _z(best.mean - now.mean, best.var / best.n + now.var / now.n)


def mix_contrast(best: dict[str, ArmSums], now: dict[str, ArmSums]) -> tuple[float, float]:
    """Test 2: ``(Δ, z)`` — what the best window's arm mix earns at today's per-arm rewards,
    minus what the newest window's mix earns (module docstring)."""
    nb, nn = total(best).n, total(now).n
    delta = 0.0
    var = 0.0
    for arm in sorted(set(best) | set(now)):
        b = best.get(arm, ArmSums(0, 0.0, 0.0))
        n = now.get(arm, ArmSums(0, 0.0, 0.0))
        c = b.n / nb - n.n / nn
        if c == 0:
            continue
        source = n if n.n >= MIN_ARM_RATINGS else b if b.n >= MIN_ARM_RATINGS else None
        if source is None:  # no estimate of the arm: the value least favourable to a rollback
            delta += c * (0.0 if c > 0 else 1.0)
            continue
        delta += c * source.mean
        var += c * c * source.var / source.n
    return delta, _z(delta, var)


def evaluate(metas: list[dict[str, Any]], policy: RollbackPolicy) -> dict[str, Any]:
    """The check of the newest checkpoint (last of ``metas``, oldest first) against the best
    earlier one; ``target`` is the checkpoint to roll back to, or None (``why`` says why not)."""
    newest = metas[-1]
    now = window_of(newest)
    now_total = total(now)
    out: dict[str, Any] = {"checkpoint": newest["id"], "target": None, "window": window_view(now)}
    eligible = [m for m in metas[:-1] if total(window_of(m)).n >= policy.min_samples]
    if now_total.n < policy.min_samples or not eligible:
        out["why"] = f"fewer than {policy.min_samples} ratings in the windows compared"
        return out
    best = max(eligible, key=lambda m: (total(window_of(m)).mean, m["id"]))
    best_window = window_of(best)
    z_crit = NormalDist().inv_cdf(1 - policy.significance / len(eligible))
    z_drop = welch_z(total(best_window), now_total)
    delta, z_mix = mix_contrast(best_window, now)
    out |= {
        "best": best["id"],
        "best_window": window_view(best_window),
        "compared": len(eligible),
        "z_critical": z_crit,
        "z_drop": z_drop,
        "mix_delta": delta,
        "z_mix": z_mix,
    }
    if z_drop <= z_crit:
        out["why"] = f"no significant drop (z {z_drop:.2f} <= {z_crit:.2f})"
    elif z_mix <= z_crit:
        out["why"] = (
            f"reward dropped (z {z_drop:.2f}) but not because of the model: the best checkpoint's arm mix "
            f"would not earn more now (z {z_mix:.2f} <= {z_crit:.2f}): the world changed"
        )
    else:
        out["target"] = best["id"]
        out["why"] = (
            f"window reward {now_total.mean:.3f} below checkpoint {best['id']}'s "
            f"{total(best_window).mean:.3f} (z {z_drop:.2f}), and its arm mix would earn {delta:.3f} more "
            f"at today's per-arm rewards (z {z_mix:.2f}); critical z {z_crit:.2f} "
            f"(p {policy.significance:g} / {len(eligible)})"
        )
    return out


def checkpoint_list(raw: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """The meta hash's checkpoints, oldest first."""
    metas = [orjson.loads(v) for v in raw.values()]
    return sorted(metas, key=lambda m: int(m["id"]))


def checkpoint_views(raw: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """Kept checkpoints for ``GET /api/v1/bandit``, newest first."""
    return [
        {
            "id": int(m["id"]),
            "applied": int(m["applied"]),
            "created_ms": int(m["created_ms"]),
            "reward": window_view(window_of(m)),
        }
        for m in reversed(checkpoint_list(raw))
    ]


def rollback_keys(keys: Keys, name: str = "coach") -> list[str]:
    """KEYS of ``bandit_rollback.lua``."""
    return [
        keys.bandit_state(name),
        keys.bandit_guard(name),
        keys.bandit_checkpoints(name),
        keys.bandit_checkpoint_meta(name),
        keys.bandit_log(name),
        keys.bandit_rollbacks(name),
    ]


def rollback_args(
    trigger: str,
    checkpoint: int | None,
    *,
    expected: int | None,
    cooldown: float,
    reason: dict[str, Any],
    log_maxlen: int,
) -> list[str | int | bytes]:
    """ARGV of ``bandit_rollback.lua``."""
    return [
        trigger,
        "" if checkpoint is None else str(checkpoint),
        "" if expected is None else str(expected),
        int(cooldown * 1000),
        orjson.dumps(reason),
        ROLLBACKS_KEPT,
        log_maxlen,
    ]


def rollback_source() -> str:
    """The text of ``shared/lua/bandit_rollback.lua``."""
    return script_source("bandit_rollback")


async def manual_rollback(
    client: aioredis.Redis, keys: Keys, checkpoint: int, subject: str, name: str = "coach"
) -> dict[str, Any] | None:
    """Roll the shared model back to a kept checkpoint by hand (``POST /api/v1/bandit/rollback``
    on the coordinator, the dashboard's bandit page): the rollback record, or None when
    ``checkpoint`` is not kept. ``subject`` (who asked) is stored in the record's reason."""
    reason = {"why": "manual", "subject": subject}
    args = rollback_args(
        "manual", checkpoint, expected=None, cooldown=0, reason=reason, log_maxlen=LOG_MAXLEN
    )
    script = client.register_script(rollback_source())
    result = await script(keys=rollback_keys(keys, name), args=args)
    if int(result[0]) != 1:
        return None
    record: dict[str, Any] = orjson.loads(result[1])
    return record
