"""``/health`` and ``/health/ready`` report the broker as its own component: RabbitMQ reachable
or not (submissions still accepted into the outbox while it is not), and the Redis broker."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.app import create_app
from shared.settings import Settings
from tests.conftest import SECRET


def coordinator_settings(redis_url: str, broker_url: str | None, tmp_path: Any) -> Settings:
    return Settings(
        redis_url=redis_url,
        broker_url=broker_url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        opsdeck_var_dir=tmp_path / "var",
    )


async def test_the_redis_broker_is_the_state_store(api):
    report = await (await api.get("/health")).json()
    broker = report["components"]["broker"]
    assert {k: broker[k] for k in ("status", "transport", "detail")} == {
        "status": "ok", "transport": "redis", "detail": "the state store's Redis",
    }  # fmt: skip
    assert broker["latency_ms"] == report["components"]["redis"]["latency_ms"]  # the same Redis
    assert set(broker) == {"status", "transport", "detail", "latency_ms", "timestamp"}


@pytest.mark.slow
async def test_rabbitmq_reachable_is_ok_and_shows_the_outbox(aiohttp_client, redis_url, rabbit_url, tmp_path):
    client = await aiohttp_client(create_app(coordinator_settings(redis_url, rabbit_url, tmp_path)))
    report = await (await client.get("/health")).json()
    broker = report["components"]["broker"]
    assert broker["status"] == "ok", broker
    assert broker["transport"] == "rabbitmq"
    assert broker["outbox"] == {"entries": 0, "pending": 0}
    assert all("opsdeck-test" not in node for node in broker["nodes"])  # the password is not shown
    ready = await (await client.get("/health/ready")).json()
    assert ready["components"]["broker"]["status"] == "ok"


async def test_rabbitmq_down_is_degraded_and_submissions_wait_in_the_outbox(
    aiohttp_client, redis_url, tmp_path, auth
):
    down = "amqp://opsdeck:secret-pw@127.0.0.1:1/"  # nothing listens on port 1
    client = await aiohttp_client(create_app(coordinator_settings(redis_url, down, tmp_path)))
    reply = await client.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
    assert reply.status == 202
    health = await client.get("/health")
    assert health.status == 200  # degraded, not unhealthy: tasks are still accepted
    report = await health.json()
    assert report["status"] == "degraded"
    broker = report["components"]["broker"]
    assert broker["status"] == "down"
    assert broker["outbox"]["entries"] >= 1
    assert "secret-pw" not in str(report)
    assert broker["nodes"] == ["amqp://opsdeck:***@127.0.0.1:1/"]
