"""Context features of a chat turn: shape, ranges, keyword groups, stage coding, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.bandit.features import DIM, FEATURE_NAMES, MAX_TURN, STAGES, check_context, features, infer_stage

IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def test_vector_is_float64_bounded_and_documented():
    x = features("Hi, what does it cost? We need it today, the competitor is cheaper.", 3, "negotiation")
    assert x.dtype == np.float64 and x.shape == (DIM,) == (len(FEATURE_NAMES),)
    assert np.all((x >= 0) & (x <= 1)) and x[IDX["bias"]] == 1.0
    assert 8 <= DIM <= 12
    import worker.bandit.features as module

    for name in FEATURE_NAMES:
        assert f"``{name}``" in (module.__doc__ or "")


@pytest.mark.parametrize(
    ("message", "feature"),
    [
        ("I'm not sure this is for us", "objection"),
        ("What is the price per seat", "price"),
        ("We are comparing you with another vendor", "competitor"),
        ("We need this asap", "urgency"),
        ("Can you tell me more?", "question"),
    ],
)
def test_each_keyword_group_fires_on_its_words_only(message, feature):
    x = features(message, 1, "discovery")
    assert x[IDX[feature]] > 0
    others = {"objection", "price", "competitor", "urgency", "question"} - {feature}
    assert all(x[IDX[o]] == 0 for o in others), {o: x[IDX[o]] for o in others}


def test_keyword_counts_saturate_and_length_and_turn_are_scaled():
    one = features("too expensive", 0, "opening")
    two = features("too expensive and the budget and the price and the cost", 0, "opening")
    assert one[IDX["price"]] == 0.5 and two[IDX["price"]] == 1.0
    assert features("word " * 30, 0)[IDX["length"]] == 0.5
    assert features("word " * 500, 0)[IDX["length"]] == 1.0
    assert features("hi", 5)[IDX["turn"]] == 5 / MAX_TURN
    assert features("hi", 500)[IDX["turn"]] == 1.0


def test_stage_is_one_hot_with_opening_as_reference():
    rows = {stage: features("hello", 2, stage)[IDX["discovery"] :] for stage in STAGES}
    assert rows["opening"].tolist() == [0, 0, 0]
    assert rows["discovery"].tolist() == [1, 0, 0]
    assert rows["negotiation"].tolist() == [0, 1, 0]
    assert rows["closing"].tolist() == [0, 0, 1]


def test_stage_is_inferred_when_missing():
    assert infer_stage("hello", 0) == "opening"
    assert infer_stage("tell me about the product", 3) == "discovery"
    assert infer_stage("what's the price", 3) == "negotiation"
    assert infer_stage("ok", 9) == "closing"
    assert features("what's the price", 3)[IDX["negotiation"]] == 1.0


@pytest.mark.parametrize("turn", [-1, 1.5, True, "3"])
def test_bad_turn_rejected(turn):
    with pytest.raises(ValueError, match="turn"):
        features("hi", turn)


def test_unknown_stage_rejected():
    with pytest.raises(ValueError, match="stage"):
        features("hi", 0, "lunch")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_context_rejects_nan_and_inf(bad):
    x = np.ones(DIM)
    x[4] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_context(x, DIM)


def test_check_context_shape_and_huge_finite_values():
    with pytest.raises(ValueError, match="shape"):
        check_context(np.ones(DIM + 1), DIM)
    huge = np.full(DIM, 1e308)  # the sum overflows, every value is finite: accepted
    assert check_context(huge, DIM) is not None
    assert check_context([1] * DIM, DIM).dtype == np.float64
