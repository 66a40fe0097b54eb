"""How deep JSON may nest: bodies are bounded at the edge, stored documents are read safely.

orjson parses 1,024 levels but encodes only 254, and pydantic's JSON parser stops at 200: a body
nested between those limits used to be accepted by one part and refused (with a 500) by the next
— at submit, or on every later read of the stored record. So every JSON body of both apps goes
through :func:`check_depth` before pydantic or an encoder sees it: no field's value may nest more
than MAX_JSON_DEPTH levels of objects and arrays (a 422 names the field and the limit).

The check costs a ``len`` for a short body (the coordinator's hot path) and two ``bytes.count``
calls for one with few brackets — bodies that cannot be too deep; the others are measured on the
parsed document by orjson's encoder (:func:`deeper_than`: C speed, no recursion in Python).

Records stored before the limit existed may hold documents nested up to the encoder's limit;
:func:`read_stored` parses one for display and gives a marker instead of a document that could
not be encoded again inside a response (or is no JSON at all), so one record never fails a read.
"""

from __future__ import annotations

import re
import threading
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
#: Bytes of the shortest body nested too deep (``[[…]]``, MAX_JSON_DEPTH + 2 levels): a hot
#: path may skip the call for a shorter body.
SHORTEST_TOO_DEEP = 2 * (MAX_JSON_DEPTH + 2)
#: Bodies shorter than this (bytes) with a parse at hand are counted for brackets first.
COUNT_BELOW = 2048


def _nested_lists(levels: int) -> tuple[list[Any], list[Any]]:
    """``levels`` lists each holding the next, and the innermost one (holding None)."""
    inner: list[Any] = [None]
    outer = inner
    for _ in range(levels - 1):
        outer = [outer]
    return outer, inner


def _encoder_levels() -> tuple[int, str]:
    """The most levels orjson's encoder writes (254 in orjson 3.x: not configurable, so found by
    trying) and the text of its error past them; 0 and "" should an encoder have no limit below
    4,096 (then :func:`deeper_than` always walks)."""
    low, high = 1, 4096  # low encodes; high does not (checked below)
    try:
        orjson.dumps(_nested_lists(high)[0])
    except orjson.JSONEncodeError as exc:
        too_deep = str(exc)
    else:
        return 0, ""
    while high - low > 1:
        middle = (low + high) // 2
        try:
            orjson.dumps(_nested_lists(middle)[0])
            low = middle
        except orjson.JSONEncodeError:
            high = middle
    return low, too_deep


_ENCODER_LEVELS, _ENCODER_TOO_DEEP = _encoder_levels()


class _Wrappers(threading.local):
    """Per thread: nested lists to put a value in (by their depth), for :func:`deeper_than`."""

    def __init__(self) -> None:
        self.by_levels: dict[int, tuple[list[Any], list[Any]]] = {}


_wrappers = _Wrappers()


def deeper_than(value: Any, levels: int) -> bool:
    """True when ``value`` (parsed JSON) nests more than ``levels`` levels of dicts and lists.

    Asked of orjson's encoder, which writes at most _ENCODER_LEVELS levels and stops at the
    first one past them: ``value`` inside ``_ENCODER_LEVELS - levels`` lists encodes if and only
    if it nests at most ``levels`` (one C pass; ~2 µs, plus the encoding, ~1 ns a byte — a
    level-by-level walk in Python cost 100 ns a container, 2.3 ms for 64 KiB of ``[]``). What
    the encoder refuses for another reason (not parsed JSON: a key that is no string, an int of
    65 bits) is walked (:func:`_walk`)."""
    if type(value) is not dict and type(value) is not list:
        return levels < 0
    wrap = _ENCODER_LEVELS - levels
    if wrap < 1:
        return _walk(value, levels)
    found = _wrappers.by_levels.get(wrap)
    if found is None:
        found = _wrappers.by_levels[wrap] = _nested_lists(wrap)
    outer, inner = found
    inner[0] = value
    try:
        orjson.dumps(outer)
    except orjson.JSONEncodeError as exc:
        return True if str(exc) == _ENCODER_TOO_DEEP else _walk(value, levels)
    finally:
        inner[0] = None
    return False


def _walk(value: Any, levels: int) -> bool:
    """:func:`deeper_than` in Python: one pass per level over that level's containers (no
    recursion: a thousand levels cost no stack; nothing below ``levels + 1`` is visited)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(levels):
        if not level:
            return False
        level = [
            child
            for parent in level
            for child in (parent.values() if isinstance(parent, dict) else parent)
            if isinstance(child, (dict, list))
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
    # Too deep takes MAX_JSON_DEPTH + 2 levels, so as many opening and as many closing brackets:
    # a shorter body cannot be too deep (a len: the hot path), nor one with fewer opening
    # brackets (counted up to COUNT_BELOW bytes: two counts cost ~1.1 µs a KiB here, and past
    # that size :func:`deeper_than` on the parsed body costs less).
    size = len(raw)
    if size < SHORTEST_TOO_DEEP:
        return
    if (size < COUNT_BELOW or data is _UNPARSED) and raw.count(b"{") + raw.count(b"[") < MAX_JSON_DEPTH + 2:
        return
    if data is _UNPARSED:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise too_deep(_deep_loc(raw, root)) from None
            return
    if not deeper_than(data, MAX_JSON_DEPTH + 1):
        return
    if type(data) is dict:
        for key, value in data.items():
            if deeper_than(value, MAX_JSON_DEPTH):
                raise too_deep([root, key])
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
    size = len(text)
    if size < 2 * (MAX_STORED_DEPTH + 1):
        return value  # too short to nest that deep (the common case: a len)
    if size < COUNT_BELOW:
        opens = (
            text.count(b"{") + text.count(b"[")
            if isinstance(text, bytes)
            else text.count("{") + text.count("[")
        )
        if opens <= MAX_STORED_DEPTH:
            return value
    return unreadable(field, _STORED_TOO_DEEP) if deeper_than(value, MAX_STORED_DEPTH) else value


_STORED_TOO_DEEP = f"is nested deeper than {MAX_STORED_DEPTH} levels"
