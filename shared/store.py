"""Task records: the Lua scripts that change them and the codec that reads them.

Scripts live in ``shared/lua/``; each changes a record, its indexes and the lifecycle
stream atomically. The coordinator runs ``submit`` and ``cancel`` (asyncio); the worker's
task-store middleware runs ``start`` and ``finish`` (sync).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any

import orjson

from shared.jsondepth import read_stored

#: Fields of a task record that hold JSON documents.
JSON_FIELDS = frozenset({"payload", "result"})
#: Fields of a task record that hold integers (ms timestamps, counters).
INT_FIELDS = frozenset({"attempts", "duplicates", "created_at", "started_at", "finished_at", "updated_at"})
#: Bookkeeping fields of the store scripts (attempt ids, retry round), not part of the record.
_INTERNAL_FIELDS = (
    "created_us", "redis_message_id", "attempt_id", "ended_attempt", "ended_attempts", "round",
)  # fmt: skip
#: Timestamp fields rendered as ISO 8601 by :func:`decode_record`.
TIME_FIELDS = ("created_at", "started_at", "finished_at", "updated_at")
#: Largest result (encoded JSON bytes) stored in a record; larger ones are replaced by a note.
MAX_RESULT_BYTES = 256 * 1024
#: Longest traceback kept in a record.
MAX_TRACEBACK_CHARS = 16 * 1024


#: A line that :func:`script_source` replaces with another script's text (Redis Lua has no modules).
_INCLUDE = "--! include "


@cache
def lua_source(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua``, with each ``--! include <other>`` line replaced by
    the text of ``<other>.lua`` from the same directory (every Lua script is loaded this way)."""
    text = (files(package) / "lua" / f"{name}.lua").read_text()
    return "".join(
        lua_source(package, line.removeprefix(_INCLUDE).strip()) if line.startswith(_INCLUDE) else line
        for line in text.splitlines(keepends=True)
    )


def script_source(name: str) -> str:
    """The text of ``shared/lua/<name>.lua`` (the scripts of the shared stores), includes inlined."""
    return lua_source("shared", name)


@cache
def script_sha(name: str) -> str:
    """SHA1 of a script as Redis computes it for EVALSHA."""
    return hashlib.sha1(script_source(name).encode(), usedforsecurity=False).hexdigest()


def encode_result(result: Any) -> str:
    """JSON for a result, bounded by MAX_RESULT_BYTES."""
    try:
        data = orjson.dumps(result)
    except TypeError:
        data = orjson.dumps({"repr": repr(result)[:1000], "note": "result was not JSON-serialisable"})
    if len(data) > MAX_RESULT_BYTES:
        data = orjson.dumps({"note": f"result of {len(data)} bytes exceeded {MAX_RESULT_BYTES}"})
    return data.decode()


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as an ISO 8601 UTC string (None for none, or for a number no
    datetime can hold: a damaged record reads, it does not fail)."""
    if ms is None:
        return None
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decode_hash(
    raw: dict[bytes, bytes] | dict[str, str],
    json_fields: frozenset[str],
    int_fields: frozenset[str],
    *,
    empty_as_none: bool = False,
) -> dict[str, Any]:
    """A Redis hash as a dict: ``json_fields`` parsed, ``int_fields`` as ints, the rest as text.

    Whatever is stored, this returns: a JSON field that is no valid JSON, or that nests too deep
    to be encoded again in a response, reads as a marker (:func:`shared.jsondepth.read_stored`),
    an int field that is no integer as None and bytes that are no UTF-8 with replacement marks."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = k.decode(errors="replace") if isinstance(k, bytes) else k
        if key in json_fields:
            out[key] = read_stored(v, key) if v else None
            continue
        value = v.decode(errors="replace") if isinstance(v, bytes) else v
        if key in int_fields:
            try:
                number = int(value) if value else None
            except ValueError:
                number = None
            # beyond 64 bits no JSON encoder here writes it (nothing stores such counters)
            out[key] = number if number is None or -(2**63) <= number < 2**64 else None
        else:
            out[key] = None if empty_as_none and value == "" else value
    return out


def decode_record(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, Any]:
    """A task hash as the API shows it (JSON fields parsed, times as ISO 8601)."""
    out = decode_hash(raw, JSON_FIELDS, INT_FIELDS)
    for internal in _INTERNAL_FIELDS:
        out.pop(internal, None)  # bookkeeping of the store scripts, not part of the record
    for field in TIME_FIELDS:
        out[field] = iso(out.get(field))
    out.setdefault("attempts", 0)
    for field in ("result", "error", "traceback", "worker"):
        out.setdefault(field, None)
    return out
