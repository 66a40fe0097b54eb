"""The add-a-task page: a type picker with each type's payload schema, a JSON payload editor with
the API's field errors inline, priority and idempotency key; ``static/addtask.js`` posts it to
``POST /api/tasks`` (:mod:`dashboard.api_submit`)."""

from __future__ import annotations

from aiohttp import web

from dashboard.api_submit import type_list
from dashboard.pages import render
from shared.tasks import Priority, TaskSubmission


async def add_task_page(request: web.Request) -> web.Response:
    """``GET /tasks/new`` (operators and admins): the form; ``?type=`` picks the type."""
    types = type_list()
    chosen = request.query.get("type", "")
    default_priority = TaskSubmission.model_fields["priority"].default.value
    return render(
        request,
        "task_new.html",
        "tasks",
        {
            "types": types,
            "chosen": chosen if chosen in {t["name"] for t in types} else types[0]["name"],
            "priorities": [p.value for p in Priority],
            "default_priority": default_priority,
        },
    )
