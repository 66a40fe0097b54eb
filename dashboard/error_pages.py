"""Errors of page routes as pages of the site: the layout with its nav, the status, what happened
and a way back. ``/api/*``, the stream, health, metrics and static files, and callers that ask
for JSON (``Accept`` naming ``application/json`` and not ``text/html``) keep the JSON error shape.

The page is rendered from the JSON answer :func:`shared.web.exception_response` made, so both say
the same thing. It needs no Redis: when the guard could not check the session (Redis down: the
revocation lookup failed) nobody is named and the nav is the plain list of links."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
import orjson
from aiohttp import web

from dashboard.appkeys import SESSIONS, SETTINGS, USER
from dashboard.auth import User
from shared import __version__
from shared.web import Handler

#: Paths that are no pages (their errors stay JSON or whatever they are).
NOT_PAGES = ("/api/", "/static/", "/health", "/metrics", "/ws")
#: Headers of the JSON answer the page keeps.
KEPT_HEADERS = ("Retry-After", "Allow", "WWW-Authenticate")
TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}
#: Path prefix → the list page it belongs to (the way back).
SECTIONS = (
    ("/tasks", "/tasks", "All tasks"),
    ("/queues", "/queues", "All queues"),
    ("/workers", "/workers", "All workers"),
    ("/deploys", "/deploys", "All deploys"),
    ("/audit", "/audit", "The audit log"),
)


def wants_page(request: web.Request) -> bool:
    """True for a page route asked by a browser (not the API, not a JSON caller)."""
    if request.path.startswith(NOT_PAGES):
        return False
    accept = request.headers.get("Accept", "")
    return not ("application/json" in accept and "text/html" not in accept)


def way_back(request: web.Request) -> tuple[str, str]:
    """The list page the failed path belongs to (href, label); the overview otherwise."""
    for prefix, href, label in SECTIONS:
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return href, label
    return "/", "Overview"


def _referrer(request: web.Request) -> str | None:
    """The same-origin page the caller came from (path and query only), if any."""
    referer = request.headers.get("Referer")
    if not referer:
        return None
    parts = urlsplit(referer)
    if parts.netloc.lower() != request.host.lower() or not parts.path.startswith("/"):
        return None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return None if target == request.path_qs else target


def error_page(request: web.Request, status: int, error: dict[str, Any]) -> web.Response:
    """The HTML page of an error answer (``error``: the JSON shape's ``error`` object)."""
    user: User | None = request.get(USER)
    href, label = way_back(request)
    context = {
        "user": user,
        "csrf": request.app[SESSIONS].csrf_token(user) if user else "",
        "page": "error",
        "version": __version__,
        "interval": request.app[SETTINGS].dashboard_stream_interval,
        "minimal_nav": user is None,
        "status": status,
        "title": TITLES.get(status, "Error"),
        "code": str(error.get("code") or ""),
        "message": str(error.get("message") or ""),
        "fields": [f for f in error.get("fields") or [] if isinstance(f, dict)][:50],
        "back_href": href,
        "back_label": label,
        "referrer": _referrer(request),
        "retry_href": request.path_qs if request.method in ("GET", "HEAD") else None,
    }
    return aiohttp_jinja2.render_template("error.html", request, context, status=status)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the error edge: a JSON error answer of a page route becomes its page."""
    response = await handler(request)
    if response.status < 400 or not isinstance(response, web.Response):
        return response
    if response.content_type != "application/json" or not wants_page(request):
        return response
    try:
        error = orjson.loads(response.body)["error"]  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return response
    if not isinstance(error, dict):
        return response
    page = error_page(request, response.status, error)
    for name in KEPT_HEADERS:
        if name in response.headers:
            page.headers[name] = response.headers[name]
    return page
