"""The bandit's exploration schedule (``BANDIT_ALPHA_SCHEDULE``): α as a function of the shared
decision count, read by the worker (``bandit_decide.lua`` computes the same number) and by the
coordinator (``GET /api/v1/bandit``), so neither imports the other.

Without a schedule every decision uses ``BANDIT_ALPHA``. ``linear:<start>:<end>:<decisions>``
keeps ``start`` through warm-up, then moves α linearly from ``start`` to ``end`` over the next
``decisions`` decisions of all processes together and stays at ``end``: decision number ``n``
(1-based, the shared counter) uses, with ``t = n − warmup``::

    α(n) = start                                   t ≤ 0 (warm-up)
    α(n) = start + (end − start) · (t / decisions)   0 < t < decisions
    α(n) = end                                     t ≥ decisions

(the same operations in the same order as the Lua script, so both give the same double).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

#: The one schedule kind so far.
KINDS: Final = ("linear",)
#: Largest α accepted (as ``BANDIT_ALPHA``).
MAX_ALPHA: Final = 100.0


@dataclass(frozen=True, slots=True)
class AlphaSchedule:
    """A linear decay of α over ``decisions`` decisions after warm-up (module docstring)."""

    start: float
    end: float
    decisions: int
    kind: str = "linear"

    def at(self, n: int, warmup: int) -> float:
        """α of decision number ``n`` (1-based, shared counter) with ``warmup`` warm-up decisions."""
        t = n - warmup
        if t <= 0:
            return self.start
        if t >= self.decisions:
            return self.end
        return self.start + (self.end - self.start) * (t / self.decisions)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form ``GET /api/v1/bandit`` shows."""
        return {"kind": self.kind, "start": self.start, "end": self.end, "decisions": self.decisions}

    def __str__(self) -> str:
        return f"{self.kind}:{self.start!r}:{self.end!r}:{self.decisions}"


def parse_schedule(text: str | None) -> AlphaSchedule | None:
    """``linear:<start>:<end>:<decisions>`` as an :class:`AlphaSchedule`; empty or ``off`` is None.

    ValueError with the expected form for anything else (α values finite, 0–100; decisions ≥ 1).
    """
    text = (text or "").strip()
    if not text or text.lower() in ("off", "none", "constant"):
        return None
    form = "expected linear:<start>:<end>:<decisions>, e.g. linear:1.0:0.25:10000"
    parts = text.split(":")
    if len(parts) != 4 or parts[0].lower() not in KINDS:
        raise ValueError(f"{text!r}: {form}")
    try:
        start, end = float(parts[1]), float(parts[2])
        decisions = int(parts[3])
    except ValueError:
        raise ValueError(f"{text!r}: {form}") from None
    for value in (start, end):
        if not (math.isfinite(value) and 0 <= value <= MAX_ALPHA):
            raise ValueError(f"{text!r}: alpha values must be from 0 to {MAX_ALPHA:g}")
    if decisions < 1:
        raise ValueError(f"{text!r}: decisions must be at least 1")
    return AlphaSchedule(start, end, decisions)


def current_alpha(alpha: float, schedule: AlphaSchedule | None, n: int, warmup: int) -> float:
    """α of decision ``n``: the schedule's when there is one, else the constant ``alpha``."""
    return alpha if schedule is None else schedule.at(n, warmup)
