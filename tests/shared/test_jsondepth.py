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
    SHORTEST_TOO_DEEP,
    TOO_DEEP,
    _walk,
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
            assert _walk(doc, levels) is (depth > levels), (doc, levels)


def test_deeper_than_walks_what_the_encoder_refuses_for_another_reason():
    odd: Any = {1: [{"big": 2**70}]}  # no parsed JSON holds these; a caller's object might
    assert deeper_than(odd, 2) and not deeper_than(odd, 3)
    assert deeper_than([odd], 3) and not deeper_than([odd], 4)
    assert not deeper_than(5, 0) and not deeper_than("[[[", 0)


def test_deeper_than_past_the_encoders_own_limit_walks():
    doc = orjson.loads(nested(600))
    assert deeper_than(doc, 300) and deeper_than(doc, 599) and not deeper_than(doc, 600)


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


def test_the_shortest_body_nested_too_deep_is_refused():
    shortest = "[" * (MAX_JSON_DEPTH + 2) + "]" * (MAX_JSON_DEPTH + 2)
    assert len(shortest) == SHORTEST_TOO_DEEP
    assert loc_of(shortest) == ["body"]
    assert loc_of('{"a":' + nested(MAX_JSON_DEPTH + 1) + "}") == ["body", "a"]
    check_depth(shortest[1:-1])


def test_malformed_json_is_left_to_the_callers_parser():
    check_depth("{" * 100)  # unterminated, but within orjson's depth: the caller answers 400
    check_depth('{"a": [[[[' + "x" * 200)
    check_depth(b"")


def test_a_long_body_with_a_parse_at_hand_is_asked_of_the_encoder():
    body = orjson.dumps({"text": "x" * 5000, "p": orjson.loads(nested(MAX_JSON_DEPTH))})
    check_depth(body, orjson.loads(body))
    deep = orjson.dumps({"text": "x" * 5000, "p": orjson.loads(nested(MAX_JSON_DEPTH + 1))})
    with pytest.raises(ValidationFailed) as caught:
        check_depth(deep, orjson.loads(deep))
    assert caught.value.fields == [{"loc": ["body", "p"], "msg": TOO_DEEP}]


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
