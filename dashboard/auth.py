"""Who is calling: signed session cookies, bearer tokens, roles, CSRF tokens and the login page.

A session is a JWT signed with a key derived from ``JWT_SECRET`` (so a session cookie is never
a valid API token elsewhere), carried in an HttpOnly, SameSite=Strict cookie (Secure in
production). Its CSRF token is an HMAC of the session id, so any number of dashboard processes
behind a load balancer accept it; the only server-side state is the revocation a logout writes
to Redis (until the session would have expired), which every process checks. Scripts may instead send
``Authorization: Bearer <token>`` minted by ``opsdeck token`` (no cookie, so no CSRF needed).

Login takes ``DASHBOARD_PASSWORD`` (role admin; compared in constant time) or a token with the
``admin``, ``operator`` or ``viewer`` scope; failures are counted per client address in Redis
and refused with 429 beyond ``DASHBOARD_LOGIN_ATTEMPTS`` per minute.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp_jinja2
import jwt
from aiohttp import web

from dashboard.appkeys import KEYS, REDIS, SESSIONS, SETTINGS, USER
from shared import __version__
from shared.auth import Principal, Verifier
from shared.errors import AuthError

Role = Literal["viewer", "operator", "admin"]
#: Name of the session cookie.
COOKIE = "opsdeck_session"
#: Name of the pre-login cookie that carries the login form's CSRF token.
LOGIN_COOKIE = "opsdeck_login"
#: Header (or form field ``csrf_token``) that must carry the CSRF token on state changes.
CSRF_HEADER = "X-CSRF-Token"
#: Window of the failed-login counter (seconds).
LOGIN_WINDOW = 60
#: The name a password login gives (who is behind the shared password: the audit log's issuer).
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
NAME_NEEDED = "Give your name with the password (letters, digits and . _ @ + -, at most 64)."
_AUDIENCE = "opsdeck-dashboard"


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated caller: who, which role, and how (session cookie or bearer token)."""

    subject: str
    role: Role
    via: Literal["session", "bearer"]
    session_id: str = ""
    #: When the session cookie expires (epoch seconds; 0 for bearer callers).
    expires_at: float = 0.0

    @property
    def can_control(self) -> bool:
        """Operators and admins change things; viewers only read."""
        return self.role in ("operator", "admin")


def role_of(principal: Principal) -> Role | None:
    """The dashboard role a token grants (None when it grants none)."""
    if "admin" in principal.scopes:
        return "admin"
    if "operator" in principal.scopes:
        return "operator"
    if "viewer" in principal.scopes:
        return "viewer"
    return None


class Sessions:
    """Issues and reads session cookies; derives CSRF tokens; verifies bearer tokens."""

    def __init__(self, secret: bytes, ttl: int, secure: bool) -> None:
        self._key = hmac.new(secret, b"opsdeck dashboard session v1", hashlib.sha256).digest()
        self.ttl = ttl
        self.secure = secure
        self.verifier = Verifier(secret)

    def issue(self, subject: str, role: Role) -> str:
        """A signed session for ``subject`` with ``role``."""
        now = int(time.time())
        claims = {
            "sub": subject,
            "role": role,
            "sid": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + self.ttl,
            "aud": _AUDIENCE,
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def read(self, cookie: str) -> User | None:
        """The user of a valid session cookie, else None."""
        try:
            claims = jwt.decode(
                cookie,
                self._key,
                algorithms=["HS256"],
                audience=_AUDIENCE,
                options={"require": ["exp", "sub", "sid", "role"]},
            )
        except jwt.InvalidTokenError:
            return None
        role = claims.get("role")
        if role not in ("viewer", "operator", "admin"):
            return None
        return User(str(claims["sub"]), role, "session", str(claims["sid"]), float(claims["exp"]))

    def csrf_token(self, user: User) -> str:
        """The CSRF token of a session (empty for bearer callers, who need none)."""
        if user.via != "session":
            return ""
        return hmac.new(self._key, b"csrf:" + user.session_id.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: User, presented: str) -> bool:
        """True when ``presented`` is the session's CSRF token (constant-time)."""
        expected = self.csrf_token(user)
        return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())

    def bearer(self, header: str) -> User:
        """The user of an ``Authorization: Bearer`` header; AuthError/ScopeError otherwise."""
        principal = self.verifier.from_header(header)
        role = role_of(principal)
        if role is None:
            raise AuthError("token lacks the admin, operator or viewer scope")
        return User(principal.subject, role, "bearer")


def authenticate(request: web.Request) -> User | None:
    """The caller (bearer header first, then the session cookie), or None."""
    sessions = request.app[SESSIONS]
    header = request.headers.get("Authorization")
    if header:
        try:
            return sessions.bearer(header)
        except AuthError:
            return None
    cookie = request.cookies.get(COOKIE)
    return sessions.read(cookie) if cookie else None


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(24)
    password_enabled = request.app[SETTINGS].dashboard_password is not None
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        {
            "login_csrf": token,
            "error": error,
            "password_enabled": password_enabled,
            "user": None,
            "csrf": "",
            "version": __version__,
        },
        status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.app[SESSIONS].secure,
        max_age=3600,
        path="/login",
    )
    return response


async def login_form(request: web.Request) -> web.Response:
    """The login page (password and/or token)."""
    return _login_page(request)


async def login(request: web.Request) -> web.Response:
    """Check the password or token (rate limited, login-CSRF checked) and start a session."""
    app = request.app
    client, failures_key = app[REDIS], app[KEYS].login_failures(request.remote or "unknown")
    failures = int(await client.get(failures_key) or 0)
    if failures >= app[SETTINGS].dashboard_login_attempts:
        return _login_page(request, "Too many failed logins; wait a minute.", status=429)
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    given_csrf = str(form.get("login_csrf", ""))
    if not expected or not hmac.compare_digest(expected.encode(), given_csrf.encode()):
        return _login_page(request, "The login form expired; try again.", status=403)
    name, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    if password and not USER_NAME.match(name):
        return _login_page(request, NAME_NEEDED, 422)
    user = _check_credentials(request, password, str(form.get("token", "")).strip(), name)
    if user is None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.incr(failures_key)
            pipe.expire(failures_key, LOGIN_WINDOW)
            await pipe.execute()
        return _login_page(request, "Wrong password or token (admin, operator or viewer scope).", 401)
    sessions = app[SESSIONS]
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE,
        sessions.issue(user.subject, user.role),
        httponly=True,
        samesite="Strict",
        secure=sessions.secure,
        max_age=sessions.ttl,
        path="/",
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


def _check_credentials(request: web.Request, password: str, token: str, name: str = "") -> User | None:
    configured = request.app[SETTINGS].dashboard_password
    if password and configured is not None:
        given = hashlib.sha256(password.encode()).digest()  # equal lengths: nothing leaks, not even size
        if hmac.compare_digest(given, hashlib.sha256(configured.get_secret_value().encode()).digest()):
            return User(name, "admin", "session")  # the name given: the issuer of what they do
        return None
    if token:
        try:
            return request.app[SESSIONS].bearer(f"Bearer {token}")
        except AuthError:
            return None
    return None


async def logout(request: web.Request) -> web.Response:
    """End the session (POST with the CSRF token) and go back to the login page.

    The session is revoked in Redis until it would have expired, so a copy of the cookie is
    refused too, not only the browser's own (which is deleted)."""
    user: User = request[USER]
    if user.via == "session":
        ttl = max(1, int(user.expires_at - time.time()) + 1)
        await request.app[REDIS].set(request.app[KEYS].revoked_session(user.session_id), 1, ex=ttl)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def revoked(request: web.Request, user: User) -> bool:
    """True when ``user``'s session was ended by a logout (bearer callers are never revoked)."""
    if user.via != "session":
        return False
    return bool(await request.app[REDIS].exists(request.app[KEYS].revoked_session(user.session_id)))
