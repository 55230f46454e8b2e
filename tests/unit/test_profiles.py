"""User vectors: weights, decay, multi-interest, onboarding blend (seeded small arrays)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embrec.domain.model import Interaction
from embrec.domain.profiles import (
    ProfileParams,
    blend_with_profile,
    event_order,
    interaction_weights,
    interest_vectors,
    onboarding_text,
    recent_history,
    user_vector,
)
from embrec.errors import InvalidInputError

DAY = 86_400.0
TEN_YEARS_AGO = 1_700_000_000.0 - 10 * 365 * DAY


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_default_params_decay_like_exp_minus_0_1_per_day_and_halve_every_4_events() -> None:
    params = ProfileParams()
    assert params.decay_per_day == pytest.approx(0.1)
    assert params.half_life_events == 4.0
    assert ProfileParams.with_decay(0.1).half_life_days == pytest.approx(params.half_life_days)
    weights = interaction_weights(["view", "view"], [10 * DAY, 0.0], params)
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] == pytest.approx(math.exp(-1.0) * 0.5 ** (1 / 4))


def test_position_decay_halves_every_h_newer_events_whatever_the_clock() -> None:
    # Given six events of one session (the same second), listed newest first, and no time decay
    params = ProfileParams(half_life_days=None, half_life_events=2.0)
    weights = interaction_weights(["view"] * 6, [5 * DAY] * 6, params)
    # Then an event counts half for every 2 events after it: the order of the session still counts
    np.testing.assert_allclose(weights, [0.5 ** (rank / 2) for rank in range(6)])
    # And the rank comes from the timestamps, not the input order, when they differ
    shuffled = interaction_weights(["view", "view", "view"], [1 * DAY, 3 * DAY, 2 * DAY], params)
    np.testing.assert_allclose(shuffled, [0.5, 1.0, 0.5**0.5])
    # And time and position decay multiply
    both = interaction_weights(["like", "like"], [10 * DAY, 0.0], replace(params, half_life_days=10.0))
    np.testing.assert_allclose(both, [3.0, 3.0 * 0.5 * 0.5**0.5])
    # And None turns it off
    off = interaction_weights(["view"] * 3, [DAY] * 3, replace(params, half_life_events=None))
    np.testing.assert_allclose(off, [1.0, 1.0, 1.0])


def test_type_weights_and_half_life() -> None:
    params = ProfileParams(half_life_days=2.0, half_life_events=None)
    now = 1_000 * DAY
    types = ["view", "click", "add_to_cart", "like", "purchase", "dislike", "unknown"]
    weights = interaction_weights(types, [now] * len(types), params)
    assert weights.dtype == np.float64
    assert weights.tolist() == [1.0, 2.0, 3.0, 3.0, 5.0, -2.0, 0.0]
    half = interaction_weights(["purchase", "purchase"], [now, now - 2 * DAY], params)
    assert half[1] == pytest.approx(2.5)
    assert ProfileParams(half_life_days=None).decay_per_day == 0.0


def test_weights_are_relative_to_the_newest_event_and_safe_for_old_histories() -> None:
    # Given a history ten years old, and the same history shifted to today
    offsets = np.array([0.0, 3 * DAY, 40 * DAY, 3000 * DAY])
    types = ["like", "view", "purchase", "click"]
    old = interaction_weights(types, TEN_YEARS_AGO - offsets)
    today = interaction_weights(types, 1_764_000_000.0 - offsets)
    # Then the weights are finite, not all zero, and identical
    assert np.all(np.isfinite(old)) and old[0] == 3.0
    np.testing.assert_allclose(old, today)


def test_non_finite_timestamps_and_mismatched_lengths_raise() -> None:
    with pytest.raises(InvalidInputError):
        interaction_weights(["view"], [float("nan")])
    with pytest.raises(InvalidInputError):
        interaction_weights(["view", "like"], [1.0])
    assert interaction_weights([], []).shape == (0,)


def test_params_validation() -> None:
    with pytest.raises(InvalidInputError):
        ProfileParams(half_life_days=0.0)
    with pytest.raises(InvalidInputError):
        ProfileParams(max_history=0)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidInputError, match="half_life_events"):
            ProfileParams(half_life_events=bad)
    with pytest.raises(InvalidInputError):
        ProfileParams(type_weights={"view": float("inf")})
    for name in ("taste_half_life_days", "taste_half_life_events"):
        with pytest.raises(InvalidInputError, match=name):
            ProfileParams(**{name: 0.0})


def test_the_taste_weights_remember_longer_than_the_request_weights() -> None:
    # Given twenty events an hour apart, newest last
    params = ProfileParams()
    types, times = ["like"] * 20, [1_700_000_000.0 - 3600 * (19 - n) for n in range(20)]
    # When each is weighed for the request and for the taste
    request = interaction_weights(types, times, params)
    taste = interaction_weights(types, times, params.taste())
    # Then the taste halves every 10 events, with no time decay; the request every 3 events and 6.93 days
    assert params.taste().half_life_events == 10.0 and params.taste().half_life_days is None
    np.testing.assert_allclose(taste / taste[-1], 0.5 ** (np.arange(19, -1, -1) / 10.0))
    assert request[0] / request[-1] < taste[0] / taste[-1]


def test_user_vector_is_normalised_and_negative_types_subtract() -> None:
    rng = np.random.default_rng(0)
    x = _unit(rng, 3, 16)
    v = user_vector(x, np.array([3.0, 1.0, 0.0]))
    assert v is not None and v.dtype == np.float32 and v.shape == (16,)
    assert float(np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-6)
    expected = 3 * x[0] + x[1]
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected), atol=1e-6)
    with_dislike = user_vector(x, np.array([3.0, 0.0, -2.0]))
    liked_only = user_vector(x[:1], np.array([3.0]))
    assert with_dislike is not None and liked_only is not None
    assert float(with_dislike @ x[2]) < float(liked_only @ x[2])


def test_user_vector_none_when_the_sum_vanishes() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert user_vector(x, np.array([3.0, -3.0])) is None
    assert user_vector(x, np.zeros(2)) is None
    assert user_vector(np.zeros((0, 2), np.float32), np.zeros(0)) is None
    with pytest.raises(InvalidInputError):
        user_vector(x, np.ones(3))


def test_ten_year_old_history_gives_the_same_vector_as_today() -> None:
    rng = np.random.default_rng(1)
    x = _unit(rng, 6, 32)
    types = ["like", "view", "view", "purchase", "dislike", "click"]
    offsets = rng.uniform(0, 400 * DAY, size=6)
    old = user_vector(x, interaction_weights(types, TEN_YEARS_AGO - offsets))
    new = user_vector(x, interaction_weights(types, 1_764_000_000.0 - offsets))
    assert old is not None and new is not None and np.all(np.isfinite(old))
    np.testing.assert_allclose(old, new, atol=1e-6)


def test_recent_history_keeps_the_newest() -> None:
    events = [Interaction(f"i{n}", "view", float(n)) for n in range(10)]
    assert [e.item_id for e in recent_history(events, 3)] == ["i9", "i8", "i7"]


def test_recent_history_order_and_weights_do_not_depend_on_fetch_order() -> None:
    # Given: a view and a like of one item in the same second (no event ids), plus a rated view
    events = [
        Interaction("a", "view", 5.0), Interaction("a", "like", 5.0), Interaction("b", "view", 1.0, 4.0)
    ]
    weights = []
    for fetched in (events, events[::-1]):
        # When: the history comes back in either order
        recent = recent_history(fetched, 10)
        weights.append(interaction_weights([e.type for e in recent], [e.timestamp for e in recent]))
        # Then: the same order, so the same position weights
        assert [(e.item_id, e.type) for e in recent] == [("a", "view"), ("a", "like"), ("b", "view")]
    np.testing.assert_array_equal(weights[0], weights[1])


def test_equal_times_have_one_newer_event_the_larger_item_id() -> None:
    # Given three events in one second and an older one
    events = [Interaction("i2", "view", 5.0), Interaction("i9", "like", 5.0), Interaction("i5", "view", 5.0),
              Interaction("i1", "view", 1.0)]
    # Then the larger item id is the newer, as SLIST's sequences (equal times: the larger item position
    # first) and the evaluation's held-out event (tests/unit/test_evaluation.py) read it
    assert [e.item_id for e in recent_history(events, 10)] == ["i9", "i5", "i2", "i1"]
    assert max(events, key=event_order).item_id == "i9"


def _two_topics(rng: np.random.Generator, d: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.zeros(d), np.zeros(d)
    a[0], b[1] = 1.0, 1.0
    xa = a + 0.15 * rng.normal(size=(6, d))
    xb = b + 0.15 * rng.normal(size=(4, d))
    x = np.vstack([xa, xb]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), a, b


def test_coherent_history_gives_one_interest_equal_to_the_user_vector() -> None:
    rng = np.random.default_rng(2)
    x, _, _ = _two_topics(rng)
    w = np.ones(6)
    vectors, shares = interest_vectors(x[:6], w)
    assert vectors.shape == (1, x.shape[1]) and shares.tolist() == [1.0]
    single = user_vector(x[:6], w)
    assert single is not None
    np.testing.assert_allclose(vectors[0], single, atol=1e-6)


def test_diverse_history_splits_into_weighted_interests() -> None:
    rng = np.random.default_rng(3)
    x, a, b = _two_topics(rng)
    vectors, shares = interest_vectors(x, np.ones(10), max_interests=3)
    assert vectors.shape[0] == 2 and vectors.dtype == np.float32
    assert shares.sum() == pytest.approx(1.0)
    assert shares.tolist() == pytest.approx([0.6, 0.4])
    assert float(vectors[0] @ a) > 0.9 and float(vectors[1] @ b) > 0.9
    again = interest_vectors(x, np.ones(10), max_interests=3)
    np.testing.assert_array_equal(vectors, again[0])
    single, _ = interest_vectors(x, np.ones(10), max_interests=1)
    assert single.shape[0] == 1


def test_interest_vectors_empty_when_no_user_vector() -> None:
    x = np.eye(3, dtype=np.float32)
    vectors, shares = interest_vectors(x, np.zeros(3))
    assert vectors.shape == (0, 3) and shares.shape == (0,)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12), st.integers(1, 3))
def test_interest_vectors_are_unit_rows_with_shares_summing_to_one(seed: int, n: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    x = _unit(rng, n, 8)
    w = rng.uniform(-1, 5, size=n)
    vectors, shares = interest_vectors(x, w, max_interests=m)
    assert vectors.shape[0] == shares.shape[0] <= m
    if vectors.shape[0]:
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert shares.sum() == pytest.approx(1.0)
        assert np.all(np.isfinite(vectors))


def test_onboarding_text() -> None:
    text = onboarding_text(["  Sci-fi  movies", "sci-fi movies", "Animation"], ["relax"], " beginner ")
    assert text == "Interested in Sci-fi movies, Animation. Goals: relax. Experience: beginner."
    assert onboarding_text(["jazz"], [], None) == "Interested in jazz."
    with pytest.raises(InvalidInputError) as error:
        onboarding_text([], [], "expert")
    assert error.value.field == "interests"
    with pytest.raises(InvalidInputError):
        onboarding_text([1], [], None)  # type: ignore[list-item]


def test_profile_weight_fades_as_history_grows() -> None:
    h = np.array([1.0, 0.0], dtype=np.float32)
    p = np.array([0.0, 1.0], dtype=np.float32)
    early = blend_with_profile(h, p, n_events=1, profile_strength=3.0)
    late = blend_with_profile(h, p, n_events=300, profile_strength=3.0)
    assert early is not None and late is not None
    # w_p = 3 / (3 + 1) = 0.75
    np.testing.assert_allclose(early, np.array([1.0, 0.75]) / 1.25, atol=1e-6)
    assert float(late @ p) < 0.01 < float(early @ p)
    profile_only = blend_with_profile(None, 2 * p, 0)
    history_only = blend_with_profile(h, None, 0)
    assert profile_only is not None and history_only is not None
    np.testing.assert_allclose(profile_only, p)
    np.testing.assert_array_equal(history_only, h)
    assert blend_with_profile(None, None, 0) is None


def test_engagement_weighs_every_positive_type_one_and_keeps_the_rest() -> None:
    weights = {"view": 1.0, "like": 3.0, "purchase": 5.0, "dislike": -2.0, "x": 0.0}
    params = ProfileParams(type_weights=weights)
    assert dict(params.engagement().type_weights) == {
        "view": 1.0, "like": 1.0, "purchase": 1.0, "dislike": -2.0, "x": 0.0
    }
    assert replace(params.engagement(), type_weights=params.type_weights) == params  # nothing else changes
