"""The deploy page of a blue-green rollout: the strategy and the phase, with what the phase means."""

from __future__ import annotations

from tests.dashboard.test_deploys import dash_settings, dstore, make_deploy, services

__all__ = ["dash_settings", "dstore", "services"]  # fixtures, used by name


async def test_deploy_page_shows_strategy_and_phase(as_role, services, dstore):
    rec = await make_deploy(
        dstore, services, status="promoting", strategy="blue_green", phase="switched", weight=100,
        switched_at=1796500000000, retire_at=1796500030000, preview_url="http://10.0.0.2:8080",
    )  # fmt: skip
    client, _ = await as_role("viewer")
    page = await (await client.get(f"/deploys/{rec['id']}")).text()
    assert 'blue_green · webhook · router none · phase <span id="deploy-phase">switched</span>' in page
    assert "<h2>Blue-green progress</h2>" in page
    assert (
        "All traffic is on the new version; the old one is kept until 2026-12-05 19:47:10.000 UTC: "
        "rollback switches back at once." in page
    )
    await dstore.set_fields(rec["id"], phase="analysis", status="canary", weight=0)
    page = await (await client.get(f"/deploys/{rec['id']}")).text()
    assert "Pre-promotion analysis against the preview at http://10.0.0.2:8080: no traffic on it yet." in page
    detail = await (await client.get(f"/api/deploys/{rec['id']}")).json()
    assert (detail["strategy"], detail["phase"], detail["preview_url"]) == (
        "blue_green",
        "analysis",
        "http://10.0.0.2:8080",
    )
    canary = await make_deploy(dstore, services, "site", status="in_progress")
    page = await (await client.get(f"/deploys/{canary['id']}")).text()
    assert "<h2>Canary progress</h2>" in page and "deploy-phase" not in page
