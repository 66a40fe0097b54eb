"""Reading a task submission: the body of the coordinator's ``POST /api/v1/tasks`` (its hot path)
and of the dashboard's add-task form (``POST /api/tasks``), one parser for both.

A well-formed body costs one orjson parse, a length (two byte counts past 131 bytes: the
nesting bound, :mod:`shared.jsondepth`) and a few dict lookups: exact types, known keys, a
registered task type, a priority class and the idempotency key's pattern. Whatever those
checks do not accept is handed to :class:`~shared.tasks.TaskSubmission` (the model the OpenAPI
document shows), so every error names its field exactly as pydantic does; the fast checks
accept nothing the model would refuse (``tests/coordinator/test_submission.py`` holds both to the
same corpus of bodies). The payload is then validated by its type's model and kept as JSON.

:func:`submit_body` is the whole path from body to enqueue (parse, then the task store's one
script call) that both apps call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic import ValidationError

from shared.errors import BadRequest, ValidationFailed, pydantic_fields
from shared.jsondepth import SHORTEST_TOO_DEEP, check_depth
from shared.task_types import BY_NAME, task_types
from shared.tasks import Priority, TaskSubmission, TaskType

if TYPE_CHECKING:
    import asyncio

    from shared.batcher import Submitted
    from shared.settings import Settings
    from shared.taskstore import TaskStore

#: The keys a submission may have.
KEYS = frozenset(TaskSubmission.model_fields)
#: Priority classes by their JSON spelling.
_PRIORITIES = {p.value: p for p in Priority}
_DEFAULT_PRIORITY = TaskSubmission.model_fields["priority"].default.value
#: TaskSubmission.idempotency_key's constraints (length 1-200, visible ASCII) as one pattern.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_MISSING: Any = object()
#: Builds a Submission without NamedTuple's Python-level ``__new__`` (once per request).
_make = tuple.__new__


class Submission(NamedTuple):
    """A validated submission; the payload is JSON as its type's model validated it."""

    task_type: TaskType
    payload_json: bytes
    priority: Priority
    idempotency_key: str | None


def parse_submission(body: bytes, settings: Settings | None = None) -> Submission:
    """Parse and validate a submission body: BadRequest (400) for malformed JSON, ValidationFailed
    (422) naming the field for anything the model or the type's payload model refuses. The payload
    models validate with ``settings`` as their context (a ``deploy`` names a service of
    ``settings.services``; without settings none is configured)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        check_depth(body)  # nested past orjson's own limit: the same 422 as any too deep body
        raise BadRequest(f"malformed JSON: {exc}") from None
    if len(body) >= SHORTEST_TOO_DEEP:  # before the model or an encoder sees it
        check_depth(body, data)
    if type(data) is not dict:
        raise ValidationFailed(
            "body must be a JSON object", fields=[{"loc": ["body"], "msg": "expected an object"}]
        )
    name = data.get("type")
    priority = data.get("priority", _DEFAULT_PRIORITY)
    payload = data.get("payload", _MISSING)
    key = data.get("idempotency_key")
    task_type = BY_NAME.get(name) if type(name) is str else None
    if (
        task_type is None
        or type(priority) is not str
        or (priority := _PRIORITIES.get(priority)) is None
        or (payload is not _MISSING and type(payload) is not dict)
        or (key is not None and (type(key) is not str or not _IDEMPOTENCY_KEY.fullmatch(key)))
        or not KEYS.issuperset(data)
    ):
        return _parse_with_model(data, settings)
    try:
        payload_json = task_type.encode_payload({} if payload is _MISSING else payload, settings)
    except ValidationError as exc:
        raise _payload_error(task_type, exc) from None
    return _make(Submission, (task_type, payload_json, priority, key))


def submit_body(
    store: TaskStore, body: bytes, settings: Settings, *, subject: str, correlation_id: str
) -> asyncio.Future[Submitted]:
    """Parse a submission body (:func:`parse_submission`) and submit it under ``subject``'s rate
    limit and idempotency keys (await the result: the task id, and whether this call created it).
    Not a coroutine: the coordinator's hot path pays one call, no task."""
    sub = parse_submission(body, settings)
    return store.submit_json(
        sub.task_type,
        sub.payload_json,
        sub.priority,
        subject=subject,
        correlation_id=correlation_id,
        idempotency_key=sub.idempotency_key,
        rate_limit=True,  # the subject's submit bucket, checked in the same script call
    )


def _parse_with_model(data: dict[str, Any], settings: Settings | None) -> Submission:
    """The slow path: the model's verdict, with its error locations (``["body", field]``)."""
    try:
        model = TaskSubmission.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed("request body is invalid", fields=pydantic_fields(exc, "body")) from None
    task_type = BY_NAME.get(model.type)
    if task_type is None:
        known = ", ".join(sorted(task_types()))
        raise ValidationFailed(
            f"unknown task type {model.type!r}",
            fields=[{"loc": ["body", "type"], "msg": f"must be one of: {known}"}],
        )
    try:
        payload_json = task_type.encode_payload(model.payload, settings)
    except ValidationError as exc:
        raise _payload_error(task_type, exc) from None
    return Submission(task_type, payload_json, model.priority, model.idempotency_key)


def _payload_error(task_type: TaskType, exc: ValidationError) -> ValidationFailed:
    fields = pydantic_fields(exc, "body.payload")
    return ValidationFailed(f"payload is invalid for task type {task_type.name!r}", fields=fields)
