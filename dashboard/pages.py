"""Server-rendered pages (jinja2, autoescaped); the live parts are filled by ``static/app.js``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import orjson
from aiohttp import web
from pydantic import ValidationError

from dashboard import audit, views
from dashboard.api_queues import MAX_LIST, checked_queue_name, queue_detail_data
from dashboard.api_tasks import (
    ID_PREFIX,
    TaskQuery,
    failure_groups,
    find_tasks,
    search,
    task_detail_data,
)
from dashboard.api_workers import AuditQuery, read_audit, worker_detail_data
from dashboard.appkeys import KEYS, REDIS, SESSIONS, SETTINGS
from dashboard.auth import User
from dashboard.guard import current_user
from shared import __version__
from shared.task_types import task_types
from shared.tasks import Priority, TaskStatus
from shared.taskstore import MAX_SCAN
from shared.web import truncate

#: A sampled trace's id as the task record holds it (32 lower-case hex digits).
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

#: Characters of JSON shown in a page before it is cut.
MAX_PAGE_JSON = 16_384


def render(request: web.Request, template: str, page: str, context: dict[str, Any]) -> web.Response:
    """Render ``template`` with the common context (user, CSRF token, page name, version)."""
    user: User = current_user(request)
    base = {
        "user": user,
        "csrf": request.app[SESSIONS].csrf_token(user),
        "page": page,
        "version": __version__,
        "interval": request.app[SETTINGS].dashboard_stream_interval,
        # a heartbeat key lives 3 poll intervals (worker/agent.py): older than that, it is stale
        "heartbeat_ttl": 3 * request.app[SETTINGS].worker_poll_interval,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context})


def live_key(kind: str, arg: str) -> str:
    """A page section key of the live stream (``task:<id>``, ...; see dashboard.live_sections)."""
    return f"{kind}:{quote(arg, safe='')}"


def fmt_time(value: Any) -> str:
    """Epoch seconds (or an ISO string) as ``YYYY-MM-DD HH:MM:SS`` UTC; ``-`` when empty."""
    if value in (None, ""):
        return "-"
    if isinstance(value, str):
        return value.replace("T", " ").replace("Z", "")[:23]
    return datetime.fromtimestamp(float(value), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_json(value: Any) -> str:
    """Pretty JSON, cut at MAX_PAGE_JSON characters (autoescaped by the template)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return truncate(text, MAX_PAGE_JSON) or ""


async def overview(request: web.Request) -> web.Response:
    """Worker cards, queues, throughput, error-rate and latency charts, alerts (live)."""
    live = ["workers", "queues", "throughput", "alerts"]
    return render(request, "overview.html", "overview", {"live": live, "types": sorted(task_types())})


async def workers(request: web.Request) -> web.Response:
    """Workers with controls (live) and the recent audit log."""
    entries = await audit.recent(request.app[REDIS], request.app[KEYS], 50)
    live = ["workers", "audit?limit=50"]
    return render(request, "workers.html", "workers", {"audit": entries, "live": live})


async def worker(request: web.Request) -> web.Response:
    """One worker: heartbeat, processes, desired state, command history with replies."""
    data = await worker_detail_data(request, request.match_info["id"])
    live = ["workers", live_key("worker", data["id"])]
    return render(request, "worker.html", "worker", {"w": data, "live": live})


async def queues(request: web.Request) -> web.Response:
    """Every queue with depth, delayed and dead letters (live), pause/resume/purge."""
    return render(request, "queues.html", "queues", {"live": ["queues"]})


async def queue(request: web.Request) -> web.Response:
    """One queue: delayed messages with ETA, dead letters with retry one/all, purge."""
    name = await checked_queue_name(request)
    data = await queue_detail_data(request, name, MAX_LIST)
    return render(request, "queue.html", "queue", {"q": data, "live": [live_key("queue", name)]})


async def tasks(request: web.Request) -> web.Response:
    """Task search with filters and pages, saved views, and failures grouped by exception type."""
    params = {k: v for k, v in request.query.items() if v}
    if "id" in params:  # the old id box: the same lookup as the header's search box
        return await find_page(request, params["id"])
    saved = params.pop("saved", "")
    try:
        query = TaskQuery.model_validate(params)
        error = ""
    except ValidationError as exc:
        query, error = TaskQuery(), "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
    page = await search(request, query)
    cursor = page.next_cursor
    next_params = {**{k: v for k, v in params.items() if k != "cursor"}, "cursor": cursor} if cursor else None
    return render(
        request,
        "tasks.html",
        "tasks",
        {
            "items": page.items,
            "scan": page,
            "scan_limit": MAX_SCAN,
            "next_params": next_params,
            "params": params,
            "view_query": views.clean_query(urlencode(params)),
            "views": await views.list_views(request),
            "saved": saved,
            "error": error,
            "live": [] if error else ["tasks?" + urlencode(params)],
            "types": sorted(task_types()),
            "statuses": [s.value for s in TaskStatus],
            "priorities": [p.value for p in Priority],
            "groups": await failure_groups(request, 500),
        },
    )


_ID_PREFIX = re.compile(ID_PREFIX)


async def find(request: web.Request) -> web.Response:
    """``GET /tasks/find?q=``: the header's search box (a task id, whole or its start)."""
    return await find_page(request, request.query.get("q", ""))


async def find_page(request: web.Request, text: str) -> web.Response:
    """Straight to the task when one id starts with ``text``, the list of them when several,
    "no task" (404) otherwise."""
    text = text.strip()
    matches: list[dict[str, Any]] = []
    more, status = False, 404
    if text and len(text) <= 64 and _ID_PREFIX.match(text):
        matches, more = await find_tasks(request, text, 20)
        status = 200 if matches else 404
    if len(matches) == 1:
        raise web.HTTPSeeOther(f"/tasks/{quote(matches[0]['id'], safe='')}")
    response = render(request, "tasks_found.html", "tasks", {"q": text, "matches": matches, "more": more})
    response.set_status(status)
    return response


async def task(request: web.Request) -> web.Response:
    """One task: payload, result, error, traceback, timeline; retry (exact or edited) and cancel."""
    data = await task_detail_data(request, request.match_info["id"])
    return render(
        request,
        "task.html",
        "task",
        {
            "t": data,
            "trace_url": trace_url(request, data.get("trace_id")),
            "live": [live_key("task", data["id"])],
        },
    )


def trace_url(request: web.Request, trace_id: object) -> str | None:
    """The trace's page in Jaeger, Tempo, ... (``TRACE_URL_TEMPLATE`` with ``{trace_id}``), or None."""
    template = request.app[SETTINGS].trace_url_template
    if not template or not isinstance(trace_id, str) or not _TRACE_ID.match(trace_id):
        return None
    return template.replace("{trace_id}", trace_id)


async def audit_page(request: web.Request) -> web.Response:
    """The audit log of control actions: filters (issuer, action, target, time), pages, live."""
    params = {k: v for k, v in request.query.items() if v}
    try:
        query = AuditQuery.model_validate(params)
        error = ""
    except ValidationError as exc:
        query, error = AuditQuery(), "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
    page = await read_audit(request.app[REDIS], request.app[KEYS], query)
    cursor = page["next_cursor"]
    filters = {k: v for k, v in params.items() if k != "cursor"}
    context = {
        "audit": page["entries"],
        "audit_page": page,
        "params": params,
        "next_params": {**filters, "cursor": cursor} if cursor else None,
        "first_params": filters if "cursor" in params else None,
        "error": error,
        "live": [] if error else ["audit?" + urlencode({"limit": query.limit, **params})],
    }
    return render(request, "audit.html", "audit", context)


async def health(request: web.Request) -> web.Response:
    """``GET /health``, ``/health/live``: the process answers."""
    return web.json_response({"status": "ok", "version": __version__})
