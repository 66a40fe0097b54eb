"""RabbitMQ unreachable when everything starts: no crash loop, submissions accepted into the
outbox, /health says the broker is down; once a node comes up the tasks run."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.app import create_app
from shared.settings import Settings
from tests.conftest import SECRET
from tests.rabbitmq import RabbitNode, require_rabbitmq
from tests.worker.test_end_to_end import heartbeat, start_agent, wait_running, wait_status

pytestmark = pytest.mark.slow


async def test_a_broker_down_at_start_is_waited_for(
    procs, env_factory, tmp_path, rclient, aiohttp_client, redis_url, auth
):
    require_rabbitmq()
    node = RabbitNode(tmp_path / "rabbit")  # its ports are chosen; nothing listens yet
    url = node.amqp_url
    try:
        start_agent(procs, env_factory, tmp_path, BROKER_URL=url)
        wait_running(rclient, "agent")
        settings = Settings(
            redis_url=redis_url,
            broker_url=url,
            jwt_secret=SECRET,  # type: ignore[arg-type]
            opsdeck_var_dir=tmp_path / "var",
        )
        api = await aiohttp_client(create_app(settings))
        ids = []
        for _ in range(3):
            reply = await api.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
            assert reply.status == 202
            ids.append((await reply.json())["id"])
        report = await (await api.get("/health")).json()
        assert report["status"] == "degraded"
        assert report["components"]["broker"]["status"] == "down"
        assert report["components"]["broker"]["outbox"]["entries"] == 3
        await asyncio.sleep(3.0)
        beat = heartbeat(rclient, "agent")
        assert beat is not None and beat.processes == 1
        assert beat.procs[0].restarts == 0  # the process waits for the broker; it does not crash
        node.start()
        for task_id in ids:
            wait_status(rclient, task_id, "succeeded", timeout=60)
        report = await (await api.get("/health")).json()
        assert report["components"]["broker"]["status"] == "ok"
    finally:
        node.close(graceful=False)
