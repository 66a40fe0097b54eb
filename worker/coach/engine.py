"""The built-in suggestion engine: deterministic, offline, driven by the playbook.

For the chosen arm it picks the playbook entry whose keywords best match the message — ``npc``
a persona to role-play, ``tools`` a technique, ``knowledge`` a product fact — and renders it as
one suggestion. Keywords match lower-cased word tokens (phrases and hyphenated keywords match the
normalised text), each distinct keyword once. Ties (including "no keyword matched") are broken by
a hash of the session id and turn, so the same turn always gets the same answer while different
sessions see variety; a persona's reply line is chosen the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from shared.playbook import Fact, Persona, Playbook, Technique

_WORD = re.compile(r"[a-z0-9']+|[$€£]")
E = TypeVar("E", Persona, Technique, Fact)

#: Where a suggestion came from.
SOURCES = ("builtin", "llm", "cache", "fallback")


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One coaching suggestion and the path that produced it."""

    text: str
    arm: str
    entry_id: str
    title: str
    source: str = "builtin"
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (the coach task's result and the turn record)."""
        return asdict(self)


def _stable_index(n: int, *parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def keyword_score(keywords: Sequence[str], text: str, tokens: frozenset[str]) -> int:
    """Distinct keywords of an entry present in the message."""
    return sum(1 for k in set(keywords) if (k in text if (" " in k or "-" in k) else k in tokens))


def best_entry(entries: Sequence[E], message: str, *seed: object) -> E:
    """The entry with the most matching keywords; ties broken by ``seed`` (deterministic)."""
    text = " ".join(message.lower().split())
    tokens = frozenset(_WORD.findall(text))
    scores = [keyword_score(e.keywords, text, tokens) for e in entries]
    top = max(scores)
    tied = [e for e, s in zip(entries, scores, strict=True) if s == top]
    return tied[_stable_index(len(tied), *seed)]


class BuiltinEngine:
    """Suggestions from a :class:`~shared.playbook.Playbook` (module docstring)."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook

    def suggest(self, arm: str, message: str, *, session_id: str, turn_number: int) -> Suggestion:
        """The suggestion for ``arm`` (``npc``, ``tools`` or ``knowledge``); ValueError for others."""
        if arm == "npc":
            persona = best_entry(self.playbook.personas, message, session_id)
            line = persona.replies[_stable_index(len(persona.replies), session_id, turn_number)]
            return Suggestion(f'{persona.name}: "{line}"', arm, persona.id, persona.name)
        if arm == "tools":
            t = best_entry(self.playbook.techniques, message, session_id, turn_number)
            return Suggestion(f'{t.name}: {t.advice} Try: "{t.example}"', arm, t.id, t.name)
        if arm == "knowledge":
            f = best_entry(self.playbook.facts, message, session_id, turn_number)
            return Suggestion(f"{f.topic}: {f.fact}", arm, f.id, f.topic)
        raise ValueError(f"unknown arm {arm!r}")

    def context(self, arm: str, suggestion: Suggestion) -> str:
        """The playbook entry behind ``suggestion``, as grounding text for an LLM prompt."""
        section = {
            "npc": self.playbook.personas,
            "tools": self.playbook.techniques,
            "knowledge": self.playbook.facts,
        }
        for entry in section[arm]:
            if entry.id == suggestion.entry_id:
                return entry.model_dump_json(exclude={"keywords"})
        return suggestion.text
