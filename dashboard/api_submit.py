"""Adding a task from the dashboard: the task types with their payloads' JSON schemas, and a
submission that goes through the coordinator's own parser and path
(:func:`shared.submission.submit_body`: the same validation, errors, rate limit and idempotency)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aiohttp import web

from dashboard import audit
from dashboard.appkeys import KEYS, REDIS, SETTINGS, STORE, USER
from shared.submission import submit_body
from shared.task_types import task_types
from shared.tasks import Priority
from shared.web import json_response, read_body


@cache
def payload_schema(name: str) -> dict[str, Any]:
    """The JSON schema of a task type's payload model (as the OpenAPI models state it)."""
    return task_types()[name].payload_model.model_json_schema()


def type_list() -> list[dict[str, Any]]:
    """Every submittable task type: name, description, queue group, payload schema."""
    return [
        {
            "name": name,
            "description": t.description,
            "queue_group": t.queue_group,
            "schema": payload_schema(name),
        }
        for name, t in task_types().items()
    ]


async def list_types(request: web.Request) -> web.Response:
    """``GET /api/task-types``: the task types a form may submit, with their payload schemas."""
    return json_response({"types": type_list(), "priorities": [p.value for p in Priority]})


async def add_task(request: web.Request) -> web.Response:
    """``POST /api/tasks`` ``{type, payload, priority, idempotency_key}``: the coordinator's
    ``POST /api/v1/tasks`` from the dashboard, under the operator's name (202; 200 with the first
    task for an idempotency key seen before; 422 naming each refused field)."""
    user = request[USER]
    app = request.app
    task_id, created = await submit_body(
        app[STORE],
        await read_body(request),
        app[SETTINGS],
        subject=user.subject,
        correlation_id=os.urandom(16).hex(),
    )
    status = "queued"
    if created:
        await audit.record(app[REDIS], app[KEYS], "task.submit", f"task {task_id}", user.subject)
    else:
        status = (await app[STORE].get(task_id))["status"]
    return json_response(
        {"id": task_id, "status": status, "status_url": f"/api/tasks/{task_id}", "created": created},
        status=202 if created else 200,
    )
