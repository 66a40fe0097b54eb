"""``GET /api/v1/bandit/evaluation`` and ``opsdeck bandit evaluate`` on turns logged by the real
worker pipeline (real redis-server): what the log supports, the replay, the caps, the errors."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from coordinator.app import create_app
from shared.coaching import CoachPayload, FeedbackPayload
from shared.devtools.bandit_client import run as cli_run
from shared.devtools.embedded_redis import EmbeddedRedis
from worker.bandit import linucb
from worker.bandit.redis_state import RedisLinUCB
from worker.coach.pipeline import CoachPipeline

WARMUP, TURNS = 45, 150
MESSAGES = [
    "what does it cost?",
    "we already use a competitor",
    "send me the security documentation",
    "I need to talk to my boss first",
    "how long does the integration take?",
    "your price is too high",
]


def rating_for(arm: str, message: str) -> int:
    """A fixed rating rule: the knowledge arm helps on facts, npc on objections, tools so-so."""
    if arm == "knowledge":
        return 5 if ("cost" in message or "long" in message or "security" in message) else 2
    if arm == "npc":
        return 4 if ("competitor" in message or "boss" in message) else 2
    return 3


@pytest.fixture
def logged(rclient, settings):
    """TURNS rated turns (WARMUP uniform, then greedy), each rated right after its answer."""
    bandit = RedisLinUCB(rclient, keys=settings.keys, alpha=settings.bandit_alpha, warmup=WARMUP, seed=3)
    pipeline = CoachPipeline(rclient, settings, bandit=bandit)
    rewards = []
    for n in range(1, TURNS + 1):
        message = MESSAGES[(n * 7) % len(MESSAGES)] + f" ({n % 4})"
        result = pipeline.run_turn(
            CoachPayload(session_id="ev", message=message, user_id="u", turn_number=n), f"t{n}"
        )
        rating = rating_for(result["arm"], message)
        pipeline.rate(FeedbackPayload(session_id="ev", turn_number=n, rating=rating))
        rewards.append((rating - 1) / 4)
    return rewards


def policy(body, name):
    return next(p for p in body["policies"] if p["policy"] == name)


async def test_evaluation_of_logged_turns(api, auth, logged, rclient, settings):
    # α as the decision stores it ("%.17g" text) on the later turns; absent on the first ten (turns
    # decided before the field existed), which then count as decided with the configured α
    for n in range(1, TURNS + 1):
        key = settings.keys.chat_turn("ev", n)
        rclient.hdel(key, "alpha") if n <= 10 else rclient.hset(key, "alpha", "1")
    resp = await api.get("/api/v1/bandit/evaluation?alpha=0,5", headers=auth("tasks:read"))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["turns_read"] == body["turns_evaluated"] == TURNS and not body["truncated"]
    assert body["segments"] == {"warmup": WARMUP, "learned": TURNS - WARMUP, "other": 0}
    assert body["limit"] == 5000 and body["since"] is None and body["confidence"] == 0.95
    assert body["alpha_logged"] == {
        "logged": TURNS - 10,
        "not_logged": 10,
        "values": {"1": TURNS - 10, "1 (not logged: configured)": 10},
    }
    # the replay rebuilt the model the ratings trained and reproduces every greedy decision
    assert body["replay_agreement"] == 1.0
    assert [p["policy"] for p in body["policies"]] == ["running", "uniform", "alpha=1", "alpha=0", "alpha=5"]

    running = policy(body, "running")["segments"]
    assert running["all"]["estimable"] and running["all"]["ess"] == pytest.approx(TURNS)
    assert running["all"]["ips"]["value"] == pytest.approx(sum(logged) / TURNS)
    assert running["learned"]["ips"]["value"] == pytest.approx(sum(logged[WARMUP:]) / (TURNS - WARMUP))

    uniform = policy(body, "uniform")["segments"]
    assert uniform["warmup"]["estimable"] and uniform["warmup"]["support"] == pytest.approx(1.0)
    low, high = uniform["warmup"]["dr"]["ci"]
    assert low < uniform["warmup"]["dr"]["value"] < high
    # a deterministic log gives a uniform target support on one arm in three: refused, bounded
    for seg in ("learned", "all"):
        assert not uniform[seg]["estimable"] and uniform[seg]["ips"] is None and uniform[seg]["dr"] is None
        assert "no support" in uniform[seg]["reason"]
        assert 0 <= uniform[seg]["bounds"][0] <= uniform[seg]["bounds"][1] <= 1
    assert uniform["learned"]["support"] == pytest.approx(1 / 3)

    same = policy(body, "alpha=1")["segments"]  # the configured α: the running policy after warm-up
    assert same["learned"]["match_rate"] == 1.0 and same["learned"]["estimable"]
    assert same["learned"]["ips"]["value"] == pytest.approx(running["learned"]["ips"]["value"])
    for name in ("alpha=0", "alpha=5"):
        seg = policy(body, name)["segments"]
        assert seg["warmup"]["estimable"]  # uniform logging supports every target
        assert seg["warmup"]["ess"] == pytest.approx(seg["warmup"]["match_rate"] * WARMUP)  # the matches
        assert seg["learned"]["estimable"] == (seg["learned"]["match_rate"] == 1.0)


async def test_the_cap_and_since_bound_the_work(api, auth, logged):
    body = await (await api.get("/api/v1/bandit/evaluation?limit=50", headers=auth())).json()
    assert body["turns_read"] == 50 and body["truncated"] and body["limit"] == 50
    assert body["segments"]["warmup"] == 0  # the newest 50 turns are all past warm-up
    assert body["replay_agreement"] == 1.0  # the state before them is rebuilt exactly
    future = await (
        await api.get("/api/v1/bandit/evaluation?since=2999-01-01T00:00:00", headers=auth())
    ).json()
    assert future["turns_read"] == 0 and future["policies"] == [] and future["since"].startswith("2999-01-01")
    recent = await (await api.get("/api/v1/bandit/evaluation?since=1h", headers=auth())).json()
    assert recent["turns_read"] == TURNS


@pytest.mark.parametrize(
    ("query", "field"),
    [("alpha=x", "alpha"), ("alpha=-1", "alpha"), ("alpha=0,2,3,4,5,6,7,8", "alpha"),
     ("since=yesterday", "since"), ("limit=0", "limit"), ("limit=20001", "limit"), ("bogus=1", "bogus")],
)  # fmt: skip
async def test_invalid_queries_are_422(api, auth, query, field):
    resp = await api.get(f"/api/v1/bandit/evaluation?{query}", headers=auth())
    assert resp.status == 422
    assert any(f["loc"][-1] == field for f in (await resp.json())["error"]["fields"])


async def test_scope_and_empty_state(api, auth):
    assert (await api.get("/api/v1/bandit/evaluation", headers=auth("tasks:write"))).status == 403
    body = await (await api.get("/api/v1/bandit/evaluation", headers=auth("tasks:read"))).json()
    assert body["turns_read"] == 0 and body["policies"] == [] and body["note"] == "no bandit state yet"


async def test_cli_prints_the_coordinator_evaluation(api, auth, logged, settings, token):
    base = str(api.make_url("")).rstrip("/")
    out = io.StringIO()
    code = await asyncio.to_thread(
        cli_run, settings, alphas=[0.0, 2.0], limit=100, out=out, base=base, token=token("tasks:read")
    )
    assert code == 0
    text = out.getvalue()
    assert "turns read 100 (limit 100, truncated" in text and "alpha=2" in text and "running" in text
    assert "no estimate (support 33%" in text  # uniform on the greedy turns
    out, reader = io.StringIO(), token("tasks:read")
    assert await asyncio.to_thread(cli_run, settings, as_json=True, out=out, base=base, token=reader) == 0
    assert json.loads(out.getvalue())["turns_read"] == TURNS
    assert await asyncio.to_thread(cli_run, settings, since="soon", base=base, token=token("tasks:read")) == 1


def test_the_replay_chooses_like_the_worker():
    """The coordinator cannot import the worker: its greedy rule is the worker's (first maximum)."""
    import numpy as np

    from shared.bandit_evaluation import greedy

    state = linucb.initial_state()
    mean = state.theta @ np.ones(state.dim)
    width = np.einsum("kij,i,j->k", state.a_inv, np.ones(state.dim), np.ones(state.dim))
    assert (
        greedy(mean[None, :], width[None, :], 1.0)[0]
        == linucb.choose(linucb.ARMS, mean.tolist(), (mean + np.sqrt(width)).tolist(), False, 0.0)[0]
    )


@pytest.mark.slow
async def test_503_while_redis_is_down(aiohttp_client, settings, auth, tmp_path):
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    try:
        api = await aiohttp_client(create_app(settings.model_copy(update={"redis_url": server.url})))
        assert (await api.get("/api/v1/bandit/evaluation", headers=auth())).status == 200
        server.stop()
        resp = await api.get("/api/v1/bandit/evaluation", headers=auth())
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "unavailable"
    finally:
        server.stop()
