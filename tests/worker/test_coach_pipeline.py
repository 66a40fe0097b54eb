"""The coaching pipeline in process against the test Redis: turns, ratings, idempotency, the
built-in engine, the playbook file and the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client import REGISTRY

from shared.coaching import CoachPayload, FeedbackPayload
from shared.errors import ConfigError
from shared.keys import Keys
from shared.playbook import load_playbook
from shared.settings import load_settings
from worker.bandit.features import features
from worker.coach.engine import BuiltinEngine, Suggestion
from worker.coach.pipeline import CoachPipeline, TurnPending, TurnTaken, UnknownTurn, guard
from worker.coach.playbook import DEFAULT_PLAYBOOK

KEYS = Keys()


def turn(n: int = 1, message: str = "This is too expensive. What does it cost?", session: str = "s1"):
    return CoachPayload(session_id=session, message=message, user_id="u1", turn_number=n)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def pipeline(rclient, settings):
    return CoachPipeline(rclient, settings)


def test_a_turn_is_decided_answered_and_stored_with_its_context(pipeline, rclient):
    before = {
        n: sample("coordinator_node_execution_total", node=n, status="ok")
        for n in ("features", "select", "generate", "guard", "store")
    }
    result = pipeline.run_turn(turn(), "task-1")
    assert result["arm"] in ("npc", "tools", "knowledge")
    assert result["exploration"] is True and result["propensity"] == pytest.approx(1 / 3)  # warm-up
    assert result["suggestion"]["source"] == "builtin" and result["suggestion"]["text"]
    record = rclient.hgetall(KEYS.chat_turn("s1", 1))
    assert record[b"task"] == b"task-1" and record[b"arm"].decode() == result["arm"]
    stored_x = np.frombuffer(record[b"x"], dtype="<f8")
    assert np.array_equal(stored_x, features(turn().message, 0))
    assert json.loads(record[b"result"]) == result
    assert 0 < rclient.ttl(KEYS.chat_turn("s1", 1)) <= 7 * 86400
    for node, count in before.items():
        assert sample("coordinator_node_execution_total", node=node, status="ok") == count + 1, node
    assert sample("coordinator_node_execution_duration_seconds_count", node="select") >= 1
    assert sample("coordinator_bandit_decisions_total", arm=result["arm"], exploration="true") >= 1
    assert sample("coordinator_bandit_ucb_score_count", arm="npc") >= 1


def test_a_redelivered_turn_returns_the_same_answer_and_counts_one_pull(pipeline, rclient):
    first = pipeline.run_turn(turn(), "task-1")
    again = pipeline.run_turn(turn(), "task-1")
    assert again == first
    summary = pipeline.bandit.summary()
    assert summary["decisions"] == 1
    assert sum(a["pulls"] for a in summary["arms"].values()) == 1


def test_a_crash_after_the_decision_reuses_it(pipeline, rclient):
    pipeline.run_turn(turn(), "task-1")
    rclient.hdel(KEYS.chat_turn("s1", 1), "result")  # as if the worker died before "store"
    again = pipeline.run_turn(turn(), "task-1")
    assert again["suggestion"]["text"]
    assert pipeline.bandit.summary()["decisions"] == 1


def test_another_task_for_a_claimed_turn_fails(pipeline):
    pipeline.run_turn(turn(), "task-1")
    with pytest.raises(TurnTaken, match="task-1"):
        pipeline.run_turn(turn(), "task-2")


def test_a_rating_counts_once_with_the_stored_context(pipeline, rclient):
    result = pipeline.run_turn(turn(), "task-1")
    arm = result["arm"]
    before = sample("coordinator_user_feedback_total", arm=arm)
    first = pipeline.rate(FeedbackPayload(session_id="s1", turn_number=1, rating=5))
    again = pipeline.rate(FeedbackPayload(session_id="s1", turn_number=1, rating=1))  # sent twice
    redelivered = pipeline.rate(FeedbackPayload(session_id="s1", turn_number=1, rating=5))
    assert first == {"applied": True, "arm": arm, "reward": 1.0, "rating_key": "s1:1"}
    assert not again["applied"] and not redelivered["applied"]
    summary = pipeline.bandit.summary()
    assert summary["arms"][arm]["updates"] == 1
    assert summary["arms"][arm]["mean_reward"] == 1.0
    assert sample("coordinator_user_feedback_total", arm=arm) == before + 1
    assert sample("coordinator_bandit_reward", arm=arm) == 1.0
    (rating,) = pipeline.bandit.ratings()
    assert np.array_equal(rating.x, features(turn().message, 0)) and rating.arm == arm
    assert rclient.hget(KEYS.chat_turn("s1", 1), "rating") == b"5"


def test_ratings_of_unknown_and_pending_turns(pipeline, rclient):
    with pytest.raises(UnknownTurn):
        pipeline.rate(FeedbackPayload(session_id="nobody", turn_number=1, rating=3))
    rclient.set(KEYS.chat_turns("s2"), 2)  # turns 1 and 2 handed out, not answered yet
    with pytest.raises(TurnPending):
        pipeline.rate(FeedbackPayload(session_id="s2", turn_number=2, rating=3))
    with pytest.raises(UnknownTurn):
        pipeline.rate(FeedbackPayload(session_id="s2", turn_number=3, rating=3))


def test_builtin_engine_is_deterministic_and_follows_keywords():
    engine = BuiltinEngine(load_playbook(DEFAULT_PLAYBOOK))
    price = "Honestly the price is above our budget. What does it cost per seat?"
    fact = engine.suggest("knowledge", price, session_id="a", turn_number=3)
    assert fact.entry_id == "pricing-tiers" and fact.text.startswith("Pricing: ")
    assert engine.suggest("knowledge", price, session_id="a", turn_number=3) == fact
    tool = engine.suggest(
        "tools", "We already use a competitor and switching is a risk", session_id="a", turn_number=1
    )
    assert tool.entry_id == "competitor-contrast"
    persona = engine.suggest(
        "npc", "Is your security SOC 2 compliant? Where is the data?", session_id="b", turn_number=1
    )
    assert persona.entry_id == "technical-evaluator" and persona.text.startswith("Alex")
    # No keyword at all: still an answer, stable for the turn.
    a = engine.suggest("tools", "hmm", session_id="x", turn_number=1)
    assert a == engine.suggest("tools", "hmm", session_id="x", turn_number=1)
    with pytest.raises(ValueError, match="unknown arm"):
        engine.suggest("other", "hi", session_id="x", turn_number=1)


def test_guard_cleans_and_bounds_the_text():
    builtin = Suggestion("Built-in.", "tools", "t", "T")
    assert guard(Suggestion("a\x00b \n\n c", "tools", "t", "T", "llm"), builtin).text == "a b c"
    long = guard(Suggestion("word " * 400, "tools", "t", "T", "llm"), builtin)
    assert len(long.text) <= 1000 and long.text.endswith("…")
    empty = guard(Suggestion(" \x01 ", "tools", "t", "T", "llm"), builtin)
    assert empty.text == "Built-in." and empty.source == "fallback"


def test_knowledge_base_path_replaces_the_playbook(tmp_path, rclient, redis_url):
    data = json.loads(DEFAULT_PLAYBOOK.read_text())
    data["facts"] = [{"id": "only", "topic": "Only fact", "keywords": ["x"], "fact": "The one fact."}]
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(data))
    settings = load_settings(redis_url=redis_url, jwt_secret="s" * 40, knowledge_base_path=str(path))
    pipe = CoachPipeline(rclient, settings)
    assert pipe.engine.suggest("knowledge", "price?", session_id="s", turn_number=1).text == (
        "Only fact: The one fact."
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"version": 1, "product": "p", "personas": [], "techniques": [], "facts": []}', "personas"),
    ],
)
def test_a_bad_knowledge_base_path_stops_the_start_with_one_clear_line(tmp_path, content, problem):
    path = tmp_path / "kb.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(jwt_secret="s" * 40, knowledge_base_path=str(path))
    message = str(info.value)
    assert message.startswith("KNOWLEDGE_BASE_PATH: ") and str(path) in message and problem in message
