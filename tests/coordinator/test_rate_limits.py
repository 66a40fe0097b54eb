"""Per-subject rate limits (issue 14, item 13) against a real Redis: a token bucket per token subject
and route class, checked inside submit.lua's batch for POST /api/v1/tasks and by one ratelimit.lua
call for the other classes; 429 ``rate_limited`` with Retry-After; a metric; exempt routes.

Buckets use Redis server time inside the scripts; the tests use rates so slow (0.001/s: one token
per 1000 s) that no token comes back while a test runs, so each count is exact."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest

from coordinator.app import create_app
from coordinator.routes import ENDPOINTS, EXEMPT, RATE_CLASSES
from shared.errors import Conflict
from shared.keys import Keys
from shared.ratelimit import ROUTE_CLASSES, RateLimited
from shared.redis import async_client
from shared.settings import Settings
from shared.task_types import get_task_type
from shared.tasks import Priority
from shared.taskstore import TaskStore
from tests.conftest import SECRET

KEYS = Keys()
_ECHO = get_task_type("echo")
assert _ECHO is not None
ECHO = _ECHO
SLOW = "0.001/s"  # one token per 1000 s: nothing refills during a test
TASK = {"type": "echo", "payload": {"n": 1}}


def limited_settings(settings: Settings, **limits: str) -> Settings:
    """The test settings with RATE_LIMIT_<CLASS> values (``read="0.001/s:3"``)."""
    return Settings(
        redis_url=settings.redis_url,
        jwt_secret=SECRET,  # type: ignore[arg-type]
        opsdeck_var_dir=settings.opsdeck_var_dir,
        worker_poll_interval=0.5,
        broker_heartbeat_timeout=3,
        **{f"rate_limit_{name}": value for name, value in limits.items()},  # type: ignore[arg-type]
    )


@pytest.fixture
def limited_api(aiohttp_client: Any, settings: Settings):
    """``await limited_api(read="0.001/s:3")``: a test client on a coordinator with those limits."""

    async def make(**limits: str) -> Any:
        return await aiohttp_client(create_app(limited_settings(settings, **limits)))

    return make


def assert_rate_limited(resp: Any, body: dict[str, Any], retry_after: int) -> None:
    assert resp.status == 429
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["fields"] == []
    assert "rate limit" in body["error"]["message"]
    assert resp.headers["Retry-After"] == str(retry_after)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["X-Request-ID"]


# -- the route table ---------------------------------------------------------------------------
def test_every_route_has_a_class_or_is_exempt():
    routes = {(ep.method, ep.path) for ep in ENDPOINTS}
    assert set(RATE_CLASSES) | EXEMPT == routes
    assert not set(RATE_CLASSES) & EXEMPT
    assert set(RATE_CLASSES.values()) == set(ROUTE_CLASSES)
    for ep in ENDPOINTS:  # only health checks, the scrape and the (cached) document go without
        if (ep.method, ep.path) in EXEMPT:
            assert ep.scope is None or ep.path in ("/metrics", "/openapi.json"), ep.path
    assert RATE_CLASSES["POST", "/api/v1/tasks"] == "submit"
    assert RATE_CLASSES["GET", "/ws/chat"] == RATE_CLASSES["POST", "/api/v1/chat"] == "chat"
    assert RATE_CLASSES["POST", "/api/v1/feedback/submit"] == "chat"
    assert RATE_CLASSES["GET", "/api/v1/tasks/{task_id}"] == "read"


# -- burst and refill --------------------------------------------------------------------------
async def test_a_read_bucket_allows_its_burst_then_429_with_retry_after(limited_api, auth):
    api = await limited_api(read=f"{SLOW}:3")
    for _ in range(3):
        assert (await api.get("/api/v1/tasks", headers=auth())).status == 200
    resp = await api.get("/api/v1/tasks", headers=auth())
    # the next token is 1000 s away (less the few ms the test took): rounded up to whole seconds
    assert_rate_limited(resp, await resp.json(), 1000)
    # one bucket per class: another read route shares it, the submit class does not
    assert (await api.get("/api/v1/bandit", headers=auth())).status == 429
    assert (await api.post("/api/v1/tasks", json=TASK, headers=auth())).status == 202


async def test_tokens_refill_at_the_rate_by_redis_server_time(limited_api, auth, rclient):
    """A bucket emptied by its burst has a token again once the server's clock moved on by one
    interval: the test moves the stored state back instead of sleeping."""
    api = await limited_api(read="0.001/s:2")
    for _ in range(2):
        assert (await api.get("/api/v1/tasks", headers=auth())).status == 200
    assert (await api.get("/api/v1/tasks", headers=auth())).status == 429
    key = KEYS.rate_limit("read", "tester")
    stored = int(rclient.get(key))
    rclient.set(key, stored - 1_000_000_000)  # as if 1000 s (one interval) had passed
    assert (await api.get("/api/v1/tasks", headers=auth())).status == 200
    assert (await api.get("/api/v1/tasks", headers=auth())).status == 429
    # the bucket's key expires once it would be full again (no key is kept for idle subjects)
    assert 0 < rclient.pttl(key) <= 2 * 1_000_000


async def test_retry_after_is_whole_seconds_rounded_up(limited_api, auth):
    api = await limited_api(read="4/s:1")  # 250 ms per token: Retry-After 1, never 0
    assert (await api.get("/api/v1/tasks", headers=auth())).status == 200
    resp = await api.get("/api/v1/tasks", headers=auth())
    if resp.status == 429:  # unless the test machine took > 250 ms between the two requests
        assert_rate_limited(resp, await resp.json(), 1)


async def test_auth_is_checked_before_the_bucket(limited_api, auth):
    api = await limited_api(read=f"{SLOW}:1", submit=f"{SLOW}:1")
    assert (await api.get("/api/v1/tasks", headers=auth())).status == 200
    assert (await api.get("/api/v1/tasks")).status == 401
    assert (await api.get("/api/v1/tasks", headers=auth("tasks:write"))).status == 403
    assert (await api.post("/api/v1/tasks", json=TASK)).status == 401


# -- one noisy subject cannot starve another ---------------------------------------------------
async def test_a_noisy_subject_is_limited_while_another_gets_all_its_requests(limited_api, auth, rclient):
    api = await limited_api(submit=f"{SLOW}:10", read=f"{SLOW}:10")
    noisy, quiet = auth(sub="noisy"), auth(sub="quiet")
    calls = [("noisy", i) for i in range(60)] + [("quiet", i) for i in range(10)]
    random.Random(14).shuffle(calls)  # interleaved: the quiet subject's requests arrive among the noisy ones

    async def call(who: str, i: int) -> tuple[str, str, int]:
        headers = noisy if who == "noisy" else quiet
        if i % 2:
            resp = await api.get("/api/v1/tasks?limit=1", headers=headers)
            return who, "read", resp.status
        resp = await api.post("/api/v1/tasks", json=TASK, headers=headers)
        return who, "submit", resp.status

    # bounded: 60 requests of the noisy subject, all in flight together with the quiet one's 10
    results = await asyncio.gather(*(call(who, i) for who, i in calls))
    for route_class in ("submit", "read"):
        mine = [s for who, c, s in results if who == "noisy" and c == route_class]
        assert sorted(mine).count(429) == len(mine) - 10, route_class
        assert sorted(mine).count(200 if route_class == "read" else 202) == 10
        theirs = [s for who, c, s in results if who == "quiet" and c == route_class]
        assert theirs == [200 if route_class == "read" else 202] * 5, route_class
    assert rclient.llen(KEYS.queue("default.p2")) == 15  # 10 of the noisy subject, 5 of the quiet one


# -- the submit batch --------------------------------------------------------------------------
async def test_limited_submissions_in_one_batch_are_refused_each_while_the_others_go_through(
    settings, rclient
):
    client = async_client(settings)
    store = TaskStore(client, limited_settings(settings, submit=f"{SLOW}:3"))
    try:
        order = ["a"] * 8 + ["b"] * 3
        random.Random(13).shuffle(order)
        futures = [
            store.submit_json(
                ECHO, b'{"n":1}', Priority.P2, subject=who, correlation_id=f"c{i}",
                idempotency_key=f"k{i}", rate_limit=True,
            )
            for i, who in enumerate(order)
        ]  # fmt: skip
        await asyncio.sleep(0)  # the loop's next turn sends what waits: one batch, one call
        assert len(store.batcher._inflight) == 1
        assert len(store.batcher._inflight[0].pending) == len(order)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await store.aclose()
        await client.aclose()
    by_subject: dict[str, list[Any]] = {"a": [], "b": []}
    for who, outcome in zip(order, outcomes, strict=True):
        by_subject[who].append(outcome)
    assert [getattr(o, "created", None) for o in by_subject["b"]] == [True] * 3
    created_a = [o for o in by_subject["a"] if not isinstance(o, BaseException)]
    limited_a = [o for o in by_subject["a"] if isinstance(o, RateLimited)]
    assert len(created_a) == 3 and len(limited_a) == 5
    assert all(o.route_class == "submit" and o.retry_after == 1000 for o in limited_a)
    assert rclient.llen(KEYS.queue("default.p2")) == 6
    assert rclient.zcard(KEYS.tasks_all) == 6
    # a refused submission records nothing: no task, no idempotency key
    refused = [
        i for i, (who, o) in enumerate(zip(order, outcomes, strict=True)) if isinstance(o, RateLimited)
    ]
    for i in refused:
        assert not rclient.exists(KEYS.idempotency(order[i], f"k{i}"))


async def test_a_resent_batch_is_not_charged_twice(settings, rclient, monkeypatch):
    """A batch sent again (after a lost reply) finds its tasks recorded: they are answered as
    created, not refused by a bucket the first send emptied."""
    client = async_client(settings)
    store = TaskStore(client, limited_settings(settings, submit=f"{SLOW}:1"))
    sent: list[bytes] = []
    submit = store.batcher.submit

    def record(task_args: bytes) -> asyncio.Future[Any]:
        sent.append(task_args)
        return submit(task_args)

    monkeypatch.setattr(store.batcher, "submit", record)
    try:
        first = await store.submit_json(
            ECHO, b"{}", Priority.P2, subject="a", correlation_id="c", rate_limit=True
        )
        again = await submit(sent[0])  # the same task's arguments, as a resend carries them
        assert again == first and first.created
        with pytest.raises(RateLimited):  # a new submission: the bucket is empty
            await store.submit_json(
                ECHO, b"{}", Priority.P2, subject="a", correlation_id="c", rate_limit=True
            )
    finally:
        await store.aclose()
        await client.aclose()
    assert rclient.llen(KEYS.queue("default.p2")) == 1


async def test_submit_burst_then_429_and_idempotency_still_holds(limited_api, auth, rclient):
    api = await limited_api(submit=f"{SLOW}:3")
    body = {**TASK, "idempotency_key": "same"}
    first = await api.post("/api/v1/tasks", json=body, headers=auth())
    assert first.status == 202
    replay = await api.post("/api/v1/tasks", json=body, headers=auth())  # a replay is a request too
    assert replay.status == 200
    assert (await replay.json())["id"] == (await first.json())["id"]
    other = await api.post("/api/v1/tasks", json={**body, "payload": {"n": 2}}, headers=auth())
    assert other.status == 409  # a conflicting reuse of the key, charged like any request
    resp = await api.post("/api/v1/tasks", json=TASK, headers=auth())
    assert_rate_limited(resp, await resp.json(), 1000)
    assert rclient.llen(KEYS.queue("default.p2")) == 1


async def test_tasks_submitted_by_chat_and_feedback_do_not_spend_the_submit_bucket(settings):
    client = async_client(settings)
    store = TaskStore(client, limited_settings(settings, submit=f"{SLOW}:1"))
    try:
        for _ in range(3):  # rate_limit not asked for: the caller checked its own class
            assert (await store.submit(ECHO, {}, Priority.P2, subject="a", correlation_id="c")).created
        assert (
            await store.submit(ECHO, {}, Priority.P2, subject="a", correlation_id="c", rate_limit=True)
        ).created
    finally:
        await store.aclose()
        await client.aclose()


# -- chat: POST, WebSocket messages and feedback share one bucket ------------------------------
async def test_chat_post_websocket_messages_and_feedback_share_the_chat_bucket(limited_api, auth, token):
    api = await limited_api(chat=f"{SLOW}:3")
    turn = {"session_id": "s1", "message": "hello", "user_id": "u1"}
    assert (await api.post("/api/v1/chat", json=turn, headers=auth())).status == 202
    ws = await api.ws_connect(f"/ws/chat?token={token('tasks:write')}")
    try:
        await ws.send_json(turn)
        accepted = await ws.receive_json(timeout=5)
        assert accepted["type"] == "accepted"
        feedback = {"session_id": "s1", "turn_number": 1, "rating": 5}
        resp = await api.post("/api/v1/feedback/submit", json=feedback, headers=auth())
        assert resp.status == 409  # charged (the third token), then refused for its own reason
        await ws.send_json(turn)
        refused = await ws.receive_json(timeout=5)
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "rate_limited"
        assert refused["error"]["fields"] == []
        assert refused["retry_after"] == 1000
    finally:
        await ws.close()
    resp = await api.post("/api/v1/chat", json=turn, headers=auth())
    assert_rate_limited(resp, await resp.json(), 1000)
    resp = await api.post("/api/v1/feedback/submit", json=feedback, headers=auth())
    assert_rate_limited(resp, await resp.json(), 1000)
    # another subject chats on
    assert (await api.post("/api/v1/chat", json=turn, headers=auth(sub="other"))).status == 202


# -- exempt routes, the metric, off when unset -------------------------------------------------
async def test_health_metrics_and_openapi_are_never_limited(limited_api, auth):
    tight = f"{SLOW}:1"
    api = await limited_api(submit=tight, chat=tight, read=tight, deploy=tight)
    for _ in range(5):
        for path in ("/health/live", "/health", "/health/ready", "/openapi.json"):
            assert (await api.get(path)).status != 429, path
        assert (await api.get("/metrics", headers=auth("admin"))).status == 200


def scrape(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("opsdeck_rate_limited_total{"):
            labels, value = line.rsplit(" ", 1)
            route_class = labels.split('route_class="')[1].split('"')[0]
            assert 'app="coordinator"' in labels
            out[route_class] = float(value)
    return out


async def test_the_rate_limited_counter_starts_at_zero_for_every_class_and_counts_429s(limited_api, auth):
    api = await limited_api(submit=f"{SLOW}:1", read=f"{SLOW}:1")
    metrics = await api.get("/metrics", headers=auth("admin"))
    assert scrape(await metrics.text()) == dict.fromkeys(ROUTE_CLASSES, 0.0)
    for _ in range(3):
        await api.post("/api/v1/tasks", json=TASK, headers=auth())
    for _ in range(4):
        await api.get("/api/v1/tasks", headers=auth())
    counted = scrape(await (await api.get("/metrics", headers=auth("admin"))).text())
    assert counted == {**dict.fromkeys(ROUTE_CLASSES, 0.0), "submit": 2.0, "read": 3.0}


async def test_off_when_unset_in_development(api, auth, rclient):
    """No RATE_LIMIT_* in development: no bucket, no key, no 429, and the counter still exists."""
    for _ in range(40):
        assert (await api.post("/api/v1/tasks", json=TASK, headers=auth())).status == 202
        assert (await api.get("/api/v1/tasks?limit=1", headers=auth())).status == 200
    assert rclient.keys(KEYS.rate_limit("*", "*")) == []
    counted = scrape(await (await api.get("/metrics", headers=auth("admin"))).text())
    assert counted == dict.fromkeys(ROUTE_CLASSES, 0.0)


async def test_the_openapi_document_lists_429_on_limited_routes():
    from coordinator.openapi import build_openapi

    doc = build_openapi()
    for (method, path), _ in RATE_CLASSES.items():
        assert "429" in doc["paths"][path][method.lower()]["responses"], (method, path)
    assert "429" not in doc["paths"]["/health/live"]["get"]["responses"]


def test_rate_limited_is_an_opsdeck_error_with_its_wait():
    exc = RateLimited("read", 1001)
    assert (exc.status, exc.code, exc.retry_after, exc.route_class) == (429, "rate_limited", 2, "read")
    assert RateLimited("read", 1).retry_after == 1
    assert math.isfinite(exc.retry_after)
    assert not isinstance(exc, Conflict)
