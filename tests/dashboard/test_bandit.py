"""The dashboard's bandit page and its API (issue 18, part 6) against a real Redis, with the bandit
state made by the worker's own pipeline (chat turns decided and rated by ``CoachPipeline``): who
may see and roll back, the audit entry, the live ``bandit`` section, the ranges and the cached
offline evaluation."""

from __future__ import annotations

import asyncio

import pytest

from shared.coaching import CoachPayload, FeedbackPayload
from tests.dashboard.conftest import KEYS
from tests.dashboard.test_stream import origin
from tests.dashboard.test_stream_sections import frames_until, ws_url


@pytest.fixture
def bandit_settings(dash_settings):
    """A short warm-up and a checkpoint every 4 ratings, so a few turns make every part."""
    return dash_settings.model_copy(update={"bandit_warmup": 6, "bandit_checkpoint_every": 4})


def coach(rclient, settings, turns: int, session: str = "s", first: int = 1):
    """``turns`` chat turns through the worker's pipeline, every one rated (ratings cycle 1..5)."""
    from worker.coach.pipeline import CoachPipeline

    pipeline = CoachPipeline(rclient, settings)
    for n in range(first, first + turns):
        pipeline.run_turn(
            CoachPayload(session_id=session, message=f"price {n}?", user_id="u", turn_number=n), f"t{n}"
        )
        pipeline.rate(FeedbackPayload(session_id=session, turn_number=n, rating=n % 5 + 1))
    return pipeline


@pytest.fixture
def as_bandit_role(aiohttp_client, bandit_settings, token):
    from dashboard.app import create_app
    from tests.dashboard.conftest import login

    async def make(scope: str, sub: str = "alice"):
        client = await aiohttp_client(create_app(bandit_settings))
        client.csrf = await login(client, token(scope, sub=sub))
        return client

    return make


async def test_a_viewer_sees_the_page_and_the_state_but_cannot_roll_back(
    as_bandit_role, rclient, bandit_settings
):
    coach(rclient, bandit_settings, 10)
    viewer = await as_bandit_role("viewer", sub="vera")
    page = await viewer.get("/bandit")
    html = await page.text()
    assert page.status == 200
    assert '<a href="/bandit" class="active" aria-current="page">Bandit</a>' in html
    assert '<meta name="live-section" content="bandit">' in html and "bandit.js" in html
    assert 'data-can-rollback=""' in html  # the page draws no rollback button for a viewer
    state = await (await viewer.get("/api/bandit")).json()
    assert state["phase"] == "learned" and state["decisions"] == 10 and state["applied"] == 10
    assert state["warmup_progress"] == 1.0
    assert sum(a["pulls"] for a in state["arms"].values()) == 10
    assert sum(a["share"] for a in state["arms"].values()) == pytest.approx(1.0)
    assert [c["id"] for c in state["checkpoints"]] == [2, 1] and state["checkpoints"][0]["applied"] == 8
    assert state["recent"]["totals"]["decisions"] == 10
    assert sum(sum(c) for c in state["recent"]["ucb"]["counts"].values()) == 30  # 3 arms x 10 decisions
    for arm in state["arms"].values():
        if arm["window"].get("count", 0) >= 2:
            low, high = arm["window"]["ci"]
            assert low <= arm["window"]["mean"] <= high
    refused = await viewer.post("/api/bandit/checkpoints/1/rollback", headers={"X-CSRF-Token": viewer.csrf})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "forbidden"
    operator = await as_bandit_role("operator")
    refused = await operator.post(
        "/api/bandit/checkpoints/1/rollback", headers={"X-CSRF-Token": operator.csrf}
    )
    assert refused.status == 403 and "admin" in (await refused.json())["error"]["message"]
    assert rclient.hget(KEYS.bandit_guard(), "rollbacks:manual") is None


async def test_an_admin_rolls_back_audited(as_bandit_role, rclient, bandit_settings):
    coach(rclient, bandit_settings, 10)
    admin = await as_bandit_role("admin", sub="ada")
    assert 'data-can-rollback="1"' in await (await admin.get("/bandit")).text()
    no_csrf = await admin.post("/api/bandit/checkpoints/1/rollback")
    assert no_csrf.status == 403
    resp = await admin.post("/api/bandit/checkpoints/1/rollback", headers={"X-CSRF-Token": admin.csrf})
    assert resp.status == 200, await resp.text()
    record = await resp.json()
    assert record["trigger"] == "manual" and record["checkpoint"] == 1
    assert record["checkpoint_applied"] == 4 and record["applied"] == 10
    assert record["reason"]["why"] == "manual" and record["reason"]["subject"] == "ada"
    state = await (await admin.get("/api/bandit")).json()
    assert state["rollbacks_total"] == {"auto": 0, "manual": 1} and state["rollbacks"][0]["checkpoint"] == 1
    assert sum(a["updates"] for a in state["arms"].values()) == 4  # the model as checkpoint 1 had it
    audit = (await (await admin.get("/api/audit")).json())["entries"]
    assert audit[0]["action"] == "bandit.rollback" and audit[0]["issuer"] == "ada"
    assert (
        audit[0]["target"] == "bandit checkpoint 1" and audit[0]["reason"] == "6 ratings after it discarded"
    )
    unknown = await admin.post("/api/bandit/checkpoints/99/rollback", headers={"X-CSRF-Token": admin.csrf})
    assert unknown.status == 404
    assert (await unknown.json())["error"]["fields"] == [{"loc": ["path", "id"], "msg": "unknown checkpoint"}]
    bad = await admin.post("/api/bandit/checkpoints/x1/rollback", headers={"X-CSRF-Token": admin.csrf})
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["loc"] == ["path", "id"]
    assert len((await (await admin.get("/api/audit")).json())["entries"]) == 1  # refusals change nothing


async def test_the_live_section_follows_decisions(as_bandit_role, rclient, bandit_settings):
    viewer = await as_bandit_role("viewer")
    rclient.hset(KEYS.llm_tiers, "fast", '{"breaker": "closed", "outcome": "ok", "p95_ms": 812.5}')
    async with viewer.ws_connect(ws_url("bandit"), headers=origin(viewer)) as ws:
        snap = await ws.receive_json()
        assert set(snap["data"]) == {"bandit", "meta", "status"} and snap["refused"] == {}
        assert snap["live"] == {"bandit": "the bandit"}
        assert snap["data"]["bandit"]["decisions"] == 0 and snap["data"]["bandit"]["phase"] == "warmup"
        assert snap["data"]["bandit"]["llm_tiers"] == {
            "fast": {"breaker": "closed", "outcome": "ok", "p95_ms": 812.5}
        }
        coach(rclient, bandit_settings, 3)
        data = await frames_until(ws, lambda d: d.get("bandit", {}).get("decisions") == 3)
        assert data["bandit"]["warmup_progress"] == 0.5 and data["bandit"]["applied"] == 3
    async with viewer.ws_connect(ws_url("bandit:x"), headers=origin(viewer)) as ws:
        assert "bandit:x" in (await ws.receive_json())["refused"]


async def test_ranges_and_the_cached_evaluation(as_bandit_role, rclient, bandit_settings):
    coach(rclient, bandit_settings, 12)
    viewer = await as_bandit_role("viewer")
    for name, points in (("1h", 60), ("24h", 144), ("7d", 168)):
        data = await (await viewer.get(f"/api/bandit/history?range={name}")).json()
        assert data["range"] == name and len(data["points"]) == points
        assert data["totals"]["decisions"] == 12
        assert sum(a["rated"] for a in data["totals"]["arms"].values()) == 12
    bad = await viewer.get("/api/bandit/history?range=2d")
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["loc"] == ["query", "range"]
    first = await (await viewer.get("/api/bandit/evaluation")).json()
    assert first["turns_read"] == 12 and first["turns_evaluated"] == 12
    assert [p["policy"] for p in first["policies"]] == ["running", "uniform", "alpha=1"]
    coach(rclient, bandit_settings, 2, first=13)
    again = await (await viewer.get("/api/bandit/evaluation")).json()
    assert again == first  # cached: not read again within a minute


async def test_the_tier_mix_counts_the_tier_that_answered(as_bandit_role, rclient, bandit_settings):
    from tests.fake_llm import running_fake_llm

    with running_fake_llm() as llm:
        models = {f"llm_model_{t}": f"fake-{t}" for t in ("fast", "balanced", "creative")}
        settings = bandit_settings.model_copy(update={"llm_base_url": llm.url, **models})
        coach(rclient, settings, 40)
    answered_by = [rclient.hget(KEYS.chat_turn("s", n), "source") for n in range(1, 41)]
    viewer = await as_bandit_role("viewer")  # a dashboard whose settings name no model
    state = await (await viewer.get("/api/bandit")).json()
    mix = state["recent"]["totals"]["llm_tiers"]
    assert sum(mix.values()) == answered_by.count(b"llm") > 0
    by_model = {
        t: sum(m == f"fake-{t}" for m in llm.models_called()) for t in ("fast", "balanced", "creative")
    }
    assert mix == by_model  # every call answered (the fake never fails here)
    assert state["llm_mix"] == {"shares": {"balanced": 0.3, "fast": 0.6, "creative": 0.1}, "over": "weights"}
    history = await (await viewer.get("/api/bandit/history?range=1h")).json()
    assert history["totals"]["llm_tiers"] == mix


async def test_the_bandit_section_costs_the_same_for_one_viewer_or_ten(
    aiohttp_client, bandit_settings, token, rclient
):
    from dashboard.app import create_app
    from dashboard.appkeys import POLLER
    from tests.dashboard.conftest import login

    coach(rclient, bandit_settings, 6)
    settings = bandit_settings.model_copy(
        update={"dashboard_probe_interval": 0.0, "dashboard_stream_interval": 0.1}
    )
    client = await aiohttp_client(create_app(settings))
    await login(client, token("viewer"))
    poller = client.server.app[POLLER]
    ends: list[tuple[int, int]] = []
    publish = poller._publish

    def counting(state):
        if state.get("status") == {"redis": "ok"}:  # a tick's end
            stats = rclient.info("commandstats")
            ends.append(
                (sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info"), poller.section_reads)
            )
        publish(state)

    poller._publish = counting

    async def per_tick(viewers: int) -> tuple[float, float]:
        sockets = [await client.ws_connect(ws_url("bandit"), headers=origin(client)) for _ in range(viewers)]
        for ws in sockets:
            await ws.receive_json()
        start = len(ends)
        while len(ends) < start + 11:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        (c0, r0), (c1, r1) = ends[start], ends[start + 10]
        for ws in sockets:
            await ws.close()
        return (c1 - c0) / 10, (r1 - r0) / 10

    (one, reads_one), (ten, reads_ten) = await per_tick(1), await per_tick(10)
    assert reads_one == reads_ten == 1  # the section read once per tick
    assert abs(one - ten) <= 0.5, (one, ten)  # the same Redis commands per tick
