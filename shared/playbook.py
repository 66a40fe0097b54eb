"""The coaching playbook's schema: personas (``npc``), techniques (``tools``), product facts
(``knowledge``), each with keywords that match a chat message.

The worker ships one (``worker/coach/playbook.json``); ``KNOWLEDGE_BASE_PATH`` names a replacement
that every process validates when it loads its settings, so a bad file stops the start with one
clear line (``KNOWLEDGE_BASE_PATH: <file>: <what is wrong>``) instead of failing chat turns later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

Keyword = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=60)]
EntryId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: EntryId
    keywords: tuple[Keyword, ...] = Field(default=(), max_length=100)


class Persona(_Entry):
    """A prospect to role-play (``npc``): who they are and lines they say."""

    name: Text
    description: Text
    replies: tuple[Text, ...] = Field(min_length=1, max_length=50)


class Technique(_Entry):
    """A sales technique (``tools``): when to use it and an example line."""

    name: Text
    advice: Text
    example: Text


class Fact(_Entry):
    """A product fact (``knowledge``) that answers a question or an objection."""

    topic: Text
    fact: Text


class Playbook(BaseModel):
    """The whole playbook; ids are unique within each section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    product: Text
    personas: tuple[Persona, ...] = Field(min_length=1, max_length=1000)
    techniques: tuple[Technique, ...] = Field(min_length=1, max_length=1000)
    facts: tuple[Fact, ...] = Field(min_length=1, max_length=5000)

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        for section in ("personas", "techniques", "facts"):
            ids = [e.id for e in getattr(self, section)]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{section}: duplicate ids {dupes}")
        return self


def load_playbook(path: Path | str) -> Playbook:
    """Read and validate a playbook file; ValueError naming the file and the first problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ValueError(f"{path}: {where}: {first['msg']}{more}") from None
