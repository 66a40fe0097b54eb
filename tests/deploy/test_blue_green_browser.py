"""A blue-green deploy's page in a real browser (Playwright driving Debian's chromium) against a
real dashboard process and Redis; the rollout runs in-process (Driver) against the fake webhook and
a real nginx upstream file. Switched, the page shows the strategy, the phase and until when the old
version is kept; the operator's rollback button switches back (one more router write) and the page
follows live. Screenshot: docs/img/dashboard-deploy-blue-green.png."""

from __future__ import annotations

import uuid

import pytest

from shared.deploy.models import StepPayload
from shared.devtools.embedded_redis import free_port
from tests.conftest import ROOT
from tests.deploy.test_blue_green import drain, reloads, services_file, switched, var
from tests.deploy.test_confirm import queued_step_messages
from tests.helpers import wait_for

__all__ = ["services_file", "var"]  # fixtures, used by name
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IMG = ROOT / "docs" / "img"


def test_switched_phase_and_rollback_in_a_real_browser(
    procs, env_factory, tmp_path, rclient, token, driver, fakes, services_file, var, deploy_env
):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from tests.dashboard.test_browser import ensure_chromium, log_in

    ensure_chromium()
    driver.state.set_stable("bg", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    deploy_id = driver.start("bg", str(uuid.uuid4()), version="v2")
    drain(driver, until=switched(driver, deploy_id))
    driver.queue.clear()  # the retire message: this test rolls back first
    port = free_port()
    env = env_factory(DASHBOARD_PORT=port, OPSDECK_SERVICES=str(services_file), **deploy_env)
    procs.start("dashboard", env, tmp_path / "dash.log")
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, base, token("operator", sub="erin"), {"width": 1400, "height": 1000}
        )
        page.wait_for_selector("nav")
        page.goto(f"{base}/deploys/{deploy_id}")
        assert page.locator("#deploy-phase").text_content() == "switched"
        assert "blue_green · webhook · router nginx" in (
            page.locator("#deploy-strategy").text_content() or ""
        )
        notice = page.locator("#deploy-blue-green").text_content() or ""
        assert notice.startswith("All traffic is on the new version; the old one is kept until ")
        assert page.locator("#deploy-weight-text").text_content() == "100 % of traffic"
        page.screenshot(path=str(IMG / "dashboard-deploy-blue-green.png"), full_page=True)
        page.click(f'button[data-post="/api/deploys/{deploy_id}/rollback"]')
        page.click("#confirm-ok")
        [message] = wait_for(lambda: queued_step_messages(rclient), what="the rollback's step message")
        driver.rollout.handle(StepPayload.model_validate(message))
        assert driver.record(deploy_id)["status"] == "rolled_back" and reloads(var) == 2
        page.wait_for_selector("#deploy-phase:has-text('switched_back')", timeout=20_000)
        page.wait_for_selector("#deploy-status:has-text('rolled_back')")
        assert (page.locator("#deploy-blue-green").text_content() or "").startswith("Switched back")
        assert page.locator("#deploy-weight-text").text_content() == "0 % of traffic"
        browser.close()
    assert not [e for e in errors if "Failed to load resource" not in e], errors
