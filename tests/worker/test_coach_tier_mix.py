"""The tier traffic mix (issue 18, part 1): LLM_TIER_WEIGHTS routes each turn to a tier drawn by
the turn's own reproducible draw; over 1000 turns through real HTTP to a fake OpenAI-compatible
server the realised mix is within 5 percentage points of the weights; a failing tier's share
moves down (creative → balanced) while its breaker is open and comes back after its trial."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from shared.errors import ConfigError
from shared.llm_tiers import parse_weights, pick, shares, turn_draw
from shared.settings import load_settings
from tests.conftest import SECRET
from tests.fake_llm import BUILTIN, MODELS, Clock, FakeLLM
from worker.coach import metrics
from worker.coach.breaker import BreakerState, CircuitBreaker
from worker.coach.cache import TTLCache
from worker.coach.llm import GuardedLLM, OpenAIClient

WEIGHTS = parse_weights("fast=60,balanced=30,creative=10")
TURNS = 1000


def guarded(fake: FakeLLM, models: dict[str, str] = MODELS, clock: Clock | None = None) -> GuardedLLM:
    clock = clock or Clock()
    return GuardedLLM(
        OpenAIClient(fake.url, None, timeout=2.0),
        models,
        breaker=CircuitBreaker(clock=clock),
        cache=TTLCache(10, 600.0, clock=clock),
        backoff=0.0001,
        max_backoff=0.001,
        weights=WEIGHTS,
    )


def chosen() -> dict[str, float]:
    return {t: metrics.LLM_TIER_CHOSEN.labels(t)._value.get() for t in MODELS}


def run_turns(llm: GuardedLLM, first: int, count: int) -> tuple[Counter[str], Counter[str | None]]:
    """``count`` turns of 50 sessions; (turns chosen per tier, answers per model)."""
    before = chosen()
    answers: Counter[str | None] = Counter()
    for i in range(first, first + count):
        session, turn = f"session-{i % 50}", i // 50 + 1
        answer = llm.generate(BUILTIN, f"message {i}", "{}", draw=turn_draw(session, turn))
        assert answer.source == "llm", answer
        answers[answer.model] += 1
    after = chosen()
    return Counter({t: int(after[t] - before[t]) for t in MODELS}), answers


def test_the_draw_is_reproducible_per_turn_and_uniform():
    assert turn_draw("s1", 3) == turn_draw("s1", 3)
    assert turn_draw("s1", 3) != turn_draw("s1", 4) != turn_draw("s2", 3)
    draws = [turn_draw(f"s{i}", i) for i in range(10_000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert abs(sum(draws) / len(draws) - 0.5) < 0.01
    share = shares(WEIGHTS, ["creative", "balanced", "fast"])
    assert share == pytest.approx({"creative": 0.1, "balanced": 0.3, "fast": 0.6})
    assert [pick(share, d) for d in (0.0, 0.099, 0.1, 0.399, 0.4, 0.9999)] == [
        "creative", "creative", "balanced", "balanced", "fast", "fast",
    ]  # fmt: skip


def test_1000_turns_realise_the_weights_within_5_points(fake):
    llm = guarded(fake)
    turns, answers = run_turns(llm, 0, TURNS)
    print("realised mix", dict(turns))
    assert sum(turns.values()) == TURNS and len(fake.requests) == TURNS  # one call a turn
    for tier, weight in (("fast", 0.6), ("balanced", 0.3), ("creative", 0.1)):
        assert abs(turns[tier] / TURNS - weight) <= 0.05, turns
        assert answers[MODELS[tier]] == turns[tier]  # each turn answered by its tier's model
    # reproducible: another process (a fresh router) sends the same turn to the same model
    again = guarded(fake)
    for i in (0, 7, 123, 999):
        draw = turn_draw(f"session-{i % 50}", i // 50 + 1)
        assert again.generate(BUILTIN, f"other {i}", "{}", draw=draw).model == MODELS[llm.tier(draw=draw)]


def test_tiers_without_a_model_drop_out_and_the_rest_renormalise(fake):
    models = {"creative": "model-creative", "fast": "model-fast"}
    turns, _ = run_turns(guarded(fake, models), 0, TURNS)
    assert turns["balanced"] == 0
    assert abs(turns["fast"] / TURNS - 60 / 70) <= 0.05, turns
    assert abs(turns["creative"] / TURNS - 10 / 70) <= 0.05, turns


def test_a_failing_tier_hands_its_share_down_until_its_trial_succeeds(fake):
    clock = Clock()
    llm = guarded(fake, clock=clock)
    fake.failing = {"model-creative"}
    turns, answers = run_turns(llm, 0, TURNS)
    # five failures in a row open creative's breaker: from then on its turns go to balanced
    assert turns["creative"] == 5 and llm.tier_breakers["creative"].state is BreakerState.OPEN
    assert answers["model-creative"] == 0
    assert abs(turns["balanced"] / TURNS - 0.4) <= 0.05, turns  # its 30 % and creative's 10 %
    assert abs(turns["fast"] / TURNS - 0.6) <= 0.05, turns
    assert llm.breaker.state is BreakerState.CLOSED  # the service itself is fine
    assert fake.models_called().count("model-creative") == 5
    creative_draw = next(d for i in range(100) if pick(llm.share, d := turn_draw("x", i)) == "creative")
    assert llm.tier(draw=creative_draw) == "balanced"

    clock.now += 30  # half-open: one creative turn is its trial, which fails again
    run_turns(llm, TURNS, 200)
    assert fake.models_called().count("model-creative") == 6
    fake.failing.clear()
    clock.now += 30  # the next trial succeeds: creative takes its 10 % again
    turns, answers = run_turns(llm, TURNS + 200, TURNS)
    assert llm.tier_breakers["creative"].state.name == "CLOSED"
    assert abs(turns["creative"] / TURNS - 0.1) <= 0.05, turns
    assert abs(turns["balanced"] / TURNS - 0.3) <= 0.05, turns
    assert answers["model-creative"] == turns["creative"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast=abc", "fast: weight 'abc' is not a number"),
        ("turbo=5", "unknown tier 'turbo'"),
        ("fast=-1", "finite number >= 0"),
        ("fast=1,fast=2", "named twice"),
        ("fast", "expected tier=weight"),
        ("fast=0,balanced=0", "at least one tier needs a positive weight"),
    ],
)
def test_bad_weights_name_the_variable(monkeypatch: Any, value: str, message: str):
    monkeypatch.setenv("LLM_TIER_WEIGHTS", value)
    with pytest.raises(ConfigError, match=rf"^LLM_TIER_WEIGHTS: .*{message}"):
        load_settings(jwt_secret=SECRET)


def test_weights_must_reach_a_configured_tier(monkeypatch: Any):
    monkeypatch.setenv("LLM_TIER_WEIGHTS", "fast=1")
    llm = {"llm_base_url": "http://127.0.0.1:1/v1", "llm_model_creative": "big"}
    with pytest.raises(ConfigError, match=r"^LLM_TIER_WEIGHTS \(fast=1\) gives no weight to a tier with"):
        load_settings(jwt_secret=SECRET, **llm)
    monkeypatch.setenv("LLM_TIER_WEIGHTS", "")
    assert load_settings(jwt_secret=SECRET, **llm).tier_weights == WEIGHTS  # empty: the default
