"""How deep JSON may nest: bodies are bounded at the edge, stored documents are read safely.

orjson parses 1,024 levels but encodes only 254, and pydantic's JSON parser stops at 200: a body
nested between those limits used to be accepted by one part and refused (with a 500) by the next
— at submit, or on every later read of the stored record. So every JSON body of both apps goes
through :func:`check_depth` before pydantic or an encoder sees it: no field's value may nest more
than MAX_JSON_DEPTH levels of objects and arrays (a 422 names the field and the limit).

The check costs two ``bytes.count`` calls for a body with few brackets — any body that cannot
be too deep — and walks the parsed document level by level (no recursion) only for the others.

Records stored before the limit existed may hold documents nested up to the encoder's limit;
:func:`read_stored` parses one for display and gives a marker instead of a document that could
not be encoded again inside a response (or is no JSON at all), so one record never fails a read.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from shared.errors import ValidationFailed

#: Most levels of objects and arrays a field of a JSON body may nest (``{}`` and ``[]`` are one
#: level, ``{"a": []}`` two); a body is one level more.
MAX_JSON_DEPTH = 64
#: Stored JSON nested deeper than this is shown as :func:`unreadable`: orjson encodes 254 levels
#: and a response wraps a record's field in at most a few more (``{"items": [{"payload": …}]}``).
MAX_STORED_DEPTH = 200
#: The ``msg`` of the field a 422 names.
TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels"

#: In a body that fails to parse: a string (a key when followed by a colon) or a bracket.
_TOKEN = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")


def deeper_than(value: Any, levels: int) -> bool:
    """True when ``value`` (parsed JSON) nests more than ``levels`` levels of dicts and lists.

    One pass per level over that level's containers, in comprehensions: no recursion (a
    thousand levels cost no stack) and nothing below ``levels + 1`` is visited."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(levels):
        if not level:
            return False
        level = [
            child
            for parent in level
            for child in (parent.values() if type(parent) is dict else parent)
            if type(child) is dict or type(child) is list
        ]
    return bool(level)


def too_deep(loc: list[str | int]) -> ValidationFailed:
    """The 422 for a value nested deeper than MAX_JSON_DEPTH at ``loc``."""
    where = ".".join(str(part) for part in loc)
    return ValidationFailed(
        f"{where} is nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays",
        fields=[{"loc": loc, "msg": TOO_DEEP}],
    )


_UNPARSED: Any = object()


def check_depth(body: bytes | str, data: Any = _UNPARSED, *, root: str = "body") -> None:
    """Refuse a JSON body nested deeper than MAX_JSON_DEPTH below its top level: ValidationFailed
    (422) naming the top-level field (``[root, key]``; ``[root]`` for a body that is no object).

    ``data``: the body already parsed by orjson, if the caller has it. A body that is no valid
    JSON passes unless it is too deep for orjson itself (the caller's parser reports the rest)."""
    raw = body.encode() if isinstance(body, str) else body
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH + 1:
        return  # fewer opening brackets than levels: cannot be too deep (the hot path)
    if data is _UNPARSED:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise too_deep(_deep_loc(raw, root)) from None
            return
    if type(data) is dict:
        for key, value in data.items():
            if deeper_than(value, MAX_JSON_DEPTH):
                raise too_deep([root, key])
    elif deeper_than(data, MAX_JSON_DEPTH + 1):
        raise too_deep([root])


def _deep_loc(raw: bytes, root: str) -> list[str | int]:
    """Where a body orjson refused as too deep (> 1,024 levels) passes MAX_JSON_DEPTH: the
    top-level key it is under (``[root]`` when the body is no object). Scans the text once."""
    depth = 0
    key: str | None = None
    top_is_object = raw.lstrip()[:1] == b"{"
    for token in _TOKEN.finditer(raw):
        text = token.group(0)
        if text[0] in _OPEN:
            depth += 1
            if depth > MAX_JSON_DEPTH + 1:
                return [root, key] if top_is_object and key is not None else [root]
        elif text[0] != 0x22:  # a closing bracket
            depth -= 1
        elif depth == 1 and token.group(2):  # a top-level key
            try:
                key = orjson.loads(token.group(1))
            except orjson.JSONDecodeError:
                key = token.group(1)[1:-1].decode(errors="replace")
    return [root]


def unreadable(field: str, why: str) -> dict[str, str]:
    """What a read shows in place of a stored document it cannot show."""
    return {"_unreadable": f"{field} {why}; not shown"}


def read_stored(text: bytes | str, field: str) -> Any:
    """A stored JSON document for display: parsed, or :func:`unreadable` when it is no valid JSON
    or nests deeper than MAX_STORED_DEPTH (stored by a version without the body limit)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            return unreadable(field, _STORED_TOO_DEEP)
        return unreadable(field, "is not valid JSON")
    opens = (
        text.count(b"{") + text.count(b"[") if isinstance(text, bytes) else text.count("{") + text.count("[")
    )
    if opens > MAX_STORED_DEPTH and deeper_than(value, MAX_STORED_DEPTH):
        return unreadable(field, _STORED_TOO_DEEP)
    return value


_STORED_TOO_DEEP = f"is nested deeper than {MAX_STORED_DEPTH} levels"
