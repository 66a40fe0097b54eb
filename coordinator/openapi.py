"""Build the coordinator's OpenAPI 3.1 document from its route table (see :mod:`shared.openapi`)."""

from __future__ import annotations

from functools import cache
from typing import Any

from coordinator.routes import ENDPOINTS, RATE_CLASSES
from shared.openapi import ERRORS, Endpoint, build_document, input_errors
from shared.task_types import task_types


def error_codes(ep: Endpoint) -> list[int]:
    """The error statuses of a coordinator route."""
    codes = [503] if ep.scope is None else [401, 403, 503] if ep.scope else [401]
    codes += input_errors(ep)
    if "{" in ep.path and ep.method == "POST":
        codes.append(409)  # the state of what the path names refuses the change
    if ep.path.startswith("/ws/"):
        codes.append(400)  # a plain GET that is not a WebSocket upgrade
    if ep.body is not None and "idempotency_key" in ep.body.model_fields:
        codes.append(409)  # the key was used before for a different request
    if (ep.method, ep.path) in RATE_CLASSES:
        codes.append(429)  # the subject's bucket of the route's class is empty (RATE_LIMIT_<CLASS>)
    return codes


@cache
def build_openapi() -> dict[str, Any]:
    """The whole document (cached; the route table is fixed at import)."""
    types = ", ".join(f"`{name}` ({t.description})" for name, t in sorted(task_types().items()))
    doc = build_document(
        ENDPOINTS,
        title="Opsdeck coordinator",
        description=f"Submit and follow background tasks. Task types: {types}.",
        error_codes=error_codes,
        error_descriptions={
            **ERRORS,
            429: "Rate limited: this token's subject exceeded the route class's limit (see Retry-After)",
        },
    )
    submission = doc["components"]["schemas"].get("TaskSubmission", {}).get("properties", {}).get("type")
    if submission is not None:  # the allow-list, so clients (and fuzzers) see the valid types
        submission["enum"] = sorted(task_types())
    return doc
