"""The dashboard's security edge: authentication on every route but the public ones, CSRF and
same-origin checks on every state change, the role each route declares in
:data:`dashboard.routes.SCOPES` (checked before its handler runs), and security headers on every
response."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from dashboard.appkeys import SESSIONS, SETTINGS, USER
from dashboard.auth import CSRF_HEADER, User, authenticate, revoked
from shared.errors import AuthError, ScopeError
from shared.web import Handler

#: The dashboard roles from least to most (a route declaring one admits it and those above).
RANK: Final = {"viewer": 0, "operator": 1, "admin": 2}
#: What a caller one role short of the route's is told (403).
_SHORT = {
    "operator": "viewers cannot change anything; log in as an operator or admin",
    "admin": "this needs the admin role",
}
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
    """True for the paths the route table declares public: login page, health checks, static files."""
    from dashboard.routes import PUBLIC_PATHS  # the table imports the views, which import this module

    return path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX)


def same_origin(request: web.Request, origin: str | None) -> bool:
    """True when ``origin`` names this host (host and port; the scheme may differ behind a
    TLS-terminating proxy)."""
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.host.lower()


def current_user(request: web.Request) -> User:
    """The authenticated caller (set by the guard, holding the route's declared role)."""
    user: User = request[USER]
    return user


async def _csrf_presented(request: web.Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return str((await request.post()).get("csrf_token", ""))
    return ""


def _metrics_allowed(request: web.Request) -> bool:
    """``METRICS_TOKEN`` as bearer (constant time), or a valid admin token."""
    header = request.headers.get("Authorization", "")
    token = request.app[SETTINGS].metrics_token
    if token and hmac.compare_digest(header.encode(), f"Bearer {token.get_secret_value()}".encode()):
        return True
    try:
        return request.app[SESSIONS].verifier.from_header(header or None).has("admin")
    except AuthError:
        return False


async def _caller(request: web.Request) -> User | None:
    """The authenticated, unrevoked caller; AuthError (401 JSON) on the API and the stream, None
    (the HTML login redirect) on pages."""
    user = authenticate(request)
    if user is not None and await revoked(request, user):
        user = None
    if user is None and (request.path.startswith("/api/") or request.path == "/ws"):
        raise AuthError("log in, or send Authorization: Bearer <token with admin/operator/viewer scope>")
    return user


async def _check_state_change(request: web.Request, user: User) -> None:
    """403 for a cross-origin or cross-site state change, or a session's without its CSRF token."""
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(request, origin):
        raise ScopeError("cross-origin request refused")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise ScopeError("cross-site request refused")
    if user.via == "session" and not request.app[SESSIONS].csrf_ok(user, await _csrf_presented(request)):
        raise ScopeError(f"missing or wrong CSRF token (send the {CSRF_HEADER} header)")


def make_guard(
    scopes: Mapping[tuple[str, str], str | None], metrics_token_routes: frozenset[tuple[str, str]]
) -> Middleware:
    """The guard middleware enforcing ``scopes`` ((method, path) → declared scope, None for
    public; :data:`dashboard.routes.SCOPES`): 401 without a session or token, 403 on a cross-site
    or CSRF-less state change, 403 for a role below the route's. A path no route matches (a 404
    or 405 to come) is public when the table declares its path public, else needs any role.
    ``metrics_token_routes`` also take ``METRICS_TOKEN`` and answer every refusal with 401."""

    def declared(request: web.Request) -> str | None:
        resource = request.match_info.route.resource
        if resource is None:  # unmatched path or method
            return None if is_public(request.path) else "viewer"
        method = "GET" if request.method == "HEAD" else request.method
        return scopes.get((method, resource.canonical), "admin")  # a route missing from the table: closed

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        scope = declared(request)
        if scope is None:
            return await handler(request)
        resource = request.match_info.route.resource
        if resource is not None and ("GET", resource.canonical) in metrics_token_routes:
            if not _metrics_allowed(request):
                raise AuthError("METRICS_TOKEN or an admin token required")
            return await handler(request)
        user = await _caller(request)
        if user is None:
            return web.Response(status=401, text=_LOGIN_REQUIRED, content_type="text/html")
        request[USER] = user
        if request.method not in SAFE_METHODS:
            await _check_state_change(request, user)
        if RANK[user.role] < RANK[scope]:
            raise ScopeError(_SHORT.get(scope, f"this needs the {scope} role"))
        return await handler(request)

    return guard


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CSP and friends everywhere; no caching of anything private."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(STATIC_PREFIX):
        response.headers.setdefault("Cache-Control", "no-store")
