"""The dashboard's routes as one table: the router (through :data:`dashboard.app.ROUTES`), its
authorization (:data:`SCOPES`, enforced by :mod:`dashboard.guard`) and ``GET /api/openapi.json``
(:data:`API` only) read it.

Each row's ``scope`` is the only statement of who may call the route: ``None`` declares it public
(login, health, static files), ``viewer`` needs a session or a bearer token with any dashboard
role, ``operator`` refuses viewers, ``admin`` refuses operators too. Every state change also
refuses cross-origin requests and sessions without the CSRF token (whatever the scope).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from dashboard import (
    api_bulk,
    api_dead,
    api_deploys,
    api_queues,
    api_submit,
    api_tasks,
    api_workers,
    auth,
    bandit_view,
    history,
    pages,
    pages_deploys,
    pages_submit,
    schemas,
    stream,
    views,
)
from dashboard.auth import COOKIE, CSRF_HEADER
from shared.control import CommandRecord
from shared.deploy.models import ID_PATTERN, Action
from shared.openapi import BEARER, ERRORS, Endpoint, build_document, input_errors
from shared.schemas import DeployList, DeployRecord, ServiceList, TaskRecord
from shared.task_types import all_queues
from shared.tasks import TaskSubmission
from shared.web import json_response

#: Routes that answer without touching Redis (no 503).
_NO_REDIS = frozenset({"/health", "/health/live", "/api/stream/stats", "/api/openapi.json"})
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    **BEARER,
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE,
        "description": f"The login session; state changes also need the {CSRF_HEADER} header.",
    },
}
DESCRIPTIONS = {
    **ERRORS,
    400: "Malformed JSON",
    401: "No session, or no bearer token with a dashboard role (viewer, operator, admin)",
    403: f"A viewer (operator or admin needed), a cross-origin request, or a session without {CSRF_HEADER}",
    429: "Rate limited: the caller's submit bucket is empty (RATE_LIMIT_SUBMIT; see Retry-After)",
}


class WorkerPath(BaseModel):
    """Path parameters of the worker control route."""

    action: str = Field(json_schema_extra={"enum": list(api_workers.SIMPLE_ACTIONS)})


class QueuePath(BaseModel):
    """Path parameters of the queue routes (a queue that is not known is a 404)."""

    name: str = Field(json_schema_extra=lambda schema: schema.update(examples=list(all_queues())))


class CheckpointPath(BaseModel):
    """Path parameters of the bandit rollback route."""

    id: int = Field(ge=1, description="A kept checkpoint's id (GET /api/bandit lists them)")


class DeployPath(BaseModel):
    """Path parameters of the deploy routes."""

    id: str = Field(pattern=ID_PATTERN)
    action: Action


async def openapi(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: this API's OpenAPI 3.1 document."""
    return json_response(build_openapi())


API: list[Endpoint] = [
    Endpoint("GET", "/health", pages.health, "The process answers", scope=None,
             responses={200: schemas.Health}),
    Endpoint("GET", "/health/live", pages.health, "Liveness (process only)", scope=None,
             responses={200: schemas.Health}, operation_id="health_live"),
    Endpoint("GET", "/api/openapi.json", openapi, "This document", scope="viewer", responses={200: None}),
    Endpoint("GET", "/api/stream/stats", stream.stream_stats, "The live-stream poller's counters",
             scope="viewer", responses={200: schemas.StreamStats}),
    Endpoint("GET", "/api/worker/status", api_workers.worker_status, "Every worker with its heartbeat",
             scope="viewer", responses={200: schemas.WorkerList}),
    Endpoint("GET", "/api/worker/{id}", api_workers.worker_detail,
             "One worker: heartbeat, desired state, command history with replies", scope="viewer",
             responses={200: schemas.WorkerDetail}),
    Endpoint("POST", "/api/worker/{id}/scale", api_workers.scale,
             "Scale a worker's Dramatiq processes (optional Idempotency-Key header)", scope="operator",
             body=api_workers.Scale, responses={202: schemas.CommandAccepted}),
    Endpoint("POST", "/api/worker/{id}/{action}", api_workers.control,
             "Start, stop, restart, pause or resume a worker (optional Idempotency-Key header, 200 chars)",
             scope="operator", path_params=WorkerPath, responses={202: schemas.CommandAccepted},
             errors=(422,)),
    Endpoint("GET", "/api/commands/{id}", api_workers.command_reply, "A control command with its reply",
             scope="viewer", responses={200: CommandRecord}),
    Endpoint("GET", "/api/audit", api_workers.audit_log, "Control actions, newest first", scope="viewer",
             query=api_workers.AuditQuery, responses={200: schemas.AuditLog}),
    Endpoint("GET", "/api/queue/stats", api_queues.queue_stats, "Every queue's counters", scope="viewer",
             responses={200: schemas.QueueStats}),
    Endpoint("GET", "/api/queue/{name}", api_queues.queue_detail,
             "One queue: counters, delayed messages, dead letters", scope="viewer", path_params=QueuePath,
             query=api_queues.ListQuery, responses={200: schemas.QueueDetail}),
    Endpoint("POST", "/api/queue/{name}/pause", api_queues.pause, "Workers stop consuming the queue",
             scope="operator", path_params=QueuePath, responses={200: schemas.QueuePaused}),
    Endpoint("POST", "/api/queue/{name}/resume", api_queues.resume, "Workers consume the queue again",
             scope="operator", path_params=QueuePath, responses={200: schemas.QueuePaused}),
    Endpoint("POST", "/api/queue/{name}/purge", api_queues.purge,
             "Drop the queue's ready messages (confirm repeats its name)", scope="operator",
             path_params=QueuePath, body=api_queues.Purge, responses={200: schemas.QueuePurged}),
    Endpoint("POST", "/api/queue/{name}/dead/retry", api_queues.retry_dead, "Requeue every dead letter",
             scope="operator", path_params=QueuePath, responses={200: schemas.DeadRequeued}),
    Endpoint("POST", "/api/queue/{name}/dead/{message_id}/retry", api_queues.retry_dead,
             "Requeue one dead letter", scope="operator", path_params=QueuePath,
             responses={200: schemas.DeadRequeued}, errors=(409,), operation_id="retry_dead_letter"),
    Endpoint("GET", "/api/tasks", api_tasks.task_list, "Search tasks, newest first, one page",
             scope="viewer", query=api_tasks.TaskQuery, responses={200: schemas.TaskSearchPage}),
    Endpoint("GET", "/api/tasks/find", api_tasks.task_find,
             "Tasks whose id starts with q (a prefix lookup in the id index, no scan)", scope="viewer",
             query=api_tasks.FindQuery, responses={200: schemas.TaskMatches}),
    Endpoint("GET", "/api/tasks/failures", api_tasks.failures, "Failed and dead tasks by exception type",
             scope="viewer", query=api_tasks.FailureQuery, responses={200: schemas.FailureGroups}),
    Endpoint("GET", "/api/tasks/count", api_bulk.count,
             f"How many tasks a bulk command on this filter acts on (at most {api_bulk.BULK_MAX})",
             scope="viewer", query=api_tasks.TaskFilter, responses={200: schemas.TaskCount}),
    Endpoint("POST", "/api/tasks", api_submit.add_task,
             "Add a task (the coordinator's validation and path, under the caller's name)", scope="operator",
             body=TaskSubmission, responses={202: schemas.TaskAdded, 200: schemas.TaskAdded},
             errors=(409, 429)),
    Endpoint("GET", "/api/task-types", api_submit.list_types, "Task types with their payloads' JSON schemas",
             scope="viewer", responses={200: schemas.TaskTypes}),
    Endpoint("POST", "/api/tasks:bulk", api_bulk.bulk,
             f"Retry, cancel or delete selected tasks or every task a filter matches (≤ {api_bulk.BULK_MAX})",
             scope="operator", body=api_bulk.Bulk, responses={200: schemas.BulkDone}),
    Endpoint("POST", "/api/tasks:clean", api_bulk.clean,
             "Delete finished records older than an age (preview counts them)", scope="operator",
             body=api_bulk.Clean, responses={200: schemas.CleanDone}),
    Endpoint("POST", "/api/dead/retry", api_dead.retry_all, "Retry every dead letter of every queue",
             scope="operator", responses={200: schemas.BulkDone}),
    Endpoint("POST", "/api/queue/{name}/dead/bulk", api_dead.dead_bulk,
             "Retry or delete selected dead letters", scope="operator", path_params=QueuePath,
             body=api_dead.DeadBulk, responses={200: schemas.BulkDone}, errors=(409,)),
    Endpoint("POST", "/api/queue/{name}/delayed/run", api_dead.delayed_run,
             "Run selected delayed messages now", scope="operator", path_params=QueuePath,
             body=api_dead.DelayedRun, responses={200: schemas.BulkDone}, errors=(409,)),
    Endpoint("GET", "/api/tasks/{id}", api_tasks.task_detail, "One task with its timeline", scope="viewer",
             responses={200: schemas.TaskDetail}),
    Endpoint("POST", "/api/tasks/{id}/retry", api_tasks.retry,
             "Submit the task again: exact replay, or edited payload/priority (200: this failure was "
             "retried already, the answer names that retry)", scope="operator",
             body=api_tasks.Retry, body_required=False,
             responses={202: schemas.TaskRetried, 200: schemas.TaskRetried}),
    Endpoint("POST", "/api/tasks/{id}/cancel", api_tasks.cancel, "Cancel a queued task", scope="operator",
             responses={200: TaskRecord}, errors=(409,)),
    Endpoint("GET", "/api/views", views.views_get, "The caller's saved task views", scope="viewer",
             responses={200: schemas.SavedViews}),
    Endpoint("POST", "/api/views", views.views_post, "Save (or replace) a named task view of the caller",
             scope="viewer", body=views.SavedView, responses={201: schemas.SavedViewOut}, errors=(409,)),
    Endpoint("DELETE", "/api/views/{name}", views.views_delete, "Delete one of the caller's saved views",
             scope="viewer", responses={200: schemas.ViewDeleted}),
    Endpoint("GET", "/api/metrics/history", history.history, "Throughput, errors and latency over time",
             scope="viewer", query=history.HistoryQuery, responses={200: schemas.History}),
    Endpoint("GET", "/api/deploys", api_deploys.deploy_list, "Deploys, newest first", scope="viewer",
             query=api_deploys.DeployQuery, responses={200: DeployList}),
    Endpoint("GET", "/api/deploys/{id}", api_deploys.deploy_detail, "One deploy", scope="viewer",
             path_params=DeployPath, responses={200: DeployRecord}),
    Endpoint("POST", "/api/deploys/{id}/{action}", api_deploys.act,
             "Promote, pause, resume, abort or roll back a deploy", scope="operator", path_params=DeployPath,
             responses={202: DeployRecord}, errors=(409,)),
    Endpoint("GET", "/api/services", api_deploys.services, "Configured services with their stable version",
             scope="viewer", responses={200: ServiceList}),
    Endpoint("GET", "/api/bandit", bandit_view.bandit_state,
             "The coaching bandit: phase, alpha, arms, window, checkpoints, LLM tiers, last 15 minutes",
             scope="viewer", responses={200: bandit_view.BanditState}),
    Endpoint("GET", "/api/bandit/history", bandit_view.bandit_history,
             "Decisions, exploration, pulls, rewards and UCB score distribution over a range", scope="viewer",
             query=bandit_view.HistoryQuery, responses={200: bandit_view.BanditHistory}),
    Endpoint("GET", "/api/bandit/evaluation", bandit_view.bandit_evaluation,
             "Offline evaluation of the running, uniform and configured-alpha policies (cached a minute)",
             scope="viewer", responses={200: bandit_view.BanditEvaluationReport}),
    Endpoint("POST", "/api/bandit/checkpoints/{id}/rollback", bandit_view.rollback,
             "Roll the shared bandit back to a kept checkpoint (audited)", scope="admin",
             path_params=CheckpointPath, responses={200: bandit_view.BanditRollback}, errors=(422,)),
]  # fmt: skip


def error_codes(ep: Endpoint) -> list[int]:
    """The error statuses of a dashboard route."""
    refusable = ep.scope == "operator" or ep.method not in ("GET", "HEAD")  # a state change: CSRF, origin
    codes = [] if ep.scope is None else [401, 403] if refusable else [401]
    if ep.path not in _NO_REDIS:
        codes.append(503)
    return codes + input_errors(ep)


@cache
def build_openapi() -> dict[str, Any]:
    """The dashboard API's document (cached; the table is fixed at import)."""
    return build_document(
        API,
        title="Opsdeck dashboard",
        description="The operator dashboard's JSON API: workers, queues, tasks, deploys, metrics history. "
        "Log in (session cookie) or send a bearer token with the viewer, operator or admin scope.",
        error_codes=error_codes,
        error_descriptions=DESCRIPTIONS,
        security_schemes=SECURITY_SCHEMES,
    )


#: The pages, the login form and the live stream (not in the OpenAPI document: HTML, a WebSocket).
PAGES: list[Endpoint] = [
    Endpoint("GET", "/login", auth.login_form, "The login page", scope=None),
    Endpoint("POST", "/login", auth.login, "Log in with the password or a token", scope=None),
    Endpoint("POST", "/logout", auth.logout, "End the session", scope="viewer"),
    Endpoint("GET", "/", pages.overview, "Overview", scope="viewer"),
    Endpoint("GET", "/workers", pages.workers, "Workers", scope="viewer"),
    Endpoint("GET", "/workers/{id}", pages.worker, "One worker", scope="viewer"),
    Endpoint("GET", "/queues", pages.queues, "Queues", scope="viewer"),
    Endpoint("GET", "/queues/{name}", pages.queue, "One queue", scope="viewer"),
    Endpoint("GET", "/tasks", pages.tasks, "Tasks", scope="viewer"),
    Endpoint("GET", "/tasks/find", pages.find, "Find a task by its id or its start", scope="viewer"),
    Endpoint("GET", "/tasks/new", pages_submit.add_task_page, "Add a task", scope="operator"),
    Endpoint("POST", "/tasks/views", views.form_save, "Save the tasks page's filters as a view",
             scope="viewer"),
    Endpoint("POST", "/tasks/views/delete", views.form_delete, "Delete a saved view", scope="viewer"),
    Endpoint("GET", "/tasks/{id}", pages.task, "One task", scope="viewer"),
    Endpoint("GET", "/audit", pages.audit_page, "The audit log", scope="viewer"),
    Endpoint("GET", "/deploys", pages_deploys.deploys, "Deploys", scope="viewer"),
    Endpoint("GET", "/deploys/{id}", pages_deploys.deploy, "One deploy", scope="viewer"),
    Endpoint("GET", "/bandit", bandit_view.page, "The coaching bandit", scope="viewer"),
    Endpoint("GET", "/ws", stream.ws_handler, "The live stream (same-origin WebSocket)", scope="viewer"),
]  # fmt: skip
#: The scope of the routes the app registers by other means: ``/metrics`` (by
#: :func:`dashboard.metrics.setup`; ``METRICS_TOKEN`` stands in for an admin token there, see
#: :data:`METRICS_TOKEN_ROUTES`) and the static files (``add_static``, resource ``/static``).
ELSEWHERE: dict[tuple[str, str], str | None] = {("GET", "/metrics"): "admin", ("GET", "/static"): None}
#: Routes a Prometheus scraper calls: ``METRICS_TOKEN`` as bearer is enough, and every refusal
#: is a 401 (a scrape credential has no role to lack).
METRICS_TOKEN_ROUTES = frozenset({("GET", "/metrics")})
#: (method, path) → declared scope of every route of the app (HEAD goes as GET).
SCOPES: dict[tuple[str, str], str | None] = {
    **{(ep.method, ep.path): ep.scope for ep in [*PAGES, *API]},
    **ELSEWHERE,
}
#: Paths whose every route is public (the static files are public under their prefix).
PUBLIC_PATHS = frozenset(
    path for (_, path), scope in SCOPES.items() if scope is None and path != "/static"
) - {path for (_, path), scope in SCOPES.items() if scope is not None}
