"""The exploration schedule (BANDIT_ALPHA_SCHEDULE, issue 18 part 3): α of every decision from
the shared decision count, equal in the in-memory model, the Redis script, the turn record, the
gauge and GET /api/v1/bandit. Real redis-server from tests/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from shared.bandit_schedule import AlphaSchedule, current_alpha, parse_schedule
from shared.coaching import CoachPayload
from shared.errors import ConfigError
from shared.settings import load_settings
from shared.turns import DECISION_FIELDS
from worker.bandit.features import DIM
from worker.bandit.linucb import LinUCB
from worker.bandit.redis_state import RedisLinUCB
from worker.coach.pipeline import CoachPipeline


def contexts(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, DIM))
    x[:, 0] = 1.0
    return x


def test_parse_and_the_linear_decay():
    s = parse_schedule("linear:1.0:0.25:10000")
    assert s == AlphaSchedule(1.0, 0.25, 10000) and str(s) == "linear:1.0:0.25:10000"
    assert parse_schedule(None) is None and parse_schedule("") is None and parse_schedule("off") is None
    # start through warm-up (n <= warmup), then linear, then the end value for good
    assert [s.at(n, 1000) for n in (1, 1000)] == [1.0, 1.0]
    assert s.at(1000 + 5000, 1000) == pytest.approx(0.625)
    assert s.at(1000 + 10000, 1000) == 0.25 and s.at(10**9, 1000) == 0.25
    values = [s.at(n, 0) for n in range(0, 10001, 100)]
    assert values == sorted(values, reverse=True)  # monotone
    assert current_alpha(0.7, None, 123, 0) == 0.7  # no schedule: the constant BANDIT_ALPHA
    up = parse_schedule("linear:0:2:10")
    assert up is not None and up.at(5, 0) == 1.0  # increasing is allowed too


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cosine:1:0:10", "expected linear:<start>:<end>:<decisions>"),
        ("linear:1:0.5", "expected linear:<start>:<end>:<decisions>"),
        ("linear:1:x:10", "expected linear"),
        ("linear:1:0.5:0", "decisions must be at least 1"),
        ("linear:-1:0.5:10", "alpha values must be from 0 to 100"),
        ("linear:nan:0.5:10", "alpha values must be from 0 to 100"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_variable(value, message):
    with pytest.raises(ConfigError, match=f"^BANDIT_ALPHA_SCHEDULE: .*{message}"):
        load_settings(bandit_alpha_schedule=value)


def test_settings_parse_the_schedule():
    settings = load_settings(bandit_alpha_schedule=" linear:2:0.5:300 ")
    assert settings.alpha_schedule == AlphaSchedule(2.0, 0.5, 300)
    assert load_settings().alpha_schedule is None


def test_redis_model_follows_the_schedule_like_the_in_memory_model(rclient):
    schedule = AlphaSchedule(2.0, 0.1, 400)
    kwargs = {"warmup": 100, "schedule": schedule}
    memory = LinUCB(seed=7, **kwargs)  # type: ignore[arg-type]
    shared = RedisLinUCB(rclient, seed=7, log_maxlen=0, **kwargs)  # type: ignore[arg-type]
    xs = contexts(700, 8)
    rewards = np.random.default_rng(9).integers(1, 6, size=700)
    alphas = []
    for t, x in enumerate(xs):
        a, b = memory.decide(x), shared.decide(x, record=f"rec:{t}", record_ttl=60)
        assert (a.arm, a.propensity, a.exploration, a.alpha) == (b.arm, b.propensity, b.exploration, b.alpha)
        assert b.ucb_scores == pytest.approx(a.ucb_scores, rel=1e-12, abs=1e-15)
        assert float(rclient.hget(f"rec:{t}", "alpha")) == b.alpha  # %.17g round-trips the double
        assert b.alpha == schedule.at(t + 1, 100)
        alphas.append(b.alpha)
        r = (int(rewards[t]) - 1) / 4
        memory.update(a.arm, x, r, key=f"k{t}")
        shared.update(b.arm, x, r, key=f"k{t}")
    assert alphas[:100] == [2.0] * 100 and alphas[-200:] == [0.1] * 200
    assert alphas[100:500] == sorted(alphas[100:500], reverse=True) and len(set(alphas[100:500])) == 400
    assert shared.summary()["alpha"] == memory.summary()["alpha"] == 0.1
    assert shared.summary()["alpha_schedule"] == {
        "kind": "linear",
        "start": 2.0,
        "end": 0.1,
        "decisions": 400,
    }


def test_the_decay_runs_on_the_shared_count_of_every_process(rclient):
    schedule = AlphaSchedule(1.0, 0.0, 10)
    one, two = (RedisLinUCB(rclient, warmup=0, schedule=schedule, seed=s) for s in (1, 2))
    x = contexts(1, 3)[0]
    seen = [m.decide(x).alpha for _ in range(5) for m in (one, two)]
    assert seen == [schedule.at(n, 0) for n in range(1, 11)]
    assert one.current_alpha() == two.current_alpha() == 0.0


def test_without_a_schedule_every_decision_uses_bandit_alpha(rclient):
    shared = RedisLinUCB(rclient, alpha=0.3, warmup=2)
    x = contexts(1, 4)[0]
    assert {shared.decide(x, record="r", record_ttl=0).alpha for _ in range(5)} == {0.3}
    assert rclient.hget("r", "alpha") == b"0.29999999999999999"


def test_each_turn_stores_its_alpha_and_the_gauge_follows(rclient, settings):
    assert "alpha" in DECISION_FIELDS
    pipeline = CoachPipeline(rclient, settings.model_copy(update={"bandit_alpha_schedule": "linear:1:0.5:4",
                                                                   "bandit_warmup": 2}))  # fmt: skip
    expected = [1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.5]
    for n, alpha in enumerate(expected, start=1):
        pipeline.run_turn(
            CoachPayload(session_id="sch", message="price?", user_id="u", turn_number=n), f"t{n}"
        )
        record = rclient.hgetall(pipeline.turns.record_key("sch", n))
        assert set(DECISION_FIELDS) <= {k.decode() for k in record}
        assert float(record[b"alpha"]) == alpha
        assert REGISTRY.get_sample_value("coordinator_bandit_alpha") == alpha


async def test_the_bandit_view_shows_the_current_alpha_and_its_schedule(
    aiohttp_client, settings, auth, rclient
):
    from coordinator.app import create_app

    scheduled = settings.model_copy(update={"bandit_alpha_schedule": "linear:1:0.25:10", "bandit_warmup": 3})
    api = await aiohttp_client(create_app(scheduled))
    body = await (await api.get("/api/v1/bandit", headers=auth("tasks:read"))).json()
    assert body["alpha"] == 1.0
    assert body["alpha_schedule"] == {"kind": "linear", "start": 1.0, "end": 0.25, "decisions": 10}
    model = CoachPipeline(rclient, scheduled).bandit
    x = contexts(1, 5)[0]
    for _ in range(8):  # 3 warm-up + 5 of the 10 scheduled
        model.decide(x)
    body = await (await api.get("/api/v1/bandit", headers=auth("tasks:read"))).json()
    assert body["decisions"] == 8 and body["alpha"] == model.current_alpha() == 1.0 + (0.25 - 1.0) * (6 / 10)
    assert body["alpha"] == model.summary()["alpha"]
