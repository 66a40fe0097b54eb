"""The dashboard's /metrics: request histogram; METRICS_TOKEN or an admin token, nothing else."""

from __future__ import annotations

from pydantic import SecretStr

from dashboard.app import create_app


async def test_metrics_needs_the_metrics_token_or_admin(aiohttp_client, settings, token):
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr("scrape")}))
    client = await aiohttp_client(app)
    assert (await client.get("/health/live")).status == 200
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
    viewer = {"Authorization": f"Bearer {token('viewer')}"}
    assert (await client.get("/metrics", headers=viewer)).status == 401
    ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape"})
    assert ok.status == 200
    text = await ok.text()
    labels = 'app="dashboard",method="GET",route="/health/live",status="200"'
    assert f"opsdeck_http_request_duration_seconds_count{{{labels}}} 1.0" in text
    admin = await client.get("/metrics", headers={"Authorization": f"Bearer {token('admin')}"})
    assert admin.status == 200
