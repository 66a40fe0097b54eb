"""OpenAPI 3.1 documents generated from a route table and its pydantic models.

Each web app lists its routes once as :class:`Endpoint` rows (method, path, handler, models);
the router (:func:`add_routes`) and the document (:func:`build_document`) read the same rows, so
they cannot drift apart. What differs between the apps is passed in: which error statuses a
route can answer, and how callers authenticate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from shared import __version__
from shared.schemas import ErrorBody

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REF = "#/components/schemas/{model}"
#: What each error status means (an app may override some).
ERRORS: dict[int, str] = {
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
#: The security scheme of both apps: ``Authorization: Bearer <JWT>``.
BEARER: dict[str, dict[str, Any]] = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


@dataclass(frozen=True)
class Endpoint:
    """One route with what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    name: str | None = None
    #: None = public (health only); "" = any valid token; else the scope (or role) required.
    scope: str | None = ""
    body: type[BaseModel] | None = None
    #: False when an empty body stands for ``{}``.
    body_required: bool = True
    query: type[BaseModel] | None = None
    #: Schemas of the path parameters (by field name); unnamed ones are plain strings.
    path_params: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    content_type: str = "application/json"
    #: Error statuses the route may answer beyond those the app derives from its shape.
    errors: tuple[int, ...] = ()
    #: The operation's id when the handler's name is taken (one handler serving two routes).
    operation_id: str | None = None


def add_routes(
    app: web.Application,
    endpoints: Iterable[Endpoint],
    wrap: Callable[[Handler, str, str], Handler] | None = None,
) -> None:
    """Register every endpoint on the app's router (each handler passed through ``wrap`` with
    its path and method, when given)."""
    for ep in endpoints:
        handler = ep.handler if wrap is None else wrap(ep.handler, ep.path, ep.method)
        app.router.add_route(ep.method, ep.path, handler, name=ep.name)


def input_errors(ep: Endpoint) -> list[int]:
    """Statuses a route's inputs imply: 400/413/415/422 for a JSON body, 422 for a query, 404 for
    a path parameter (the resource it names may not exist)."""
    codes = [400, 413, 415, 422] if ep.body is not None else []
    if ep.query is not None:
        codes.append(422)
    if "{" in ep.path:
        codes.append(404)
    return codes


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _properties(model: type[BaseModel] | None, components: dict[str, Any]) -> dict[str, Any]:
    if model is None:
        return {}
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    properties: dict[str, Any] = schema["properties"]
    return properties


def _parameters(ep: Endpoint, components: dict[str, Any]) -> list[dict[str, Any]]:
    in_path = _properties(ep.path_params, components)
    params = [
        {"name": name, "in": "path", "required": True, "schema": in_path.get(name, {"type": "string"})}
        for name in (part[1:-1] for part in ep.path.split("/") if part.startswith("{"))
    ]
    if ep.query is not None:
        in_query = _properties(ep.query, components)
        for name, info in ep.query.model_fields.items():
            params.append(
                {"name": name, "in": "query", "required": info.is_required(), "schema": in_query[name]}
            )
    return params


def _operation(
    ep: Endpoint,
    components: dict[str, Any],
    error_codes: Callable[[Endpoint], Iterable[int]],
    descriptions: Mapping[int, str],
    schemes: Iterable[str],
) -> dict[str, Any]:
    operation_id = ep.operation_id or ep.handler.__name__
    op: dict[str, Any] = {"summary": ep.summary, "operationId": operation_id, "responses": {}}
    if ep.scope is not None:
        op["security"] = [{scheme: [ep.scope] if ep.scope else []} for scheme in schemes]
    params = _parameters(ep, components)
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {
            "required": ep.body_required,
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
    for status in sorted({*error_codes(ep), *ep.errors}):
        error_content: dict[str, Any] = {"application/json": {"schema": error_ref}}
        if status == 400:  # aiohttp's HTTP parser answers malformed requests itself, in plain text
            error_content["text/plain"] = {"schema": {"type": "string"}}
        op["responses"].setdefault(
            str(status), {"description": descriptions[status], "content": error_content}
        )
    return op


def build_document(
    endpoints: Iterable[Endpoint],
    *,
    title: str,
    description: str,
    error_codes: Callable[[Endpoint], Iterable[int]],
    error_descriptions: Mapping[int, str] = ERRORS,
    security_schemes: Mapping[str, dict[str, Any]] = BEARER,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``: every response and error (``{"error": ...}``)
    described by its model, ``error_codes(endpoint)`` naming the error statuses of each route."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for ep in endpoints:
        op = _operation(ep, components, error_codes, error_descriptions, security_schemes)
        if op["operationId"] in seen:
            raise ValueError(f"operationId {op['operationId']!r} is not unique: set operation_id")
        seen.add(op["operationId"])
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": dict(security_schemes)},
    }
