"""shared.jsondepth: the nesting bound of JSON bodies and the safe read of stored documents."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from shared.errors import ValidationFailed
from shared.jsondepth import (
    MAX_JSON_DEPTH,
    MAX_STORED_DEPTH,
    TOO_DEEP,
    check_depth,
    deeper_than,
    read_stored,
)
from tests.coordinator.test_nesting import depth_of, nested


def random_doc(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.15:
        return rng.choice([1, "s", None, True, 2.5, "[{", '"]}'])
    if rng.random() < 0.5:
        return [random_doc(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": random_doc(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_deeper_than_agrees_with_a_recursive_depth():
    rng = random.Random(14)
    for _ in range(2000):
        doc = random_doc(rng, rng.randint(0, 12))
        depth = depth_of(doc)
        for levels in range(0, 14):
            assert deeper_than(doc, levels) is (depth > levels), (doc, levels)


def test_deeper_than_needs_no_recursion_for_a_thousand_levels():
    doc = orjson.loads(nested(1024))
    assert deeper_than(doc, 1023) and not deeper_than(doc, 1024)


def loc_of(body: str | bytes) -> list[Any]:
    with pytest.raises(ValidationFailed) as caught:
        check_depth(body)
    assert caught.value.fields[0]["msg"] == TOO_DEEP
    assert str(MAX_JSON_DEPTH) in caught.value.message
    return list(caught.value.fields[0]["loc"])


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1023, 1024, 1100, 5000])
def test_a_field_deeper_than_the_limit_is_named(depth):
    body = '{"a": 1, "ok": ' + nested(MAX_JSON_DEPTH) + ', "deep": ' + nested(depth) + "}"
    assert loc_of(body) == ["body", "deep"]
    assert loc_of(body.encode()) == ["body", "deep"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 2, 2000])
def test_a_body_that_is_no_object_is_named_as_the_body(depth):
    assert loc_of("[" + nested(depth - 1) + "]") == ["body"]


def test_a_key_with_escapes_is_named_as_parsed_past_orjsons_own_limit():
    body = '{"x": "[[[{", "we\\"ird\\u00e9": ' + nested(1500) + "}"
    assert loc_of(body) == ["body", 'we"irdé']


def test_the_limit_itself_passes_and_brackets_in_strings_do_not_count():
    check_depth('{"p": ' + nested(MAX_JSON_DEPTH) + "}")
    check_depth(orjson.dumps({"s": "[" * 10_000, "t": '\\"{' * 5000, "n": orjson.loads(nested(20))}))
    check_depth("[" + nested(MAX_JSON_DEPTH) + "]")  # a body is one level more than a field


def test_malformed_json_is_left_to_the_callers_parser():
    check_depth("{" * 100)  # unterminated, but within orjson's depth: the caller answers 400
    check_depth('{"a": [[[[' + "x" * 200)
    check_depth(b"")


def test_the_parsed_body_is_used_when_given():
    body = b'{"p": ' + nested(100).encode() + b"}"
    with pytest.raises(ValidationFailed):
        check_depth(body, orjson.loads(body))
    check_depth(body, {"p": {}})  # the caller's parse is trusted (no second parse)


def test_read_stored_shows_what_a_response_can_carry_and_marks_the_rest():
    assert read_stored(b'{"a": [1, {"b": null}]}', "payload") == {"a": [1, {"b": None}]}
    assert read_stored('{"a": 1}', "payload") == {"a": 1}
    fine = nested(MAX_STORED_DEPTH)
    assert read_stored(fine.encode(), "payload") == orjson.loads(fine)
    for text in (nested(MAX_STORED_DEPTH + 1), nested(254), nested(1024), nested(3000)):
        marker = read_stored(text.encode(), "payload")
        assert marker == {
            "_unreadable": f"payload is nested deeper than {MAX_STORED_DEPTH} levels; not shown"
        }
        orjson.dumps({"items": [{"payload": marker}]})
    assert read_stored(b'{"cut": ', "result") == {"_unreadable": "result is not valid JSON; not shown"}
    assert read_stored(b"\xff\xfe", "result") == {"_unreadable": "result is not valid JSON; not shown"}
    assert read_stored(b'"[[[[' + b"[" * 500 + b'"', "result") == "[[[[" + "[" * 500
