"""Context features of one chat turn, for the coaching bandit (float64, ``DIM`` = 11).

Every feature is bounded to ``[0, 1]`` so no single one dominates the ridge regression and the
confidence bonus stays comparable between turns. Index, name and meaning:

====  ===============  ==============================================================================
 0    ``bias``         always 1.0 (the intercept; the arms' priors live on this coordinate)
 1    ``length``       message length in words, ``min(words, 60) / 60``
 2    ``question``     1.0 if the message contains ``?`` (the prospect asks something)
 3    ``objection``    objection phrases ("not sure", "too expensive", "no time", ...), ``min(n, 2) / 2``
 4    ``price``        price words ("price", "cost", "budget", "discount", "$", ...), ``min(n, 2) / 2``
 5    ``competitor``   competitor words ("competitor", "alternative", "switch", ...), ``min(n, 2) / 2``
 6    ``urgency``      urgency words ("asap", "today", "deadline", "urgent", ...), ``min(n, 2) / 2``
 7    ``turn``         turn index in the session, ``min(turn, 20) / 20``
 8    ``discovery``    1.0 if the session stage is ``discovery``
 9    ``negotiation``  1.0 if the session stage is ``negotiation``
10    ``closing``      1.0 if the session stage is ``closing``
====  ===============  ==============================================================================

The stage is one-hot with ``opening`` as the reference level (all three stage features 0), so the
stage columns are not collinear with the bias. When the caller has no stage, :func:`infer_stage`
derives one from the turn index and the keywords. Keyword matching is on lower-cased word tokens
(multi-word phrases on the normalised text), counted once per distinct keyword.
"""

from __future__ import annotations

import math
import re
from typing import Final

import numpy as np
import numpy.typing as npt

#: Names of the features, in vector order.
FEATURE_NAMES: Final = (
    "bias",
    "length",
    "question",
    "objection",
    "price",
    "competitor",
    "urgency",
    "turn",
    "discovery",
    "negotiation",
    "closing",
)
#: Dimension of a context vector.
DIM: Final = len(FEATURE_NAMES)
#: Session stages; ``opening`` is the reference level of the one-hot encoding.
STAGES: Final = ("opening", "discovery", "negotiation", "closing")
#: Word count at which ``length`` saturates at 1.0.
MAX_WORDS: Final = 60
#: Turn index at which ``turn`` saturates at 1.0.
MAX_TURN: Final = 20
#: Keyword count at which a keyword feature saturates at 1.0.
MAX_HITS: Final = 2

OBJECTION: Final = frozenset(
    {"not sure", "not interested", "too expensive", "no time", "don't need", "do not need", "concern",
     "concerned", "worried", "however", "problem", "risk", "hesitant", "doubt", "can't", "cannot",
     "won't", "already have", "not convinced"}
)  # fmt: skip
PRICE: Final = frozenset(
    {"price", "pricing", "cost", "costs", "budget", "discount", "expensive", "cheap", "cheaper", "fee",
     "fees", "invoice", "quote", "license", "licence", "subscription", "pay", "roi", "$", "€", "£"}
)  # fmt: skip
COMPETITOR: Final = frozenset(
    {"competitor", "competitors", "competition", "alternative", "alternatives", "vendor", "vendors",
     "switch", "switching", "instead", "versus", "vs", "compared", "comparison", "other provider"}
)  # fmt: skip
URGENCY: Final = frozenset(
    {"asap", "urgent", "urgently", "today", "tomorrow", "now", "immediately", "deadline", "quickly",
     "soon", "this week", "end of quarter", "right away"}
)  # fmt: skip

_WORD = re.compile(r"[a-z0-9']+|[$€£]")


def _hits(tokens: frozenset[str], text: str, keywords: frozenset[str]) -> float:
    """Distinct keywords present (single words by token, phrases by substring), scaled to [0, 1]."""
    n = sum(1 for k in keywords if (k in text if " " in k else k in tokens))
    return min(n, MAX_HITS) / MAX_HITS


def infer_stage(message: str, turn: int) -> str:
    """A stage for a session that reports none: price talk → negotiation, else by turn index."""
    text = message.lower()
    tokens = frozenset(_WORD.findall(text))
    if turn >= 8:
        return "closing"
    if _hits(tokens, text, PRICE) > 0 and turn >= 2:
        return "negotiation"
    return "opening" if turn < 2 else "discovery"


def features(message: str, turn: int, stage: str | None = None) -> npt.NDArray[np.float64]:
    """The context vector (shape ``(DIM,)``, float64, every entry in [0, 1]) of one chat turn.

    ``turn`` is the 0-based turn index in the session; ``stage`` one of :data:`STAGES` (inferred
    with :func:`infer_stage` when None). Raises ValueError on a negative or non-integer turn or an
    unknown stage.
    """
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        raise ValueError(f"turn must be a non-negative integer, got {turn!r}")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    stage = infer_stage(message, turn) if stage is None else stage
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    text = " ".join(message.lower().split())
    words = _WORD.findall(text)
    tokens = frozenset(words)
    x = np.zeros(DIM, dtype=np.float64)
    x[0] = 1.0
    x[1] = min(len(words), MAX_WORDS) / MAX_WORDS
    x[2] = 1.0 if "?" in text else 0.0
    x[3] = _hits(tokens, text, OBJECTION)
    x[4] = _hits(tokens, text, PRICE)
    x[5] = _hits(tokens, text, COMPETITOR)
    x[6] = _hits(tokens, text, URGENCY)
    x[7] = min(turn, MAX_TURN) / MAX_TURN
    if stage != "opening":
        x[7 + STAGES.index(stage)] = 1.0
    return x


def check_context(x: object, dim: int) -> npt.NDArray[np.float64]:
    """``x`` as a contiguous float64 vector of length ``dim``; ValueError if not, or if NaN/Inf."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.shape != (dim,):
        raise ValueError(f"context must have shape ({dim},), got {arr.shape}")
    # The sum of a finite vector is finite unless it overflows (then the exact check decides);
    # summing the list is several times cheaper than numpy's reductions for a vector this short.
    if not math.isfinite(sum(arr.tolist())) and not np.isfinite(arr).all():
        raise ValueError("context contains NaN or Inf")
    return arr
