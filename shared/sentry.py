"""Sentry error reporting (off unless ``SENTRY_DSN`` is set).

Events carry the release (``RENDER_GIT_COMMIT``, else the git commit, else the version), the
environment, and as tags whatever the logging context holds (``correlation_id``, ``task_id``,
``task_type``, ``route``). Nothing personal or secret leaves: no user info, cookies, bodies, query
strings, queue payloads or local variables are collected, request headers are allow-listed, and
``before_send`` blanks values under secret-looking keys (Sentry's denylist plus Opsdeck's) and any
string that looks like a bearer token or JWT, wherever they appear in the event.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.scrubber import DEFAULT_DENYLIST
from structlog.contextvars import get_contextvars

from shared import __version__
from shared.settings import Settings

#: Context keys copied into every event as tags.
TAG_KEYS = ("correlation_id", "task_id", "task_type", "route")
#: Extra keys the scrubber blanks (on top of Sentry's default denylist).
EXTRA_DENYLIST = ["jwt", "jwt_secret", "bearer", "dsn", "metrics_token", "llm_api_key", "render_api_key"]
_SECRET_TEXT = re.compile(r"(Bearer\s+\S+|eyJ[\w-]+\.[\w-]+\.[\w-]+)")
FILTERED = "[Filtered]"


def release() -> str:
    """``RENDER_GIT_COMMIT``, else ``git rev-parse HEAD``, else ``opsdeck@<version>``."""
    commit = os.environ.get("RENDER_GIT_COMMIT")
    if commit:
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or f"opsdeck@{__version__}"


_DENY = frozenset(k.lower() for k in DEFAULT_DENYLIST + EXTRA_DENYLIST)


def _scrub(value: Any) -> Any:
    """Blank values under denylisted keys and token-looking text, at any depth."""
    if isinstance(value, str):
        return _SECRET_TEXT.sub(FILTERED, value)
    if isinstance(value, dict):
        return {k: FILTERED if str(k).lower() in _DENY else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Add the logging context as tags and blank anything that looks like a token."""
    tags = event.setdefault("tags", {})
    context = get_contextvars()
    for key in TAG_KEYS:
        if context.get(key) and key not in tags:
            tags[key] = str(context[key])
    scrubbed: dict[str, Any] = _scrub(event)
    return scrubbed


def init_sentry(settings: Settings, *, component: str, integrations: list[Integration] | None = None) -> bool:
    """Initialise the SDK for this process; returns False (and does nothing) without a DSN."""
    if settings.sentry_dsn is None:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment or settings.opsdeck_env,
        release=release(),
        traces_sample_rate=settings.sentry_traces_sample_rate,
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {
                "request": {"mode": "allowlist", "terms": ["content-type", "user-agent", "x-request-id"]}
            },
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "queues": False,
            "stack_frame_variables": False,
        },
        before_send=before_send,  # type: ignore[arg-type]
        integrations=integrations or [],
    )
    sentry_sdk.set_tag("component", component)
    return True
