"""Per-subject rate limits: a token bucket per (token subject, route class), kept in Redis so every
coordinator process shares it.

The route classes, in one table (:data:`ROUTE_CLASSES`; ``coordinator.routes.RATE_CLASSES`` maps
each route onto one, and a test keeps the two complete):

=========  ====================================================================================
class      routes
=========  ====================================================================================
submit     ``POST /api/v1/tasks`` (checked inside ``submit.lua``'s batch: no extra round trip),
           ``POST /api/v1/tasks/{id}/cancel``, ``POST /api/v1/bandit/rollback``
chat       ``POST /api/v1/chat``, every ``/ws/chat`` message, ``POST /api/v1/feedback/submit``
read       ``GET /api/v1/tasks``, ``GET /api/v1/tasks/{id}``, ``GET /api/v1/bandit``
deploy     every ``/api/v1/deploys`` route and ``GET /api/v1/services``
=========  ====================================================================================

Never limited: ``/health*`` (no token), ``/metrics`` (scrapers), ``/openapi.json`` (a cached
document) and unmatched paths (404/405 before any token is read). The one admin-only write
(``POST /api/v1/bandit/rollback``) is rare and counts in ``submit``, hence no ``admin`` class.

Each class is configured by ``RATE_LIMIT_<CLASS>`` = ``<rate>/s[:<burst>]`` (tokens per second,
bucket size; the burst defaults to one second's worth, at least 1) or ``off``. Unset, a class is
off in development and gets :data:`PRODUCTION_DEFAULTS` in production: an API reachable from the
internet should not depend on an operator remembering to turn limits on, and the defaults are
far above what a person or a well-behaved client does, so they catch runaway loops, not users.

The bucket is stored in its GCRA form (``shared/lua/ratelimit_lib.lua``): one integer per
bucket, the *theoretical arrival time* in µs of Redis server time, which is exactly a token
bucket of ``burst`` tokens refilled at ``rate``. Its key expires once the bucket would be full
again, so idle subjects keep no state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from shared.errors import OpsdeckError
from shared.store import script_source

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from shared.keys import Keys

#: The route classes and what each covers (the one table; see the module docstring).
ROUTE_CLASSES: dict[str, str] = {
    "submit": "POST /api/v1/tasks, POST /api/v1/tasks/{id}/cancel, POST /api/v1/bandit/rollback",
    "chat": "POST /api/v1/chat, each /ws/chat message, POST /api/v1/feedback/submit",
    "read": "GET /api/v1/tasks, GET /api/v1/tasks/{id}, GET /api/v1/bandit",
    "deploy": "/api/v1/deploys*, GET /api/v1/services",
}
#: The class of ``POST /api/v1/tasks``, checked inside submit.lua's batch.
SUBMIT_CLASS = "submit"
#: What a class gets in production when its RATE_LIMIT_<CLASS> is unset (per subject).
PRODUCTION_DEFAULTS: dict[str, str] = {
    "submit": "100/s:200",
    "chat": "20/s:40",
    "read": "100/s:200",
    "deploy": "5/s:20",
}
#: Highest rate (tokens/s) and burst a setting may ask for.
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000
_FORM = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)/s(?::([0-9]+))?$")
_EXPECTED = "expected '<rate>/s' or '<rate>/s:<burst>' (e.g. '10/s:20'; rate > 0 tokens per second, burst a whole number >= 1) or 'off'"  # noqa: E501


class RateSpec(NamedTuple):
    """One class's bucket: ``rate`` tokens per second, at most ``burst`` of them."""

    rate: float
    burst: int

    @property
    def interval_us(self) -> int:
        """Microseconds per token (what the scripts are given: integers, exact in Lua)."""
        return max(1, round(1_000_000 / self.rate))

    @property
    def limit_us(self) -> int:
        """The bucket's size in microseconds of refill."""
        return self.burst * self.interval_us


def parse_rate(text: str) -> RateSpec | None:
    """``<rate>/s[:<burst>]`` as a RateSpec, ``off`` as None; ValueError with the expected form."""
    value = text.strip()
    if value.lower() == "off":
        return None
    found = _FORM.match(value)
    if found is None:
        raise ValueError(f"{_EXPECTED}; got {text!r}")
    rate = float(found.group(1))
    if not (0 < rate <= MAX_RATE) or not math.isfinite(rate):
        raise ValueError(f"{_EXPECTED}; got {text!r} (rate must be > 0 and <= {MAX_RATE:g}/s)")
    burst = int(found.group(2)) if found.group(2) is not None else max(1, math.ceil(rate))
    if not 1 <= burst <= MAX_BURST:
        raise ValueError(f"{_EXPECTED}; got {text!r} (burst must be 1..{MAX_BURST})")
    return RateSpec(rate, burst)


def retry_after_seconds(wait_ms: int) -> int:
    """``Retry-After``: the wait in whole seconds, rounded up (at least 1)."""
    return max(1, math.ceil(wait_ms / 1000))


class RateLimited(OpsdeckError):
    """A subject is over its bucket of a route class → 429 ``rate_limited`` with ``Retry-After``."""

    status = 429
    code = "rate_limited"

    def __init__(self, route_class: str, wait_ms: int) -> None:
        self.route_class = route_class
        self.wait_ms = int(wait_ms)
        self.retry_after = retry_after_seconds(self.wait_ms)
        super().__init__(
            f"rate limit of the '{route_class}' routes exceeded for this token's subject; "
            f"retry after {self.retry_after} s"
        )


class RateLimiter:
    """Checks the buckets of the classes checked by a script call of their own (all but the
    submit class of ``POST /api/v1/tasks``, which ``submit.lua`` checks in its batch)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, limits: Mapping[str, RateSpec]) -> None:
        self._keys = keys
        self._limits = dict(limits)
        self._script = client.register_script(script_source("ratelimit"))

    def enabled(self, route_class: str) -> bool:
        """True when ``route_class`` has a bucket."""
        return route_class in self._limits

    async def check(self, subject: str, route_class: str) -> None:
        """Take one token of ``subject``'s bucket of ``route_class`` (one script call); raise
        RateLimited with the wait when it is empty. A class without a bucket passes."""
        spec = self._limits.get(route_class)
        if spec is None:
            return
        key = self._keys.rate_limit(route_class, subject)
        wait_ms = await self._script(keys=[key], args=[spec.interval_us, spec.limit_us])
        if wait_ms:
            raise RateLimited(route_class, int(wait_ms))
