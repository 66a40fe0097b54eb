"""/openapi.json is generated from the route table and models, and stays in sync with the router."""

from __future__ import annotations

from coordinator.app import create_app
from coordinator.openapi import build_openapi
from shared.task_types import task_types
from shared.tasks import TaskSubmission


def router_routes(app):
    """(method, path) of every declared route; not the JSON 404/405 fallbacks (method ``*``)."""
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


def test_every_route_is_documented_and_every_documented_path_exists(settings):
    app = create_app(settings)
    doc = build_openapi()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert router_routes(app) == documented


def test_submission_schema_comes_from_the_model():
    doc = build_openapi()
    schema = doc["components"]["schemas"]["TaskSubmission"]
    expected = TaskSubmission.model_json_schema(ref_template="#/components/schemas/{model}")
    assert doc["components"]["schemas"]["Priority"] == expected.pop("$defs")["Priority"]
    expected["properties"]["type"]["enum"] = sorted(task_types())  # the allow-list, documented
    assert schema == expected
    assert set(schema["properties"]) == {"type", "payload", "priority", "idempotency_key"}
    op = doc["paths"]["/api/v1/tasks"]["post"]
    assert op["security"] == [{"bearer": ["tasks:write"]}]
    assert {"202", "400", "401", "403", "413", "415", "422", "503"} <= set(op["responses"])
    assert "security" not in doc["paths"]["/health/live"]["get"]


def test_protected_routes_refuse_anonymous_callers(settings):
    """Every route but health answers 401 without credentials (enumerated from the router)."""
    app = create_app(settings)
    public = {"/health", "/health/live", "/health/ready", "/health/llm"}
    protected = [r for r in router_routes(app) if r[1] not in public]
    assert protected
    doc = build_openapi()
    for method, path in protected:
        assert "401" in doc["paths"][path][method]["responses"], (method, path)


async def test_undeclared_method_is_405_with_allow(api, auth):
    resp = await api.request("TRACE", "/api/v1/tasks", headers=auth())
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_anonymous_calls_are_401_on_every_protected_route(api):
    public = {"/health", "/health/live", "/health/ready", "/health/llm"}
    for method, path in router_routes(api.server.app):
        if path in public:
            continue
        url = path.replace("{task_id}", "00000000-0000-0000-0000-000000000000").replace("{service}", "api")
        resp = await api.request(method, url)
        assert resp.status == 401, (method, path, resp.status)


def test_status_url_matches_the_task_route(settings):
    from coordinator.views.tasks import status_url

    app = create_app(settings)
    assert status_url("abc") == str(app.router["task"].url_for(task_id="abc"))
