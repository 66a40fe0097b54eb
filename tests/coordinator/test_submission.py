"""parse_submission's fast checks agree with the TaskSubmission model on every body: same
acceptance, same values, same errors (status, code and field locations)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from shared import submission
from shared.errors import BadRequest, OpsdeckError, ValidationFailed, pydantic_fields
from shared.submission import Submission, parse_submission
from shared.task_types import get_task_type
from shared.tasks import ECHO, EchoPayload, SleepPayload, TaskSubmission, accepts_any_object


def reference(body: bytes) -> tuple[str, Any]:
    """What the model alone says of ``body`` (the coordinator's behaviour before the fast path)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "400", None
    if not isinstance(data, dict):
        return "422", [["body"]]
    try:
        model = TaskSubmission.model_validate(data)
    except ValidationError as exc:
        return "422", [f["loc"] for f in pydantic_fields(exc, "body")]
    task_type = get_task_type(model.type)
    if task_type is None:
        return "422", [["body", "type"]]
    try:
        payload = task_type.payload_model.model_validate(model.payload).model_dump(mode="json")
    except ValidationError as exc:
        return "422", [f["loc"] for f in pydantic_fields(exc, "body.payload")]
    return "ok", (task_type, payload, model.priority, model.idempotency_key)


def outcome(body: bytes) -> tuple[str, Any]:
    try:
        got: Submission = parse_submission(body)
    except BadRequest:
        return "400", None
    except ValidationFailed as exc:
        return "422", [f["loc"] for f in exc.fields]
    return "ok", (got.task_type, orjson.loads(got.payload_json), got.priority, got.idempotency_key)


TYPES: list[Any] = ["echo", "sleep", "fail", "coach", "feedback", "deploy", "nope", "", "x" * 65, 1, None]
PAYLOADS: list[Any] = [
    {}, {"n": 1}, {"seconds": 0}, {"seconds": 1.5}, {"seconds": "2"}, {"seconds": 301}, {"seconds": True},
    {"seconds": 1, "extra": 1}, {"message": "boom"}, {"message": 5}, {"service": "test"}, [], None, "x", 3,
    {"nested": {"deep": [1, 2, {"a": None}]}}, {"ünïcode": "✓"},
]  # fmt: skip
TYPES.append(["echo"])
PRIORITIES: list[Any] = ["P0", "P1", "P2", "P3", "P9", "p1", "", 1, None, ["P1"], {"P1": 1}]
KEYS: list[Any] = ["k-1", "", "with space", "x" * 200, "x" * 201, "é", "\x7f", 7, None, "a:b/c"]
MISSING = object()


def bodies() -> list[bytes]:
    """Every combination of the fields above (each may also be absent), plus odd shapes."""
    out = [b"", b"{", b"[]", b'"echo"', b"null", b"1", b'{"type":"echo","surprise":1}', b'{"type":"echo"}{}',
           b'{"type":"echo","payload":{"n":123456789012345678901234567890}}',
           b'{"type":"echo","type":"sleep","payload":{"seconds":1}}']  # fmt: skip
    for t, p, r, k in itertools.product(
        [*TYPES, MISSING], [*PAYLOADS, MISSING], [*PRIORITIES[:6], MISSING], [*KEYS[:4], MISSING]
    ):
        doc = {name: v for name, v in (("type", t), ("payload", p), ("priority", r), ("idempotency_key", k))}
        out.append(orjson.dumps({name: v for name, v in doc.items() if v is not MISSING}))
    for r, k in itertools.product(PRIORITIES, KEYS):
        out.append(orjson.dumps({"type": "echo", "priority": r, "idempotency_key": k}))
    return out


def test_fast_checks_agree_with_the_model_on_every_body():
    corpus = bodies()
    assert len(corpus) > 5000
    accepted = 0
    for body in corpus:
        want = reference(body)
        got = outcome(body)
        if want[0] == "400":  # the model's own JSON parser also refuses every one of these
            assert got[0] == "400", body
            continue
        assert got == want, body
        accepted += want[0] == "ok"
    assert accepted > 300


def test_body_errors_name_the_field():
    with pytest.raises(ValidationFailed) as caught:
        parse_submission(b'{"type":"sleep","payload":{"seconds":301},"priority":"P2"}')
    assert caught.value.fields[0]["loc"] == ["body.payload", "seconds"]
    assert "sleep" in caught.value.message
    with pytest.raises(ValidationFailed) as caught:
        parse_submission(b'{"type":"nope"}')
    assert caught.value.fields == [{"loc": ["body", "type"], "msg": caught.value.fields[0]["msg"]}]
    assert "echo" in caught.value.fields[0]["msg"]  # names the allowed types
    with pytest.raises(OpsdeckError) as bad:
        parse_submission(b"{not json")
    assert bad.value.status == 400


def test_any_object_models_are_passed_through_and_others_validated():
    assert accepts_any_object(EchoPayload)
    assert not accepts_any_object(SleepPayload)
    assert orjson.loads(ECHO.encode_payload({"a": [1, {"b": None}]})) == {"a": [1, {"b": None}]}
    sleep = get_task_type("sleep")
    assert sleep is not None
    assert orjson.loads(sleep.encode_payload({"seconds": "2"})) == {"seconds": 2.0}  # the model's value


@pytest.mark.parametrize(
    "body",
    [
        {"type": "echo"},
        {"type": "echo", "payload": {"n": 1}, "priority": "P0"},
        {"type": "sleep", "payload": {"seconds": 0}, "priority": "P3", "idempotency_key": "k-1"},
        {"type": "echo", "idempotency_key": None},
    ],
)
def test_well_formed_bodies_never_reach_the_model(monkeypatch, body):
    def model_path(data):
        raise AssertionError(f"slow path taken for {data}")

    monkeypatch.setattr(submission, "_parse_with_model", model_path)
    assert parse_submission(orjson.dumps(body)).task_type.name == body["type"]
