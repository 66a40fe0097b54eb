"""The coordinator's route table: one place that the router, its authorization and /openapi.json read.

Each row's ``scope`` is the only statement of who may call the route: ``scope=None`` declares it
public (health checks), ``""`` any valid token, anything else the scope a token must hold (admin
holds all). :func:`coordinator.http.edge` enforces it before the view runs, with the route's
guard from :data:`GUARDS` (how the credentials are presented; a bearer header unless listed).
"""

from __future__ import annotations

from coordinator import schemas
from coordinator.http import GuardFactory, metrics_guard, websocket_guard
from coordinator.schemas import (
    DeployAccepted,
    DeployCreate,
    DeployListQuery,
    HealthReport,
    TaskAccepted,
    TaskListQuery,
)
from coordinator.service_rollback import ServiceRollback
from coordinator.views import bandit_eval, chat, deploys, emergency, health, meta, tasks
from coordinator.views.llm_health import LLMHealthQuery, LLMHealthReport, llm_health
from shared.coaching import FeedbackPayload
from shared.openapi import Endpoint, add_routes
from shared.schemas import DeployList, DeployRecord, ErrorBody, ServiceList, TaskPage, TaskRecord
from shared.tasks import TaskSubmission

# add_routes: re-exported for coordinator.app
__all__ = ["ENDPOINTS", "EXEMPT", "GUARDS", "RATE_CLASSES", "add_routes"]

ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/api/v1/tasks", tasks.submit_task, "Submit a task", scope="tasks:write",
             body=TaskSubmission, responses={202: TaskAccepted, 200: TaskAccepted}),
    Endpoint("GET", "/api/v1/tasks", tasks.list_tasks, "List tasks (newest first)", scope="tasks:read",
             query=TaskListQuery, responses={200: TaskPage}),
    Endpoint("GET", "/api/v1/tasks/{task_id}", tasks.get_task, "Get one task", name="task",
             scope="tasks:read", responses={200: TaskRecord}),
    Endpoint("POST", "/api/v1/tasks/{task_id}/cancel", tasks.cancel_task, "Cancel a queued task",
             scope="tasks:write", responses={200: TaskRecord}),
    Endpoint("POST", "/api/v1/deploys", deploys.create_deploy, "Start a deploy of a configured service",
             scope="deploy", body=DeployCreate, responses={202: DeployAccepted}),
    Endpoint("GET", "/api/v1/deploys", deploys.list_deploys, "List deploys (newest first)", scope="deploy",
             query=DeployListQuery, responses={200: DeployList}),
    Endpoint("GET", "/api/v1/deploys/{task_id}", deploys.get_deploy, "Get one deploy", name="deploy",
             scope="deploy", responses={200: DeployRecord}),
    Endpoint("POST", "/api/v1/deploys/{task_id}/promote", deploys.promote_deploy,
             "Skip the remaining canary steps (gates still run), or confirm a deploy awaiting confirmation",
             scope="deploy",
             responses={202: DeployRecord}),
    Endpoint("POST", "/api/v1/deploys/{task_id}/pause", deploys.pause_deploy,
             "Hold the rollout after this step", scope="deploy", responses={202: DeployRecord}),
    Endpoint("POST", "/api/v1/deploys/{task_id}/resume", deploys.resume_deploy, "Continue a paused rollout",
             scope="deploy", responses={202: DeployRecord}),
    Endpoint("POST", "/api/v1/deploys/{task_id}/abort", deploys.abort_deploy,
             "Abort: traffic back to the stable version", scope="deploy", responses={202: DeployRecord}),
    Endpoint("POST", "/api/v1/deploys/{task_id}/rollback", deploys.rollback_deploy,
             "Roll back to the previous stable version", scope="deploy", responses={202: DeployRecord}),
    Endpoint("GET", "/api/v1/services", deploys.list_services, "Configured services with stable versions",
             scope="deploy", responses={200: ServiceList}),
    Endpoint("POST", "/api/v1/services/{service}/rollback", emergency.rollback_service,
             "Roll a service back: stable pointer, a version once stable (to), its git tag or a provider "
             "deployment", scope="deploy", body=ServiceRollback,
             responses={202: emergency.ServiceRolledBack, 404: ErrorBody, 409: ErrorBody}),
    Endpoint("POST", "/api/v1/workers/stop", emergency.stop_workers,
             "Emergency stop: a stop command to every worker agent (or those named), audited", scope="admin",
             body=emergency.WorkersStop, responses={202: emergency.WorkersStopped, 404: ErrorBody}),
    Endpoint("POST", "/api/v1/chat", chat.chat, "Answer a chat turn (?wait=S: up to S s for the suggestion)",
             scope="tasks:write", body=schemas.ChatRequest, query=schemas.ChatQuery,
             responses={202: schemas.ChatAccepted, 200: schemas.ChatAnswer}),
    Endpoint("GET", "/ws/chat", chat.ws_chat, "Chat over a WebSocket; each suggestion is pushed when ready",
             scope="tasks:write", query=schemas.WsQuery, responses={101: None}),
    Endpoint("POST", "/api/v1/feedback/submit", chat.submit_feedback, "Rate an answered chat turn (1-5)",
             scope="tasks:write", body=FeedbackPayload,
             responses={202: TaskAccepted, 404: ErrorBody, 409: ErrorBody}),
    Endpoint("GET", "/api/v1/bandit", chat.bandit, "The coaching bandit: phase, alpha, per-arm statistics",
             scope="tasks:read", responses={200: schemas.BanditSummary}),
    Endpoint("POST", "/api/v1/bandit/rollback", chat.bandit_rollback,
             "Roll the shared bandit back to a kept checkpoint (manual)", scope="admin",
             body=schemas.BanditRollbackRequest, responses={200: schemas.BanditRollback, 404: ErrorBody}),
    Endpoint("GET", "/api/v1/bandit/evaluation", bandit_eval.evaluation,
             "Offline evaluation (IPS, SNIPS, DR) of the running policy, a uniform one and candidate alphas",
             scope="tasks:read", query=bandit_eval.EvaluationQuery,
             responses={200: bandit_eval.BanditEvaluation}),
    Endpoint("GET", "/health/live", health.live, "Liveness (process only)", scope=None,
             responses={200: HealthReport}),
    Endpoint("GET", "/health/ready", health.ready, "Readiness (Redis and a fresh worker heartbeat)",
             scope=None, responses={200: HealthReport, 503: HealthReport}),
    Endpoint("GET", "/health", health.health, "Component health report", scope=None,
             responses={200: HealthReport, 503: HealthReport}),
    Endpoint("GET", "/health/llm", llm_health,
             "Per-model LLM health (?model=all|fast|balanced|creative): 200 healthy, 503 naming the others",
             scope=None, query=LLMHealthQuery,
             responses={200: LLMHealthReport, 503: LLMHealthReport, 404: ErrorBody}),
    Endpoint("GET", "/metrics", meta.metrics, "Prometheus metrics (METRICS_TOKEN or an admin token)",
             scope="admin", responses={200: None}, content_type="text/plain"),
    Endpoint("GET", "/openapi.json", meta.openapi, "This document", responses={200: None}),
]  # fmt: skip

#: The rate-limit class of every route a token subject calls (shared.ratelimit.ROUTE_CLASSES says
#: what each class is; a test keeps this table and ENDPOINTS complete). ``POST /api/v1/tasks``
#: is checked inside submit.lua's batch, ``/ws/chat`` per message, the others by coordinator.http.
RATE_CLASSES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/tasks"): "submit",
    ("POST", "/api/v1/tasks/{task_id}/cancel"): "submit",
    ("GET", "/api/v1/tasks"): "read",
    ("GET", "/api/v1/tasks/{task_id}"): "read",
    ("GET", "/api/v1/bandit"): "read",
    ("GET", "/api/v1/bandit/evaluation"): "read",
    ("POST", "/api/v1/bandit/rollback"): "submit",
    ("POST", "/api/v1/workers/stop"): "submit",
    ("POST", "/api/v1/chat"): "chat",
    ("GET", "/ws/chat"): "chat",
    ("POST", "/api/v1/feedback/submit"): "chat",
    **{(ep.method, ep.path): "deploy" for ep in ENDPOINTS
       if ep.path.startswith(("/api/v1/deploys", "/api/v1/services"))},
}  # fmt: skip
#: Routes without a bucket: health checks (no token), the scrape and the cached document.
EXEMPT = frozenset({("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/health"),
                    ("GET", "/health/llm"), ("GET", "/metrics"), ("GET", "/openapi.json")})  # fmt: skip

#: Routes whose callers present credentials otherwise than ``Authorization: Bearer`` (the
#: others get :func:`coordinator.http.bearer_guard`); each guard checks the row's scope.
GUARDS: dict[tuple[str, str], GuardFactory] = {
    ("GET", "/ws/chat"): websocket_guard,  # or ?token=, and the Origin must match the Host
    ("GET", "/metrics"): metrics_guard,  # or METRICS_TOKEN
}
