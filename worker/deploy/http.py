"""A small synchronous JSON HTTP client for provider APIs, with retries (stdlib only).

Deploy actors run in Dramatiq worker threads, so a blocking client is the simple fit.
429, 5xx, timeouts and connection errors are retried with exponential backoff and full
jitter, honouring ``Retry-After``; other 4xx (auth, validation) fail at once with the
provider's own message.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from shared import tracing
from worker.deploy.errors import ProviderRejected, ProviderUnavailable

#: Longest wait honoured from a Retry-After header (seconds).
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Response:
    """Status, headers and the decoded JSON body (None when empty or not JSON)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures."""

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt`` (1-based): Retry-After if given, else jittered backoff."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _message(body: Any, fallback: str) -> str:
    """The provider's error message from common shapes (``message``, ``error.message``, ...)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "error", "detail"):
            if body.get(key):
                return str(body[key])
    return fallback


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]


def request(
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    data: bytes | None = None,
    what: str = "provider",
) -> Response:
    """Send one request with retries; ProviderRejected on 4xx, ProviderUnavailable when retries
    run out. Traced as one CLIENT span ``<what> <method>`` (the host: never the path or query)."""
    parts = urlsplit(url)
    # the host only: a webhook's path can be its secret (Slack's incoming webhooks' is)
    attributes = {"http.request.method": method, "server.address": parts.hostname or ""}
    with tracing.span(f"{what} {method}", attributes, kind=tracing.SpanKind.CLIENT) as span:
        response = _send(
            method, url, policy=policy, headers=headers, json_body=json_body, data=data, what=what
        )
        span.set_attribute("http.response.status_code", response.status)
        return response


def _send(
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    headers: dict[str, str] | None,
    json_body: Any,
    data: bytes | None,
    what: str,
) -> Response:
    if json_body is not None:
        data = json.dumps(json_body, separators=(",", ":")).encode()
    hdrs = {"Accept": "application/json", "User-Agent": "opsdeck-deploy", **(headers or {})}
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        req = urllib.request.Request(url, data=data, headers=hdrs, method=method)  # noqa: S310 - URLs come from the services file
        try:
            with urllib.request.urlopen(req, timeout=policy.timeout) as resp:  # noqa: S310
                return Response(resp.status, _decode(resp.read()), dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            body = _decode(exc.read())
            if exc.code != 429 and exc.code < 500:
                raise ProviderRejected(
                    f"{what} answered {exc.code}: {_message(body, exc.reason)}", status=exc.code
                ) from None
            retry_after = _retry_after(exc.headers.get("Retry-After"))
            problem = f"{what} answered {exc.code}: {_message(body, str(exc.reason))}"
        except TimeoutError:
            problem = f"{what} timed out after {policy.timeout}s"
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problem = f"{what} unreachable: {reason}"
        if attempt > policy.retries:
            raise ProviderUnavailable(f"{problem} (after {attempt} attempts)")
        time.sleep(policy.delay(attempt, retry_after))
