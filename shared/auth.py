"""HS256 bearer tokens: minting (``opsdeck token``) and verification with scopes.

Claims: ``sub`` (who), ``iat``, ``exp`` and ``scope`` (space-separated). ``admin`` implies
every other scope. Verified tokens are cached by their exact text until they expire, so a
client that reuses its token pays for the signature check once.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from shared.errors import AuthError, ScopeError

#: Scopes a token may carry.
SCOPES = ("tasks:write", "tasks:read", "deploy", "admin", "viewer", "operator")
#: Default lifetime of a minted token (seconds).
DEFAULT_TTL = 3600
#: Verified tokens kept in the per-process cache.
CACHE_SIZE = 4096
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling and what they may do."""

    subject: str
    scopes: frozenset[str]
    expires_at: float

    def has(self, scope: str) -> bool:
        """True when the principal holds ``scope`` (``admin`` holds all)."""
        return scope in self.scopes or "admin" in self.scopes

    def require(self, scope: str) -> None:
        """Raise ScopeError unless the principal holds ``scope``."""
        if not self.has(scope):
            raise ScopeError(f"token lacks the '{scope}' scope")


def mint(key: bytes, scopes: list[str], *, subject: str = "operator", ttl: int = DEFAULT_TTL) -> str:
    """A signed token for ``subject`` with ``scopes`` valid for ``ttl`` seconds."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + ttl, "scope": " ".join(dict.fromkeys(scopes))}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


class Verifier:
    """Verifies bearer tokens against one key, with a bounded cache of good tokens."""

    def __init__(self, key: bytes, *, cache_size: int = CACHE_SIZE) -> None:
        self._key = key
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size
        #: Whole ``Authorization`` header values already verified (the per-request fast path).
        self._headers: dict[str, Principal] = {}

    def authorize(self, header: str | None, scope: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer`` header value, holding ``scope`` unless it
        is None: AuthError (401) without a valid token, ScopeError (403) without the scope.

        A header verified before costs one dict lookup and an expiry check (an API client sends
        the same header on every request)."""
        principal = self._headers.get(header) if header else None
        if principal is None or principal.expires_at <= time.time():
            if principal is not None:
                del self._headers[header]  # type: ignore[arg-type]  # expired: verify says so
            principal = self.from_header(header)
            if len(self._headers) >= self._cache_size:
                self._headers.clear()
            self._headers[header] = principal  # type: ignore[index]  # from_header refused None
        if scope is not None and scope not in principal.scopes:
            principal.require(scope)  # admin holds every scope; anything else is a 403
        return principal

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; AuthError otherwise."""
        principal = self._cache.get(token)
        if principal is not None:
            if principal.expires_at > time.time():
                return principal
            del self._cache[token]
            raise AuthError("token has expired")
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError):
            # PyJWT checks the claims' types only partly: an exp of 10**400 overflows its float
            raise AuthError("invalid token") from None
        principal = _principal(claims)
        self._cache[token] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def from_header(self, header: str | None) -> Principal:
        """Verify an ``Authorization: Bearer <token>`` header value."""
        if not header:
            raise AuthError("missing Authorization: Bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())


def _principal(claims: dict[str, Any]) -> Principal:
    """The principal of verified claims, whose content is checked here: a good signature says
    who made the token, not that its claims are well formed. AuthError unless ``sub`` is a
    non-empty string, ``exp`` a finite number and ``scope`` a space-separated string or a list
    of strings."""
    subject, expires, raw_scope = claims.get("sub"), claims.get("exp"), claims.get("scope", "")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid token: sub must be a non-empty string")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise AuthError("invalid token: exp must be a number")
    try:
        expires_at = float(expires)
    except OverflowError:
        raise AuthError("invalid token: exp is out of range") from None
    if not math.isfinite(expires_at):
        raise AuthError("invalid token: exp is out of range")
    if isinstance(raw_scope, str):
        scopes = raw_scope.split()
    elif isinstance(raw_scope, list) and all(isinstance(s, str) for s in raw_scope):
        scopes = raw_scope
    else:
        raise AuthError("invalid token: scope must be a space-separated string or a list of strings")
    return Principal(subject, frozenset(scopes), expires_at)
