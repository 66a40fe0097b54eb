"""LLM model tiers: their names, the traffic mix (``LLM_TIER_WEIGHTS``) and the per-turn draw.

Both sides use it: the worker routes each turn with :func:`pick` and the coordinator lists the
configured tiers. ``LLM_TIER_WEIGHTS`` is ``tier=weight`` pairs separated by commas
(``fast=60,balanced=30,creative=10``); a tier not named has weight 0; :func:`shares` keeps the
tiers that have a model and a positive weight and renormalises them to 1.

The draw is reproducible: :func:`turn_draw` hashes the session id and turn number into a
uniform number in [0, 1), so the same turn is routed to the same tier on every worker and on a
redelivery, while many turns realise the weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Final

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
