"""``/api/v1/tasks``: submit, read, list and cancel tasks."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from coordinator.http import (
    authorize,
    correlation_id,
    json_response,
    parse_query,
    pydantic_fields,
    read_json,
    redis_deadline,
)
from coordinator.keys import STORE
from coordinator.schemas import TaskListQuery
from shared.errors import NotFound, ValidationFailed
from shared.tasks import TaskStatus, TaskSubmission, get_task_type, task_types

#: Length of a task id (a UUID) — anything else is a 404 without touching Redis.
_ID_LEN = 36
_QUEUED = TaskStatus.QUEUED.value


def status_url(task_id: str) -> str:
    """Where to poll a task (the ``task`` route; a test checks they agree)."""
    return f"/api/v1/tasks/{task_id}"


async def submit_task(request: web.Request) -> web.Response:
    """Validate a task against its type's model and enqueue it (202; 200 for a replayed key)."""
    principal = authorize(request, "tasks:write")
    body = await read_json(request, TaskSubmission)
    task_type = get_task_type(body.type)
    if task_type is None:
        known = ", ".join(sorted(task_types()))
        raise ValidationFailed(
            f"unknown task type {body.type!r}",
            fields=[{"loc": ["body", "type"], "msg": f"must be one of: {known}"}],
        )
    try:
        payload = task_type.payload_model.model_validate(body.payload).model_dump(mode="json")
    except ValidationError as exc:
        raise ValidationFailed(
            f"payload is invalid for task type {body.type!r}", fields=pydantic_fields(exc, "body.payload")
        ) from None
    store = request.app[STORE]
    submitted = await store.submit(  # bounded by the batcher's deadline
        task_type,
        payload,
        body.priority,
        subject=principal.subject,
        correlation_id=correlation_id(request),
        idempotency_key=body.idempotency_key,
    )
    if submitted.created:
        status, state = 202, _QUEUED
    else:
        async with redis_deadline(request):
            status, state = 200, (await store.get(submitted.task_id))["status"]
    url = status_url(submitted.task_id)
    return json_response(
        {"id": submitted.task_id, "status": state, "status_url": url},
        status=status,
        headers={"Location": url},
    )


async def get_task(request: web.Request) -> web.Response:
    """One task record."""
    authorize(request, "tasks:read")
    task_id = request.match_info["task_id"]
    if len(task_id) != _ID_LEN:
        raise NotFound(f"task {task_id} not found")
    async with redis_deadline(request):
        record = await request.app[STORE].get(task_id)
    return json_response(record)


async def list_tasks(request: web.Request) -> web.Response:
    """Tasks newest first, filtered by status and type, paginated by cursor."""
    authorize(request, "tasks:read")
    query = parse_query(request, TaskListQuery)
    async with redis_deadline(request):
        items, next_cursor = await request.app[STORE].list(
            status=query.status, type_name=query.type, limit=query.limit, cursor=query.cursor
        )
    return json_response({"items": items, "next_cursor": next_cursor})


async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a task that has not started yet (409 once it runs or has ended)."""
    authorize(request, "tasks:write")
    task_id = request.match_info["task_id"]
    async with redis_deadline(request):
        record = await request.app[STORE].cancel(task_id)
    return json_response(record)
