"""LLM model tiers: their names, the traffic mix (``LLM_TIER_WEIGHTS``) and the per-turn draw.

Both sides use it: the worker routes each turn with :func:`pick` and the coordinator lists the
configured tiers. ``LLM_TIER_WEIGHTS`` is ``tier=weight`` pairs separated by commas
(``fast=60,balanced=30,creative=10``); a tier not named has weight 0; :func:`shares` keeps the
tiers that have a model and a positive weight and renormalises them to 1.

The draw is reproducible: :func:`turn_draw` hashes the session id and turn number into a
uniform number in [0, 1), so the same turn is routed to the same tier on every worker and on a
redelivery, while many turns realise the weights.

**Healthy** (:func:`tier_health`, what ``GET /health/llm`` answers): a tier is healthy when a
worker has reported a call to it (traffic or an idle-tier probe) and that last report says

1. its circuit breaker is ``closed`` (the worse of the service's and the tier's breaker), and
2. the call's outcome was ``ok`` (or ``rejected``: the guard refused the answer's content, the
   model itself answered), and
3. the report is not stale: at most ``2 × LLM_PROBE_INTERVAL + LLM_TIMEOUT`` old (an idle tier is
   probed every interval by some worker, so an older report means nobody is checking it; no
   staleness rule when probes are off).

Anything else is unhealthy, with the reason: never reported, breaker open / half-open, the last
call failed (its error), or stale.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, Final

#: Model tiers, most capable first (the downshift order: creative → balanced → fast).
TIERS: Final = ("creative", "balanced", "fast")
#: ``LLM_TIER_WEIGHTS`` when unset.
DEFAULT_WEIGHTS: Final = "fast=60,balanced=30,creative=10"


def parse_weights(text: str) -> dict[str, float]:
    """``tier=weight,…`` as a weight per tier (every tier, 0 when not named); ValueError saying
    what is wrong (unknown tier, a weight that is not a finite number ≥ 0, a tier named twice,
    no positive weight)."""
    weights = dict.fromkeys(TIERS, 0.0)
    seen: set[str] = set()
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"{part.strip()!r}: expected tier=weight, e.g. {DEFAULT_WEIGHTS}")
        if name not in weights:
            raise ValueError(f"unknown tier {name!r} (expected {', '.join(TIERS)})")
        if name in seen:
            raise ValueError(f"tier {name!r} is named twice")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{name}: weight {value.strip()!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{name}: weight must be a finite number >= 0")
        seen.add(name)
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("at least one tier needs a positive weight")
    return weights


def shares(weights: Mapping[str, float], configured: tuple[str, ...] | list[str]) -> dict[str, float]:
    """The traffic share of each configured tier with a positive weight (most capable first,
    summing to 1); empty when no configured tier has weight."""
    kept = {t: float(weights.get(t, 0.0)) for t in TIERS if t in configured and weights.get(t, 0.0) > 0}
    total = sum(kept.values())
    return {t: w / total for t, w in kept.items()} if total > 0 else {}


def turn_draw(session_id: str, turn_number: int) -> float:
    """A uniform number in [0, 1) fixed by the session and the turn (SHA-256, 53 bits)."""
    digest = hashlib.sha256(f"llm-tier\x1f{session_id}\x1f{turn_number}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def pick(share: Mapping[str, float], draw: float) -> str:
    """The tier whose cumulative share interval holds ``draw`` (tiers in :data:`TIERS` order)."""
    tiers = [t for t in TIERS if t in share]
    total = 0.0
    for tier in tiers:
        total += share[tier]
        if draw < total:
            return tier
    return tiers[-1]  # draw within rounding of 1


#: Outcomes that say the model answered (``rejected``: the guard refused what it said).
ANSWERED: Final = ("ok", "rejected")


def tier_health(record: Mapping[str, Any] | None, now_ms: int, stale_after: float | None) -> str | None:
    """None when the tier's last report makes it healthy (module docstring), else why not."""
    if record is None:
        return "no worker has reported a call to this tier yet"
    if not record:
        return "unreadable report"
    breaker = record.get("breaker")
    if breaker != "closed":
        return f"breaker {breaker}"
    if record.get("outcome") not in ANSWERED:
        detail = record.get("detail") or record.get("outcome")
        return f"last call failed: {detail}"
    try:
        age = max(0.0, (now_ms - int(record["at"])) / 1000)
    except (KeyError, TypeError, ValueError):
        return "unreadable report"
    if stale_after is not None and age > stale_after:
        return f"stale: last call {age:.0f} s ago (older than {stale_after:g} s)"
    return None
