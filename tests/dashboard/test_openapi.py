"""``GET /api/openapi.json``: generated from the route table, equal to the router, valid OpenAPI 3.1,
and what the API answers matches it (the schemathesis run in tests/fuzz goes further)."""

from __future__ import annotations

import re
import time
from typing import Any

import jsonschema_rs
import pytest

from dashboard.app import ROUTES, create_app
from dashboard.routes import API, build_openapi
from tests.dashboard.conftest import KEYS, fake_heartbeat
from tests.dashboard.test_api import kill, submit

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def api_routes_of(app) -> set[tuple[str, str]]:
    """(method, path) of the live router's JSON API and health routes."""
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and (path.startswith("/api/") or path in ("/health", "/health/live")):
            out.add((route.method, path))
    return out


def test_document_lists_exactly_the_api_routes(dash_settings):
    doc = build_openapi()
    routes = api_routes_of(create_app(dash_settings))
    assert ("GET", "/api/openapi.json") in routes
    assert documented(doc) == routes
    # the router's table takes these rows from the documented table, nothing else under /api/
    table = {(m, p) for m, p, _ in ROUTES if p.startswith("/api/") or p.startswith("/health")}
    assert table == {(ep.method, ep.path) for ep in API} == routes


def walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_document_is_valid_openapi_31():
    doc = build_openapi()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    errors = [str(e) for e in definitions.OPENAPI_31_VALIDATOR.iter_errors(doc)]
    assert not errors, errors[:5]  # the OpenAPI 3.1 meta-schema (bundled with schemathesis)
    components = doc["components"]["schemas"]
    for name, schema in components.items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for node in walk(doc):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    operation_ids = []
    schemes = set(doc["components"]["securitySchemes"])
    for path, ops in doc["paths"].items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            assert method in METHODS
            operation_ids.append(op["operationId"])
            params = op.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == in_path, (method, path)
            assert all(p["required"] for p in params if p["in"] == "path")
            statuses = set(op["responses"])
            assert any(s.startswith("2") for s in statuses), (method, path)
            if path.startswith("/api/"):
                assert "401" in statuses and op["security"], (method, path)
                assert {k for req in op["security"] for k in req} <= schemes
            if method == "post":
                assert "403" in statuses, path  # viewers, cross-origin requests, missing CSRF
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }
    assert len(operation_ids) == len(set(operation_ids)), operation_ids  # unique, as OpenAPI requires


async def test_served_to_every_dashboard_role_and_only_to_them(dash, auth):
    assert (await dash.get("/api/openapi.json")).status == 401
    tasks_only = await dash.get("/api/openapi.json", headers=auth("tasks:read"))
    assert tasks_only.status == 401
    resp = await dash.get("/api/openapi.json", headers=auth("viewer"))
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == build_openapi()


def validator_for(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator of ``schema`` whose ``#/components/...`` references resolve in ``doc``."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


async def test_answers_match_the_document(dash, auth, dash_settings, rclient):
    """Every GET route answers what the document says, on data of every kind (live and down
    workers, commands, dead letters, failed tasks, a deploy-less history)."""
    fake_heartbeat(rclient)
    rclient.zadd(KEYS.workers, {"gone": int(time.time() * 1000) - 60_000})  # registered, heartbeat expired
    queued, dead = await submit(dash_settings, 2)
    kill(rclient, dead)
    operator = auth("operator")
    control = await dash.post("/api/worker/w1/restart", headers=operator)
    assert control.status == 202
    command_id = (await control.json())["command_id"]
    fill = {"id": "w1", "name": "default.p2"}
    concrete = {
        "/api/worker/{id}": "/api/worker/w1",
        "/api/commands/{id}": f"/api/commands/{command_id}",
        "/api/tasks/{id}": f"/api/tasks/{queued}",
        "/api/tasks/find": f"/api/tasks/find?q={queued[:8]}",
    }
    doc = build_openapi()
    checked = 0
    for path, ops in doc["paths"].items():
        if "get" not in ops or path == "/api/deploys/{id}":  # no deploy exists here
            continue
        url = concrete.get(path) or re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], path)
        resp = await dash.get(url, headers=auth("viewer"))
        assert resp.status == 200, (url, resp.status, await resp.text())
        schema = ops["get"]["responses"]["200"]["content"]["application/json"].get("schema")
        if schema is None:
            continue
        body = await resp.json()
        errors = [str(e) for e in validator_for(doc, schema).iter_errors(body)]
        assert not errors, (url, errors[:3])
        checked += 1
    assert checked >= 15
    # errors have the documented shape too
    missing = await dash.post("/api/tasks/nope/cancel", headers=operator)
    assert missing.status == 404
    error_schema = doc["paths"]["/api/tasks/{id}/cancel"]["post"]["responses"]["404"]["content"]
    assert validator_for(doc, error_schema["application/json"]["schema"]).is_valid(await missing.json())


async def test_what_schemathesis_found_stays_fixed(dash, auth, rclient):
    """A boolean (or float, or string) is no number of processes: 422, and no command is issued;
    since/until take epoch seconds as well as ISO 8601, and the document says so."""
    fake_heartbeat(rclient)
    for processes in (False, True, 2.0, "2"):
        resp = await dash.post(
            "/api/worker/w1/scale", json={"processes": processes}, headers=auth("operator")
        )
        assert resp.status == 422, processes
    assert rclient.xlen(KEYS.worker_commands("w1")) == 0
    assert (
        await dash.post("/api/worker/w1/scale", json={"processes": 2}, headers=auth("operator"))
    ).status == 202
    resp = await dash.get("/api/tasks?since=0.5&until=2030-01-01T00:00:00Z", headers=auth("viewer"))
    assert resp.status == 200
    params = {p["name"]: p["schema"] for p in build_openapi()["paths"]["/api/tasks"]["get"]["parameters"]}
    assert {"type": "number"} in params["since"]["anyOf"][0]["anyOf"]
