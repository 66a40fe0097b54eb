"""``/api/v1/tasks``: submit, read, list and cancel tasks."""

from __future__ import annotations

from aiohttp import web
from aiohttp.hdrs import CONTENT_TYPE, LOCATION
from multidict import CIMultiDict

from coordinator.appkeys import PRINCIPAL, SETTINGS, STORE
from coordinator.http import (
    JSON_TYPE,
    json_response,
    parse_query,
    read_body,
    redis_deadline,
)
from coordinator.schemas import TaskListQuery
from shared.errors import NotFound
from shared.logging import CORRELATION_ID
from shared.submission import submit_body
from shared.tasks import TaskStatus

#: Length of a task id (a UUID) — anything else is a 404 without touching Redis.
_ID_LEN = 36
_QUEUED = TaskStatus.QUEUED.value


def status_url(task_id: str) -> str:
    """Where to poll a task (the ``task`` route; a test checks they agree)."""
    return f"/api/v1/tasks/{task_id}"


_TASKS = status_url("")  # the status URL of a task is this and its id


async def submit_task(request: web.Request) -> web.Response:
    """Validate a task against its type's model and enqueue it (202; 200 for a replayed key)."""
    app = request.app
    principal = request[PRINCIPAL]
    store = app[STORE]
    task_id, created = await submit_body(  # bounded by the batcher's deadline
        store,
        await read_body(request),
        app[SETTINGS],
        subject=principal.subject,
        correlation_id=CORRELATION_ID.get(),
    )
    url = _TASKS + task_id
    if created:
        status, state = 202, _QUEUED
    else:
        async with redis_deadline(request):
            status, state = 200, (await store.get(task_id))["status"]
    # the answer's three fields are an id, a status name and a path: no JSON encoder needed
    text = f'{{"id":"{task_id}","status":"{state}","status_url":"{url}"}}'
    headers = CIMultiDict({CONTENT_TYPE: JSON_TYPE, LOCATION: url})
    return web.Response(body=text.encode(), status=status, headers=headers)


async def get_task(request: web.Request) -> web.Response:
    """One task record."""
    task_id = request.match_info["task_id"]
    if len(task_id) != _ID_LEN:
        raise NotFound(f"task {task_id} not found")
    async with redis_deadline(request):
        record = await request.app[STORE].get(task_id)
    return json_response(record)


async def list_tasks(request: web.Request) -> web.Response:
    """Tasks newest first, filtered by status and type, paginated by cursor."""
    query = parse_query(request, TaskListQuery)
    async with redis_deadline(request):
        items, next_cursor = await request.app[STORE].list(
            status=query.status, type_name=query.type, limit=query.limit, cursor=query.cursor
        )
    return json_response({"items": items, "next_cursor": next_cursor})


async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a task that has not started yet (409 once it runs or has ended)."""
    task_id = request.match_info["task_id"]
    async with redis_deadline(request):
        record = await request.app[STORE].cancel(task_id)
    return json_response(record)
