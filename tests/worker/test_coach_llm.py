"""The LLM guards against a small OpenAI-compatible server on 127.0.0.1: malformed JSON, 500s,
timeouts and 429s; the breaker opens, the model downshifts, the fallback answers, the cache hits."""

from __future__ import annotations

from typing import Any

import pytest

from shared.devtools.embedded_redis import free_port
from tests.fake_llm import BUILTIN, MODELS, Clock, FakeLLM
from worker.coach import metrics
from worker.coach.breaker import BreakerState, CircuitBreaker
from worker.coach.cache import TTLCache
from worker.coach.llm import GuardedLLM, LLMError, OpenAIClient


def guarded(fake: FakeLLM, clock: Clock | None = None, **kw: Any) -> GuardedLLM:
    clock = clock or Clock()
    return GuardedLLM(
        OpenAIClient(fake.url, "sk-test", timeout=0.3),
        MODELS,
        breaker=CircuitBreaker(clock=clock),
        cache=TTLCache(1000, 600.0, clock=clock),
        backoff=0.001,
        max_backoff=0.01,
        **kw,
    )


def test_answer_comes_from_the_llm_then_from_the_cache(fake):
    llm = guarded(fake)
    hits = metrics.LLM_CACHE_HITS._value.get()
    first = llm.generate(BUILTIN, "What does it cost?", "{}")
    assert first.source == "llm" and first.model == "model-creative"
    assert first.text == "LLM says hi via model-creative"
    assert first.entry_id == "pricing-tiers"
    again = llm.generate(BUILTIN, "  what does it COST? ", "{}")
    assert again.source == "cache" and again.text == first.text
    assert len(fake.requests) == 1
    assert fake.requests[0]["auth"] == "Bearer sk-test"
    assert metrics.LLM_CACHE_HITS._value.get() == hits + 1
    assert llm.cache.hits == 1 and llm.cache.misses == 1 and llm.cache.hit_ratio == 0.5


def test_malformed_and_invalid_json_are_retried_with_a_downshift(fake):
    fake.script = ["malformed", "badschema", "ok"]
    answer = guarded(fake).generate(BUILTIN, "hello", "{}")
    assert answer.source == "llm"
    assert fake.models_called() == ["model-creative", "model-balanced", "model-fast"]
    assert answer.model == "model-fast"


def test_three_failures_fall_back_to_the_builtin_answer(fake):
    fake.script = ["500", "timeout", "429"]
    llm = guarded(fake)
    answer = llm.generate(BUILTIN, "hello", "{}")
    assert answer.source == "fallback"
    assert answer.text == BUILTIN.text
    assert len(fake.requests) == 3
    assert llm.breaker.failures_in_row == 3
    assert len(llm.cache) == 0  # fallbacks are never cached


def test_a_refusal_is_not_retried(fake):
    fake.script = ["401"]
    answer = guarded(fake).generate(BUILTIN, "hello", "{}")
    assert answer.source == "fallback"
    assert len(fake.requests) == 1


def test_breaker_opens_after_five_failures_in_a_row_and_recovers_with_one_trial(fake):
    clock = Clock()
    llm = guarded(fake, clock)
    fake.script = ["500"] * 5
    assert llm.generate(BUILTIN, "one", "{}").source == "fallback"  # 3 failures
    assert llm.generate(BUILTIN, "two", "{}").source == "fallback"  # 2 more: open
    assert len(fake.requests) == 5
    assert llm.breaker.state is BreakerState.OPEN
    assert metrics.LLM_BREAKER._value.get() == BreakerState.OPEN
    # While open nothing is sent: the fallback answers at once.
    assert llm.generate(BUILTIN, "three", "{}").source == "fallback"
    assert len(fake.requests) == 5
    # After 30 s one trial call goes out, on the fastest model; a failure re-opens.
    clock.now += 30
    assert llm.breaker.state is BreakerState.HALF_OPEN  # type: ignore[comparison-overlap]
    assert llm.tier() == "fast"  # type: ignore[unreachable]
    fake.script = ["500"]
    assert llm.generate(BUILTIN, "four", "{}").source == "fallback"
    assert len(fake.requests) == 6 and fake.models_called()[-1] == "model-fast"
    assert llm.breaker.state is BreakerState.OPEN
    clock.now += 30
    answer = llm.generate(BUILTIN, "five", "{}")
    assert answer.source == "llm" and answer.model == "model-fast"
    assert llm.breaker.state is BreakerState.CLOSED
    assert llm.tier() == "creative"  # healthy again: back to the most capable model


def test_breaker_opens_at_half_failures_over_the_window():
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for i in range(20):
        assert breaker.allow()
        breaker.record(i % 2 == 0)  # alternate: never 5 in a row
        if breaker.state is BreakerState.OPEN:
            break
    state = breaker.state
    assert state is BreakerState.OPEN
    assert i == 9  # 5 failures of the first 10 calls (minimum sample)
    assert not breaker.allow()
    clock.now += 30
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # nobody else while it runs
    breaker.record(True)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_stays_closed_below_the_threshold():
    breaker = CircuitBreaker()
    for i in range(40):
        breaker.record(i % 3 == 0 or i % 3 == 1)  # one failure in three
    assert breaker.state is BreakerState.CLOSED


def test_cache_is_lru_with_ttl():
    clock = Clock()
    cache: TTLCache[str] = TTLCache(2, 600.0, clock=clock)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")  # evicts b
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    clock.now += 601
    assert cache.get("a") is None and len(cache) == 1


def test_client_errors_are_llm_errors(fake):
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}/v1", None, timeout=0.3)
    with pytest.raises(LLMError, match="connection failed"):
        client.complete("m", [])
    fake.script = ["timeout"]
    with pytest.raises(LLMError, match="timeout"):
        OpenAIClient(fake.url, None, timeout=0.2).complete("m", [])
