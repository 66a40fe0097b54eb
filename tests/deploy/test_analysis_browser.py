"""The deploy page of an analysis run in a real browser (Playwright driving Debian's chromium)
against a real dashboard process and Redis; the rollout runs in-process (Driver) against the fake
providers. A rollout paused by an inconclusive analysis (its metric source down) shows its reason
and every measurement; the operator promotes it with the page's button and the measurements table
follows the rest of the run live. Screenshot: docs/img/dashboard-deploy-analysis.png."""

from __future__ import annotations

import uuid

import pytest

from shared.devtools.embedded_redis import free_port
from tests.conftest import ROOT
from tests.deploy.conftest import services_yaml
from tests.deploy.test_analysis import analysed_yaml
from tests.deploy.test_confirm import queued_step_messages
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IMG = ROOT / "docs" / "img"
ROWS = "document.querySelectorAll('#deploy-measurements tbody tr[data-measurement]').length"


@pytest.fixture
def services_file(tmp_path, fakes):
    """The usual services plus the analysed ones of test_analysis.py."""
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url, extra=analysed_yaml(fakes.url)))
    return path


def test_an_inconclusive_pause_and_its_measurements_in_a_real_browser(
    procs,
    env_factory,
    tmp_path,
    rclient,
    token,
    driver,
    fakes,
    services_file,
    deploy_env,
):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from tests.dashboard.test_browser import ensure_chromium, log_in

    ensure_chromium()
    fakes.script.metrics_down = True
    deploy_id = driver.start("flaky", str(uuid.uuid4()), version="v7")
    driver.run()
    assert driver.record(deploy_id)["status"] == "paused"
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
        notice = page.locator("#deploy-paused-reason")
        assert notice.is_visible() and "metric source unreachable" in (notice.text_content() or "")
        assert page.evaluate(f"() => {ROWS}") == 2
        assert (
            page.locator("#deploy-measurements tbody tr").first.locator("td").nth(4).text_content() == "error"
        )
        page.screenshot(path=str(IMG / "dashboard-deploy-analysis.png"), full_page=True)
        fakes.script.metrics_down = False
        page.click(f'button[data-post="/api/deploys/{deploy_id}/promote"]')
        page.click("#confirm-ok")
        [message] = wait_for(lambda: queued_step_messages(rclient), what="the promote's step message")
        assert message == {"deploy_id": deploy_id, "step": 0, "action": "promote"}
        driver.queue.append((message, 0))
        driver.run()
        assert driver.record(deploy_id)["status"] == "succeeded"
        # the page's 2 s poll brings the rest of the run: 3 rounds at step 1, 1 after the last step
        page.wait_for_function(f"() => {ROWS} === 6", timeout=20_000)
        page.wait_for_selector("#deploy-status:has-text('succeeded')")
        assert not notice.is_visible()
        assert (
            page.locator("#deploy-measurements tbody tr").first.locator("td").nth(4).text_content()
            == "success"
        )
        assert "1 of 1 round" in (page.locator("#deploy-analysis").text_content() or "")
        browser.close()
    # script errors and CSP violations, not resource loads (the login page's 401, a favicon's 404)
    assert not [e for e in errors if "Failed to load resource" not in e], errors
