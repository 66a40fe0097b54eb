"""Build the OpenAPI 3.1 document from the route table and its pydantic models."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from coordinator.routes import ENDPOINTS, Endpoint
from coordinator.schemas import ErrorBody
from shared import __version__
from shared.tasks import task_types

REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "Malformed JSON (or, on a WebSocket route, not an upgrade request)",
    401: "Missing, invalid or expired token",
    403: "Token lacks the scope",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Body over 64 KiB",
    415: "Content-Type is not application/json",
    422: "Validation failed",
    503: "Redis unavailable",
}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _operation(ep: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": ep.summary, "operationId": ep.handler.__name__, "responses": {}}
    if ep.scope is not None:
        op["security"] = [{"bearer": [ep.scope] if ep.scope else []}]
    params = [
        {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for part in ep.path.split("/")
        if part.startswith("{")
    ]
    if ep.query is not None:
        for name, field in ep.query.model_fields.items():
            schema = ep.query.model_json_schema(ref_template=REF)["properties"][name]
            params.append({"name": name, "in": "query", "required": field.is_required(), "schema": schema})
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(ep.body, components)}},
        }
    for status, model in ep.responses.items():
        content = (
            {ep.content_type: {"schema": _schema(model, components)}} if model else {ep.content_type: {}}
        )
        op["responses"][str(status)] = {
            "description": "OK" if status < 300 else "Failure",
            "content": content,
        }
    error_ref = _schema(ErrorBody, components)
    codes = [503] if ep.scope is None else [401, 403, 503] if ep.scope else [401]
    if ep.body is not None:
        codes += [400, 413, 415, 422]
    if ep.query is not None:
        codes.append(422)
    if "{" in ep.path:
        codes += [404, 409] if ep.method == "POST" else [404]
    if ep.path.startswith("/ws/"):
        codes.append(400)  # a plain GET that is not a WebSocket upgrade
    if ep.body is not None and "idempotency_key" in ep.body.model_fields:
        codes.append(409)  # the key was used before for a different request
    for status in sorted(set(codes)):
        error_content: dict[str, Any] = {"application/json": {"schema": error_ref}}
        if status == 400:  # aiohttp's HTTP parser answers malformed requests itself, in plain text
            error_content["text/plain"] = {"schema": {"type": "string"}}
        op["responses"].setdefault(str(status), {"description": _ERRORS[status], "content": error_content})
    return op


@cache
def build_openapi() -> dict[str, Any]:
    """The whole document (cached; the route table is fixed at import)."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, components)
    types = ", ".join(f"`{name}` ({t.description})" for name, t in sorted(task_types().items()))
    submission = components.get("TaskSubmission", {}).get("properties", {}).get("type")
    if submission is not None:  # the allow-list, so clients (and fuzzers) see the valid types
        submission["enum"] = sorted(task_types())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Opsdeck coordinator",
            "version": __version__,
            "description": f"Submit and follow background tasks. Task types: {types}.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
