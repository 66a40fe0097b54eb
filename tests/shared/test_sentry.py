"""Sentry against a real envelope receiver on 127.0.0.1: one event per failure, tagged with the task
id or route and the correlation id, and never an Authorization header or a JWT."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk
from pydantic import SecretStr

from shared.devtools.embedded_redis import free_port
from shared.sentry import init_sentry
from tests.helpers import task_fields, wait_for
from tests.worker.test_end_to_end import KEYS, start_agent, wait_running


class Receiver:
    """Collects the events of every envelope POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.raw.append(body)
                lines = body.split(b"\n")
                for i in range(1, len(lines) - 1, 2):
                    header = json.loads(lines[i])
                    if header.get("type") == "event":
                        receiver.events.append(json.loads(lines[i + 1]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/42"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.mark.slow
async def test_actor_exception_arrives_once_with_task_tags(
    procs, env_factory, tmp_path, rclient, api, auth, receiver
):
    start_agent(
        procs, env_factory, tmp_path, SENTRY_DSN=receiver.dsn, TASK_MAX_RETRIES=0, SENTRY_ENVIRONMENT="ci"
    )
    wait_running(rclient, "agent")
    headers = {**auth(), "X-Request-ID": "sentry-trace-1"}
    resp = await api.post(
        "/api/v1/tasks", json={"type": "fail", "payload": {"message": "kaboom"}}, headers=headers
    )
    task_id = (await resp.json())["id"]
    wait_for(lambda: task_fields(rclient, KEYS, task_id).get("status") == "dead")
    wait_for(lambda: receiver.events, what="an event")
    await asyncio.sleep(1.0)  # nothing else may arrive for this one failure
    assert len(receiver.events) == 1
    event = receiver.events[0]
    assert event["exception"]["values"][-1]["type"] == "RequestedFailure"
    assert event["tags"]["task_id"] == task_id
    assert event["tags"]["correlation_id"] == "sentry-trace-1"
    assert event["environment"] == "ci"
    assert event["release"]
    raw = b"".join(receiver.raw)
    assert b"Bearer" not in raw
    assert b"eyJ" not in raw


async def test_request_exception_arrives_once_without_credentials(
    aiohttp_client, settings, auth, receiver, monkeypatch
):
    from coordinator.app import create_app
    from shared.taskstore import TaskStore

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("store exploded")

    monkeypatch.setattr(TaskStore, "submit_json", broken)
    try:
        assert init_sentry(
            settings.model_copy(update={"sentry_dsn": SecretStr(receiver.dsn)}), component="coordinator"
        )
        api = await aiohttp_client(create_app(settings))
        headers = {**auth(), "X-Request-ID": "sentry-trace-2", "Cookie": "opsdeck_session=abc"}
        resp = await api.post("/api/v1/tasks", json={"type": "echo"}, headers=headers)
        assert resp.status == 500
        body = await resp.json()
        assert body["error"]["code"] == "internal_error"
        assert "exploded" not in json.dumps(body)  # no internals in the answer
        sentry_sdk.flush(timeout=5)
        wait_for(lambda: receiver.events, what="an event")
    finally:
        sentry_sdk.init()  # back to a disabled client for the rest of the session
    assert len(receiver.events) == 1
    event = receiver.events[0]
    assert event["exception"]["values"][-1]["value"] == "store exploded"
    assert event["tags"]["route"] == "/api/v1/tasks"
    assert event["tags"]["correlation_id"] == "sentry-trace-2"
    assert event["tags"]["component"] == "coordinator"
    raw = b"".join(receiver.raw)
    assert b"Bearer" not in raw
    assert b"eyJ" not in raw
    assert b"opsdeck_session=abc" not in raw
