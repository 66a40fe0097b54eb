"""Dashboard deploys: JSON API (reads for viewers, actions for operators), pages, CSRF."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.deploy.config import ServicesFile
from shared.deploy.store import DeployStore
from shared.settings import Settings
from tests.dashboard.conftest import KEYS

SERVICES_YAML = """
services:
  api:
    provider: webhook
    webhook: {url: "http://127.0.0.1:9/hook", secret_env: DASH_TEST_WEBHOOK_SECRET}
    strategy: canary
    canary: {steps: [1, 5, 25, 100], pause_seconds: 60}
  site:
    provider: webhook
    webhook: {url: "http://127.0.0.1:9/site", secret_env: DASH_TEST_WEBHOOK_SECRET}
    strategy: direct
"""


@pytest.fixture
def dash_settings(dash_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The dashboard's settings with a services file (``OPSDECK_SERVICES``), loaded as at start."""
    monkeypatch.setenv("DASH_TEST_WEBHOOK_SECRET", "s3cret")
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES_YAML)
    return Settings(**{**dash_settings.model_dump(), "opsdeck_services": path})


@pytest.fixture
def services(dash_settings: Settings) -> ServicesFile:
    """The services file of the dashboard's settings."""
    return dash_settings.services


@pytest.fixture
async def dstore(dash_settings: Any) -> AsyncIterator[DeployStore]:
    """A deploy store on the test Redis."""
    client = aioredis.Redis.from_url(dash_settings.effective_redis_url)
    yield DeployStore(client, dash_settings)
    await client.aclose()


async def make_deploy(
    store: DeployStore, services: ServicesFile, service: str = "api", **fields: Any
) -> dict[str, Any]:
    """Record a deploy as the coordinator does, then set ``fields`` (e.g. status, step, weight)."""
    deploy_id = str(uuid.uuid4())
    await store.create(
        deploy_id, service, services.services[service], version="v1.2.3", strategy=None,
        trigger="carol", task_id=deploy_id,
    )  # fmt: skip
    if fields:
        await store.set_fields(deploy_id, **fields)
    return await store.get(deploy_id)


async def test_viewer_reads_deploys_but_cannot_act(as_role, services, dstore, rclient):
    rec = await make_deploy(dstore, services, status="canary", step=1, weight=5)
    client, csrf = await as_role("viewer")
    items = (await (await client.get("/api/deploys")).json())["items"]
    assert [d["id"] for d in items] == [rec["id"]] and items[0]["weight"] == 5
    assert (await (await client.get("/api/deploys?service=site")).json())["items"] == []
    assert (await client.get("/api/deploys?limit=0")).status == 422
    detail = await (await client.get(f"/api/deploys/{rec['id']}")).json()
    assert detail["steps"] == [1, 5, 25, 100] and detail["status"] == "canary"
    svc = {s["name"]: s for s in (await (await client.get("/api/services")).json())["items"]}
    assert set(svc) == {"api", "site"}
    assert svc["api"]["active_deploy"] == {"id": rec["id"], "version": "v1.2.3", "status": "canary"}
    assert svc["site"]["active_deploy"] is None and svc["site"]["steps"] == [100]
    page = await (await client.get("/deploys")).text()
    assert rec["id"][:8] in page and 'id="deploy-table"' in page and 'href="/deploys"' in page
    page = await (await client.get(f"/deploys/{rec['id']}")).text()
    assert 'id="deploy-weight" max="100" value="5"' in page and "data-post" not in page
    for action in ("promote", "pause", "resume", "abort", "rollback"):
        resp = await client.post(f"/api/deploys/{rec['id']}/{action}", headers={"X-CSRF-Token": csrf})
        assert resp.status == 403, action
    after = await dstore.get(rec["id"])
    assert after["status"] == "canary" and after.get("requested") is None and after.get("last_action") is None
    assert rclient.llen(KEYS.queue("deploy.p0")) == 0


async def test_operator_abort_is_accepted_and_recorded(as_role, services, dstore, rclient):
    rec = await make_deploy(dstore, services, status="in_progress")
    client, csrf = await as_role("operator", sub="bob")
    page = await (await client.get(f"/deploys/{rec['id']}")).text()
    assert f'data-post="/api/deploys/{rec["id"]}/abort"' in page and 'id="confirm"' in page
    resp = await client.post(f"/api/deploys/{rec['id']}/abort", headers={"X-CSRF-Token": csrf})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["id"] == rec["id"] and body["requested"] == "abort"
    assert body["last_action"] == "abort" and body["last_action_by"] == "bob"
    assert (await dstore.get(rec["id"]))["requested"] == "abort"
    assert rclient.llen(KEYS.queue("deploy.p0")) == 1  # the worker is told at P0
    audit = (await (await client.get("/api/audit")).json())["entries"]
    assert audit[0]["action"] == "deploy.abort" and audit[0]["issuer"] == "bob"


async def test_actions_refused_by_status_answer_409(as_role, services, dstore):
    done = await make_deploy(dstore, services, status="succeeded")
    client, csrf = await as_role("admin")
    h = {"X-CSRF-Token": csrf}
    assert (await client.post(f"/api/deploys/{done['id']}/pause", headers=h)).status == 409
    # a succeeded deploy that is not the service's stable version cannot be rolled back
    resp = await client.post(f"/api/deploys/{done['id']}/rollback", headers=h)
    assert resp.status == 409 and "stable" in (await resp.json())["error"]["message"]


async def test_unknown_deploy_or_action_is_404(as_role, services, dstore):
    rec = await make_deploy(dstore, services, status="canary")
    client, csrf = await as_role("operator")
    h = {"X-CSRF-Token": csrf}
    missing = str(uuid.uuid4())
    assert (await client.get(f"/api/deploys/{missing}")).status == 404
    assert (await client.get("/api/deploys/not-a-uuid")).status == 404
    assert (await client.get(f"/deploys/{missing}")).status == 404
    assert (await client.post(f"/api/deploys/{missing}/abort", headers=h)).status == 404
    assert (await client.post(f"/api/deploys/{rec['id']}/explode", headers=h)).status == 404
    assert (await dstore.get(rec["id"])).get("last_action") is None


async def test_action_without_csrf_is_refused(as_role, services, dstore, auth, rclient):
    rec = await make_deploy(dstore, services, status="canary")
    client, csrf = await as_role("operator")
    assert (await client.post(f"/api/deploys/{rec['id']}/abort")).status == 403
    bad = {"X-CSRF-Token": "x" * 64}
    assert (await client.post(f"/api/deploys/{rec['id']}/abort", headers=bad)).status == 403
    cross = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert (await client.post(f"/api/deploys/{rec['id']}/abort", headers=cross)).status == 403
    assert (await dstore.get(rec["id"])).get("requested") is None
    # a bearer operator token needs no CSRF token; a bearer viewer is still refused
    assert (await client.post(f"/api/deploys/{rec['id']}/pause", headers=auth("viewer"))).status == 403
    resp = await client.post(f"/api/deploys/{rec['id']}/pause", headers=auth("operator"))
    assert resp.status == 202 and (await resp.json())["status"] == "paused"


@pytest.mark.slow
@pytest.mark.timeout(900)  # may install chromium on a fresh machine
def test_deploy_page_in_a_real_browser(services, dash_settings, procs, env_factory, tmp_path, rclient, token):
    """The detail page follows the weight by polling and aborts through the confirmation dialog."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from shared.devtools.embedded_redis import free_port
    from tests.dashboard.test_browser import ensure_chromium, log_in

    ensure_chromium()

    async def create() -> dict[str, Any]:
        client = aioredis.Redis.from_url(dash_settings.effective_redis_url)
        try:
            return await make_deploy(
                DeployStore(client, dash_settings), services, status="canary", step=1, weight=5
            )
        finally:
            await client.aclose()

    rec = asyncio.run(create())
    port = free_port()
    env = env_factory(
        DASHBOARD_PORT=port,
        OPSDECK_SERVICES=str(tmp_path / "services.yaml"),
        DASH_TEST_WEBHOOK_SECRET="s3cret",
    )
    procs.start("dashboard", env, tmp_path / "dash.log")
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser, page, errors = log_in(pw, base, token("operator", sub="olivia"))
        page.goto(f"{base}/deploys")
        page.wait_for_selector(f'#deploy-table tr[data-deploy="{rec["id"]}"]')
        page.goto(f"{base}/deploys/{rec['id']}")
        assert page.eval_on_selector("#deploy-weight", "p => p.value") == 5
        rclient.hset(KEYS.deploy(rec["id"]), mapping={"weight": "25", "step": "2"})
        page.wait_for_function("() => document.querySelector('#deploy-weight').value === 25", timeout=6000)
        assert page.locator("#deploy-steps li.current").text_content() == "25 %"
        page.click("#deploy-actions button[data-action=abort]")
        page.click("#confirm-ok")
        page.wait_for_function(
            "() => document.querySelector('#deploy-last-action').textContent === 'abort by olivia'",
            timeout=6000,
        )
        browser.close()
    assert rclient.hget(KEYS.deploy(rec["id"]), "requested") == b"abort"
    assert not [e for e in errors if "Content Security Policy" in e], errors
