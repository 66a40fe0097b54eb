"""The dashboard's security edge: authentication on every route but login/health/static, CSRF and
same-origin checks on every state change, role checks, and security headers on every response."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from dashboard.auth import CSRF_HEADER, User, authenticate, revoked
from dashboard.keys import SESSIONS, USER
from shared.errors import AuthError, ScopeError
from shared.web import Handler

#: Paths anyone may fetch.
PUBLIC_PATHS = frozenset({"/login", "/health", "/health/live"})
#: Paths that check their own credentials (a metrics token is no session): /metrics.
SELF_AUTHENTICATED = frozenset({"/metrics"})
#: Path prefix of the static files (public: CSS and the one JS file).
STATIC_PREFIX = "/static/"
#: Methods that never change state (every other method needs CSRF and same origin).
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: Content-Security-Policy of every response: no inline script, no third party, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_LOGIN_REQUIRED = (
    "<!doctype html><html><head><meta charset=utf-8><title>Log in · Opsdeck</title>"
    '<meta http-equiv="refresh" content="0; url=/login"></head>'
    '<body><p>Please <a href="/login">log in</a>.</p></body></html>'
)


def is_public(path: str) -> bool:
    """True for the login page, health checks and static files."""
    return path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX)


def same_origin(request: web.Request, origin: str | None) -> bool:
    """True when ``origin`` names this host (host and port; the scheme may differ behind a
    TLS-terminating proxy)."""
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.host.lower()


def current_user(request: web.Request) -> User:
    """The authenticated caller (set by :func:`guard`)."""
    user: User = request[USER]
    return user


def require_control(request: web.Request) -> User:
    """The caller, who must be an operator or admin (403 for viewers)."""
    user = current_user(request)
    if not user.can_control:
        raise ScopeError("viewers cannot change anything; log in as an operator or admin")
    return user


async def _csrf_presented(request: web.Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return str((await request.post()).get("csrf_token", ""))
    return ""


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a session or token; 403 on a cross-site or CSRF-less state change."""
    if is_public(request.path) or request.path in SELF_AUTHENTICATED:
        return await handler(request)
    user = authenticate(request)
    if user is not None and await revoked(request, user):
        user = None
    if user is None:
        if request.path.startswith("/api/") or request.path == "/ws":
            raise AuthError("log in, or send Authorization: Bearer <token with admin/operator/viewer scope>")
        return web.Response(status=401, text=_LOGIN_REQUIRED, content_type="text/html")
    request[USER] = user
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        if origin is not None and not same_origin(request, origin):
            raise ScopeError("cross-origin request refused")
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise ScopeError("cross-site request refused")
        if user.via == "session" and not request.app[SESSIONS].csrf_ok(user, await _csrf_presented(request)):
            raise ScopeError(f"missing or wrong CSRF token (send the {CSRF_HEADER} header)")
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CSP and friends everywhere; no caching of anything private."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(STATIC_PREFIX):
        response.headers.setdefault("Cache-Control", "no-store")
