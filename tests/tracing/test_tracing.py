"""Tracing in one process: the coordinator's server spans and the context a submission carries (in
Redis, as the worker will read it), settings, log lines, the dashboard's link. The spans go to the
SDK's in-memory exporter here; tests/tracing/test_traces_e2e.py follows real processes into a real
OTLP receiver."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from dramatiq import Message
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from shared.errors import ConfigError
from shared.keys import Keys
from shared.logging import setup_logging
from shared.settings import Settings, load_settings

KEYS = Keys()
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider(id_generator=tracing._edge_ids())
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for apps built in the test (OpenTelemetry keeps one provider per process: the
    same one each time); what they record is in the exporter."""
    _EXPORTER.clear()
    tracing.use_provider(_PROVIDER)
    yield _EXPORTER
    tracing.use_provider(None)
    _EXPORTER.clear()


@pytest.fixture
def never_sampled_roots(spans: InMemorySpanExporter) -> InMemorySpanExporter:
    """Tracing on with roots sampled at ratio 0 (OTEL_TRACES_SAMPLER=parentbased_traceidratio,
    _ARG=0): the edge decides every root request itself."""
    tracing.use_provider(_PROVIDER, root_bound=0)
    return spans


@pytest.fixture
async def traced_api(spans, aiohttp_client, settings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(settings))


def stored_message(rclient, task_id: str, queue: str = "default.p2") -> Message[object]:
    return Message.decode(rclient.hget(KEYS.queue_messages(queue), task_id))


async def test_a_submission_continues_the_callers_trace_into_the_message(traced_api, spans, auth, rclient):
    resp = await traced_api.post(
        "/api/v1/tasks",
        json={"type": "echo", "payload": {"secret": "hunter2"}},
        headers={**auth(), "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=x1"},
    )
    assert resp.status == 202, await resp.text()
    task_id = (await resp.json())["id"]
    version, trace_id, span_id, flags = resp.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")

    finished = {s.name: s for s in spans.get_finished_spans()}
    server, submit = finished["POST /api/v1/tasks"], finished["tasks submit"]
    assert server.kind is SpanKind.SERVER and f"{server.context.span_id:016x}" == span_id
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert server.attributes["http.response.status_code"] == 202
    assert submit.parent is not None and submit.parent.span_id == server.context.span_id
    # the worker will continue the request's span: its context rides in the message options
    options = stored_message(rclient, task_id).options
    assert options["traceparent"] == f"00-{CLIENT_TRACE}-{span_id}-01"
    assert options["tracestate"] == "vendor=x1"
    record = await (await traced_api.get(f"/api/v1/tasks/{task_id}", headers=auth())).json()
    assert record["trace_id"] == CLIENT_TRACE
    # no payload value in any span
    assert "hunter2" not in json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()])


async def test_an_unsampled_caller_keeps_its_decision_and_nothing_is_recorded(
    traced_api, spans, auth, rclient
):
    resp = await traced_api.post(
        "/api/v1/tasks",
        json={"type": "echo", "payload": {}},
        headers={**auth(), "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"},
    )
    task_id = (await resp.json())["id"]
    assert resp.headers["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
    assert resp.headers["traceparent"].endswith("-00")
    assert spans.get_finished_spans() == ()
    # the worker keeps the decision (parent-based sampling): the message carries the context
    assert stored_message(rclient, task_id).options["traceparent"].endswith("-00")
    record = await (await traced_api.get(f"/api/v1/tasks/{task_id}", headers=auth())).json()
    assert record.get("trace_id") is None


async def test_a_4xx_leaves_the_span_unset(traced_api, spans, auth):
    resp = await traced_api.post("/api/v1/tasks", json={"type": "nope"}, headers=auth())
    assert resp.status == 422
    [span] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["http.response.status_code"] == 422


async def test_a_5xx_fails_the_span(spans, aiohttp_client, settings, auth):
    from coordinator.app import create_app
    from shared.devtools.embedded_redis import free_port

    down = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout": 0.2}
    )
    client = await aiohttp_client(create_app(down))
    resp = await client.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
    assert resp.status == 503
    [span] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "503"
    assert span.attributes["http.response.status_code"] == 503


async def test_probes_and_scrapes_are_not_traced(traced_api, spans):
    assert (await traced_api.get("/health")).status in (200, 503)
    assert (await traced_api.get("/health/live")).status == 200
    assert "traceparent" not in (await traced_api.get("/health/live")).headers
    assert spans.get_finished_spans() == ()


async def test_with_tracing_off_nothing_changes(api, auth, rclient):
    resp = await api.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
    assert resp.status == 202 and "traceparent" not in resp.headers
    task_id = (await resp.json())["id"]
    options = stored_message(rclient, task_id).options
    assert "traceparent" not in options and "tracestate" not in options
    record = await (await api.get(f"/api/v1/tasks/{task_id}", headers=auth())).json()
    assert record.get("trace_id") is None


def test_log_lines_inside_a_sampled_span_carry_its_ids(spans, capsys):
    setup_logging("INFO", json=True, process="t")
    try:
        log = structlog.get_logger("t")
        log.info("outside")
        with tracing.TRACER.start_as_current_span("work") as span:
            log.info("inside")
            logging.getLogger("stdlib").warning("stdlib inside")
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
    ctx = span.get_span_context()
    by_event = {x["event"]: x for x in lines}
    assert "trace_id" not in by_event["outside"]
    for event in ("inside", "stdlib inside"):
        assert by_event[event]["trace_id"] == f"{ctx.trace_id:032x}"
        assert by_event[event]["span_id"] == f"{ctx.span_id:016x}"


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled():
    assert not Settings().tracing_enabled
    on = Settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318/")
    assert on.tracing_enabled and on.otel_traces_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert not Settings(otel_exporter_otlp_endpoint="http://x:4318", otel_sdk_disabled=True).tracing_enabled
    exact = Settings(otel_exporter_otlp_traces_endpoint="http://x:4318/custom")
    assert exact.tracing_enabled and exact.otel_traces_endpoint == "http://x:4318/custom"


def test_grpc_without_its_exporter_is_refused_with_what_to_install(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(
        ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL.*opentelemetry-exporter-otlp-proto-grpc"
    ):
        load_settings()


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, "otel_exporter_otlp_endpoint"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "otel_traces_sampler"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "otel_traces_sampler_arg"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "otel_exporter_otlp_protocol"),
        ({"TRACE_URL_TEMPLATE": "http://jaeger/trace/"}, "trace_url_template"),
    ],
)
def test_bad_tracing_settings_are_refused_naming_the_variable(monkeypatch, env, field):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=field.upper()):
        load_settings()


@pytest.mark.parametrize(
    ("name", "arg", "sampled_root"),
    [("always_on", 1.0, True), ("always_off", 1.0, False), ("traceidratio", 0.0, False),
     ("parentbased_traceidratio", 1.0, True), ("parentbased_always_off", 1.0, False)],
)  # fmt: skip
def test_the_sampler_is_the_one_named(name, arg, sampled_root):
    settings = Settings(otel_traces_sampler=name, otel_traces_sampler_arg=arg)
    result = tracing._sampler(settings).should_sample(None, 1234, "x")
    assert result.decision.is_sampled() is sampled_root


async def _task_page(aiohttp_client, settings, token, rclient, trace_id):
    from dashboard.app import create_app
    from tests.dashboard.conftest import login

    task_id = "00000000-0000-4000-8000-0000000000aa"
    fields = {"id": task_id, "type": "echo", "queue": "default.p2", "priority": "P2", "status": "succeeded",
              "payload": "{}", "attempts": 1, "created_us": 1, "created_at": 1}  # fmt: skip
    rclient.delete(KEYS.task(task_id))
    rclient.hset(KEYS.task(task_id), mapping={**fields, **({"trace_id": trace_id} if trace_id else {})})
    client = await aiohttp_client(create_app(settings))
    await login(client, token("admin"))
    return await (await client.get(f"/tasks/{task_id}")).text()


async def test_the_task_page_links_the_trace_with_a_template(aiohttp_client, settings, token, rclient):
    linked = settings.model_copy(update={"trace_url_template": "http://jaeger.local:16686/trace/{trace_id}"})
    page = await _task_page(aiohttp_client, linked, token, rclient, CLIENT_TRACE)
    assert f'href="http://jaeger.local:16686/trace/{CLIENT_TRACE}"' in page


async def test_the_task_page_shows_the_trace_id_without_a_template(aiohttp_client, settings, token, rclient):
    page = await _task_page(aiohttp_client, settings, token, rclient, CLIENT_TRACE)
    assert f'<code class="trace">{CLIENT_TRACE}</code>' in page and "/trace/" not in page
    bare = await _task_page(aiohttp_client, settings, token, rclient, None)
    assert '<code class="trace">-</code>' in bare


async def test_a_stored_trace_id_that_is_not_hex_is_never_put_in_a_link(
    aiohttp_client, settings, token, rclient
):
    linked = settings.model_copy(update={"trace_url_template": "http://jaeger.local/trace/{trace_id}"})
    page = await _task_page(aiohttp_client, linked, token, rclient, '"><script>x</script>')
    assert "jaeger.local" not in page and "<script>x" not in page


async def test_an_unsampled_root_request_makes_no_span_and_its_task_keeps_the_decision(
    never_sampled_roots, aiohttp_client, settings, auth, rclient
):
    from coordinator.app import create_app

    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/api/v1/tasks", json={"type": "echo", "payload": {}}, headers=auth())
    assert resp.status == 202
    assert "traceparent" not in resp.headers  # no trace to find: nothing is recorded
    assert never_sampled_roots.get_finished_spans() == ()
    task_id = (await resp.json())["id"]
    traceparent = stored_message(rclient, task_id).options["traceparent"]
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, flags) == ("00", "00") and int(trace_id, 16) and int(span_id, 16)
    assert traceparent == tracing.UNSAMPLED_TRACEPARENT
    assert (await (await client.get(f"/api/v1/tasks/{task_id}", headers=auth())).json()).get(
        "trace_id"
    ) is None
    # an incoming sampled parent still decides (parent-based), through the SDK
    sampled = await client.post(
        "/api/v1/tasks",
        json={"type": "echo", "payload": {}},
        headers={**auth(), "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
    )
    assert sampled.headers["traceparent"].startswith(f"00-{CLIENT_TRACE}-")
    assert [s.name for s in never_sampled_roots.get_finished_spans()][-1] == "POST /api/v1/tasks"


def test_the_edge_decides_as_the_sdk_ratio_sampler_would():
    import random

    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    rng = random.Random(7)
    for ratio in (0.0, 0.01, 0.25, 0.5, 1.0):
        settings = Settings(otel_traces_sampler="parentbased_traceidratio", otel_traces_sampler_arg=ratio)
        bound = tracing._root_bound(settings)
        assert bound is not None
        sdk = TraceIdRatioBased(ratio)
        for _ in range(2000):
            trace_id = rng.getrandbits(128) or 1
            edge_sampled = trace_id & tracing._LOW64 < bound
            assert edge_sampled is sdk.should_sample(None, trace_id, "x").decision.is_sampled()
    assert tracing._root_bound(Settings(otel_traces_sampler="always_on")) is None
    assert tracing._root_bound(Settings(otel_traces_sampler="parentbased_always_off")) == 0


def test_a_root_span_gets_the_trace_id_the_edge_drew():
    ids = tracing._edge_ids()
    token = tracing._NEXT_TRACE_ID.set(0xABC)
    try:
        assert ids.generate_trace_id() == 0xABC
        assert ids.generate_trace_id() not in (0, 0xABC)  # once only, then random
    finally:
        tracing._NEXT_TRACE_ID.reset(token)
