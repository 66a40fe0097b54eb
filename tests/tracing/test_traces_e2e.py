"""One request, one trace: a real coordinator and a real worker agent (subprocesses) export to a real
OTLP/HTTP receiver (tests/otlp_receiver.py, decoding the protobuf with opentelemetry-proto); the
trace continues the client's ``traceparent``, crosses the queue into the worker's attempt span
and its children, and the task record, the API and the log lines name it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import aiohttp
import pytest

from shared.devtools.embedded_redis import free_port
from shared.keys import Keys
from tests.conftest import BROKERS
from tests.helpers import read_log
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.worker.test_end_to_end import start_agent, wait_ready, wait_running

KEYS = Keys()
pytestmark = pytest.mark.slow
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CHAT = {"session_id": "traced", "message": "We already use a competitor. Why switch?", "user_id": "seller-1"}


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def tracing_env(receiver: OTLPReceiver) -> dict[str, str]:
    # a short export delay so the spans arrive within the test; everything else as in production
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


async def start_stack(procs, env_factory, tmp_path, rclient, receiver, **extra) -> str:
    port = free_port()
    env = {**tracing_env(receiver), **extra}
    procs.start("coordinator", env_factory(COORDINATOR_PORT=port, **env), tmp_path / "coordinator.log")
    start_agent(procs, env_factory, tmp_path, **env)
    wait_running(rclient, "agent")
    base = f"http://127.0.0.1:{port}"
    await wait_ready(base)
    return base


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = by_name(spans, name)
    assert len(found) == 1, f"{name}: {len(found)} spans in {sorted(s.name for s in spans)}"
    return found[0]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> set[str]:
    return {s.name for s in spans if s.parent_span_id == parent.span_id}


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_chat_turn_is_one_trace_from_the_request_to_the_worker(
    procs, env_factory, tmp_path, rclient, auth, receiver, broker_url
):
    base = await start_stack(procs, env_factory, tmp_path, rclient, receiver, LOG_LEVEL="DEBUG")
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/chat?wait=10", json=CHAT, headers={**auth(), "traceparent": traceparent}
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
            answered = r.headers["traceparent"]
        async with http.get(f"{base}/api/v1/tasks/{answer['id']}", headers=auth()) as r:
            record = await r.json()
    # the answer names the trace the client started, and a span of the coordinator's
    assert re.fullmatch(rf"00-{CLIENT_TRACE}-[0-9a-f]{{16}}-01", answered)
    assert record["trace_id"] == CLIENT_TRACE

    def complete(spans):
        mine = [s for s in spans if s.trace_id == CLIENT_TRACE]
        names = {s.name for s in mine}
        wanted = {"POST /api/v1/chat", "tasks submit", "process coach", "coach select", "bandit decide",
                  "coach generate", "coach store"}  # fmt: skip
        return wanted <= names and mine

    spans = receiver.wait(complete, what="the chat turn's trace")
    server = one(spans, "POST /api/v1/chat")
    assert server.service == "opsdeck-coordinator" and server.kind == "SERVER"
    assert server.parent_span_id == CLIENT_SPAN  # continues the client's traceparent
    assert answered.split("-")[2] == server.span_id
    assert server.attributes["http.route"] == "/api/v1/chat"
    assert server.attributes["http.response.status_code"] == 200
    submit = one(spans, "tasks submit")
    assert submit.parent_span_id == server.span_id and submit.kind == "CLIENT"
    assert submit.attributes["messaging.destination.name"] == "coach.p1"

    consumer = one(spans, "process coach")
    assert consumer.service == "opsdeck-worker" and consumer.kind == "CONSUMER"
    assert consumer.parent_span_id == server.span_id  # child of the request's span, across the queue
    attrs = consumer.attributes
    assert attrs["opsdeck.task.id"] == answer["id"]
    assert attrs["opsdeck.task.type"] == "coach" and attrs["opsdeck.task.queue"] == "coach.p1"
    assert attrs["opsdeck.task.priority"] == "P1" and attrs["opsdeck.task.attempt"] == 1
    assert attrs["opsdeck.task.queue_wait_ms"] >= 0
    assert attrs["opsdeck.task.outcome"] == "succeeded" and consumer.status == "UNSET"
    assert {"coach features", "coach select", "coach generate", "coach guard", "coach store"} <= children(
        spans, consumer
    )
    select = one(spans, "coach select")
    decide = one(spans, "bandit decide")
    assert decide.parent_span_id == select.span_id
    assert decide.attributes["opsdeck.bandit.arm"] == answer["arm"]
    assert consumer.start_ns >= server.start_ns
    # no payload in any span: the chat message is nowhere
    assert CHAT["message"] not in json.dumps([s.attributes for s in spans] + [s.events for s in spans])

    # the worker's log lines inside the attempt carry the trace and the attempt's span (LOG_LEVEL
    # is DEBUG: the "task ended" line of a success is a debug line; the agent's log has its children's)
    ended = [
        x for x in read_log(tmp_path / "agent.log").splitlines() if "task ended" in x and answer["id"] in x
    ]
    assert ended and f"trace_id={CLIENT_TRACE}" in ended[0] and f"span_id={consumer.span_id}" in ended[0]


async def test_a_retried_failing_task_is_one_trace_with_an_attempt_span_each(
    procs, env_factory, tmp_path, rclient, auth, receiver
):
    base = await start_stack(procs, env_factory, tmp_path, rclient, receiver, TASK_MAX_RETRIES=1)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/tasks", json={"type": "fail", "payload": {"message": "boom"}}, headers=auth()
        ) as r:
            assert r.status == 202, await r.text()
            accepted = await r.json()
            trace_id = r.headers["traceparent"].split("-")[1]
        for _ in range(200):
            async with http.get(f"{base}/api/v1/tasks/{accepted['id']}", headers=auth()) as r:
                record = await r.json()
            if record["status"] == "dead":
                break
            await asyncio.sleep(0.05)
    assert record["status"] == "dead" and record["trace_id"] == trace_id

    spans = receiver.wait(
        lambda spans: (
            len(by_name([s for s in spans if s.trace_id == trace_id], "process fail")) == 2
            and [s for s in spans if s.trace_id == trace_id]
        ),
        what="two attempt spans",
    )
    server = one(spans, "POST /api/v1/tasks")
    assert server.parent_span_id == ""  # no traceparent came in: the coordinator started the trace
    attempts = sorted(by_name(spans, "process fail"), key=lambda s: s.attributes["opsdeck.task.attempt"])
    assert [a.attributes["opsdeck.task.attempt"] for a in attempts] == [1, 2]
    for attempt in attempts:  # each a child of the request's span, failed by the exception's type
        assert attempt.parent_span_id == server.span_id and attempt.trace_id == trace_id
        assert attempt.status == "ERROR"
        [(event, fields)] = attempt.events
        assert event == "exception" and fields["exception.type"].endswith("RequestedFailure")
        assert "boom" not in json.dumps(fields)  # the text may quote task data: never in a span
    assert attempts[0].attributes["opsdeck.task.will_retry"] is True
    assert attempts[1].attributes["opsdeck.task.will_retry"] is False
    assert attempts[1].start_ns > attempts[0].end_ns
