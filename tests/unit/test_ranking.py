"""Ranking against the real VectorIndex on a seeded synthetic catalog (four topics), plus MMR."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embrec.domain import ranking
from embrec.domain.model import Filters, Interaction
from embrec.domain.profiles import ProfileParams, interaction_weights
from embrec.domain.ranking import (
    BlendWeights,
    RankParams,
    mmr,
    recommend,
    search,
    similar_items,
    trending,
)
from embrec.domain.signals import SignalParams, Signals, compute_signals
from embrec.engine.index import VectorIndex
from embrec.errors import InvalidInputError, NotFoundError

DAY = 86_400.0
NOW = 1_764_000_000.0
N_ITEMS = 240
DIM = 16
TOPIC_NAMES = ("jazz", "rock", "opera", "techno")


def _topic(n: int) -> int:
    return n % 4


def _item_id(n: int) -> str:
    return f"i{n:03d}"


@pytest.fixture(scope="module")
def catalog() -> VectorIndex:
    rng = np.random.default_rng(7)
    centres = np.eye(DIM)[:4]
    vectors = centres[[_topic(n) for n in range(N_ITEMS)]] + 0.2 * rng.normal(size=(N_ITEMS, DIM))
    metadata = [
        {
            "title": f"{TOPIC_NAMES[_topic(n)].title()} record {n}",
            "category": TOPIC_NAMES[_topic(n)],
            "tags": [f"decade-{n % 3}"],
            "price": float(n % 50),
            "available": n % 17 != 0,
            "created_at": NOW - n * DAY,
        }
        for n in range(N_ITEMS)
    ]
    return VectorIndex.build([_item_id(n) for n in range(N_ITEMS)], vectors, metadata)


@pytest.fixture(scope="module")
def signals() -> Signals:
    """Users stay inside one topic; topic 3 (techno) is hot this week, the rest is a month old."""
    rng = np.random.default_rng(11)
    events = []
    for u in range(80):
        topic = u % 4
        when = NOW - (DAY if topic == 3 else 30 * DAY)
        for j in range(10):
            n = int(rng.integers(0, N_ITEMS // 4)) * 4 + topic
            events.append((f"u{u}", Interaction(_item_id(n), "like", when + j * 60)))
    ids = [_item_id(n) for n in range(N_ITEMS)]
    return compute_signals(events, ids, SignalParams(neighbours=20), now=NOW)


def _history(items: Sequence[int], kind: str = "like", start: float = NOW - 3600) -> list[Interaction]:
    return [Interaction(_item_id(n), kind, start + i) for i, n in enumerate(items)]


def _topics_of(ids: Sequence[str]) -> list[int]:
    return [_topic(int(item_id[1:])) for item_id in ids]


# --------------------------------------------------------------------------- strategies


def test_personalized_follows_the_history_and_explains(catalog: VectorIndex, signals: Signals) -> None:
    history = _history([0, 4, 8, 12])  # jazz
    result = recommend(catalog, signals, history, None, RankParams(k=10, explain=True), NOW)
    assert result.strategy == "personalized"
    ids = [item.item_id for item in result.items]
    assert len(ids) == 10 and not set(ids) & {e.item_id for e in history}
    assert _topics_of(ids).count(0) >= 8
    titles = {catalog.metadata(e.item_id)["title"] for e in history}
    for item in result.items:
        assert item.reasons, item
        assert item.reasons[0].startswith(("Because you liked ", "People who liked "))
        assert any(title in reason for reason in item.reasons for title in titles)


def test_content_reason_names_the_most_similar_liked_item_not_the_heaviest(catalog: VectorIndex) -> None:
    # Given: a jazz candidate; the history's newest event (nearly all the weight) is a rock item that leans
    # slightly towards it, and two jazz items liked long ago carry almost none
    target = _item_id(16)
    vectors = catalog.vectors_for([target, *[_item_id(n) for n in range(1, N_ITEMS, 4)]])
    rock = _item_id(1 + 4 * int(np.argmax(vectors[1:] @ vectors[0])))  # the rock item most like the target
    known = [Interaction(rock, "like", NOW), *_history([0, 4], start=NOW - 100 * DAY)]
    weights = np.array([3.0, 1e-4, 1e-4])
    history_vectors = catalog.vectors_for([e.item_id for e in known]).astype(np.float64)
    pool = ranking._Pool([target], np.ones(1), np.zeros(1), np.zeros(1), {})
    # When
    reasons = ranking._personal_reasons(
        catalog, target, known, weights, history_vectors, weights > 0, pool, 1.0, 0.0, 0.0, False
    )
    # Then: the reason names the jazz item it resembles, not the rock item that weighs most
    assert reasons[0] in {f"Because you liked {catalog.metadata(_item_id(n))['title']}" for n in (0, 4)}


def test_verbs_follow_the_interaction_type(catalog: VectorIndex, signals: Signals) -> None:
    history = [Interaction(_item_id(1), "purchase", NOW - 10)]
    result = recommend(catalog, signals, history, None, RankParams(k=3, explain=True), NOW)
    assert any(r == "Because you bought Rock record 1" for item in result.items for r in item.reasons)


def test_onboarding_when_only_a_profile(catalog: VectorIndex, signals: Signals) -> None:
    profile = catalog.vectors_for([_item_id(2)])[0]  # opera-like
    params = RankParams(k=8, explain=True)
    result = recommend(catalog, signals, [], profile, params, NOW, profile_interests=["jazz", "opera arias"])
    assert result.strategy == "onboarding"
    assert _topics_of([item.item_id for item in result.items]).count(2) >= 6
    assert all(item.reasons[0] == "Matches your interest in opera arias" for item in result.items
               if _topic(int(item.item_id[1:])) == 2)


def test_unknown_history_falls_back_and_is_still_excluded(catalog: VectorIndex, signals: Signals) -> None:
    history = [Interaction("gone-from-catalog", "like", NOW)]
    result = recommend(catalog, signals, history, None, RankParams(k=5, explain=True), NOW)
    assert result.strategy == "trending"
    assert _topics_of([item.item_id for item in result.items]) == [3] * 5  # techno is hot
    assert all(item.reasons == ("Popular this week",) for item in result.items)
    seen = _history(range(3, 200, 4))  # all but a few techno items seen
    result = recommend(catalog, signals, [*history, *seen], None, RankParams(k=5, strategy="trending"), NOW)
    assert not {item.item_id for item in result.items} & {e.item_id for e in seen}


def test_only_dislikes_fall_back_to_trending(catalog: VectorIndex, signals: Signals) -> None:
    history = _history([5], kind="dislike")
    result = recommend(catalog, signals, history, None, RankParams(k=4), NOW)
    assert result.strategy == "trending" and _item_id(5) not in [i.item_id for i in result.items]


def test_short_history_blends_with_the_profile(catalog: VectorIndex, signals: Signals) -> None:
    profile = catalog.vectors_for([_item_id(2)])[0]  # opera
    one_jazz = _history([0])
    params = RankParams(k=20, weights=BlendWeights(embedding=1.0, cf=0.0, trending=0.0))
    blended = recommend(catalog, signals, one_jazz, profile, params, NOW)
    plain = recommend(catalog, signals, one_jazz, None, params, NOW)
    assert blended.strategy == plain.strategy == "personalized"
    opera_blended = _topics_of([i.item_id for i in blended.items]).count(2)
    assert opera_blended > _topics_of([i.item_id for i in plain.items]).count(2)


def test_multi_interest_history_retrieves_each_interest(catalog: VectorIndex, signals: Signals) -> None:
    history = _history([0, 4, 8, 12, 16, 20, 1, 5, 9, 13])  # 6 jazz, 4 rock
    params = RankParams(k=20, weights=BlendWeights(embedding=1.0, cf=0.0, trending=0.0))
    topics = _topics_of([i.item_id for i in recommend(catalog, signals, history, None, params, NOW).items])
    assert topics.count(0) >= 6 and topics.count(1) >= 4


def test_ten_year_old_history_ranks_like_the_same_history_today(catalog: VectorIndex) -> None:
    offsets = [0.0, 2 * DAY, 9 * DAY, 40 * DAY]
    items = [0, 1, 4, 8]
    old = [
        Interaction(_item_id(n), "like", NOW - 3650 * DAY - o) for n, o in zip(items, offsets, strict=True)
    ]
    new = [Interaction(_item_id(n), "like", NOW - o) for n, o in zip(items, offsets, strict=True)]
    empty = Signals.empty()
    params = RankParams(k=10)
    a = recommend(catalog, empty, old, None, params, NOW)
    b = recommend(catalog, empty, new, None, params, NOW)
    assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
    assert all(np.isfinite(i.score) for i in a.items)


def test_unavailable_items_excluded_unless_asked(catalog: VectorIndex, signals: Signals) -> None:
    history = _history([0, 4, 8])
    params = RankParams(k=100, weights=BlendWeights(embedding=1.0, cf=0.0, trending=0.0), candidate_pool=300)
    ids = [i.item_id for i in recommend(catalog, signals, history, None, params, NOW).items]
    assert all(catalog.metadata(item_id)["available"] for item_id in ids)
    with_unavailable = RankParams(k=100, candidate_pool=300, include_unavailable=True)
    ids = [i.item_id for i in recommend(catalog, signals, history, None, with_unavailable, NOW).items]
    assert not all(catalog.metadata(item_id)["available"] for item_id in ids)


def test_selective_filter_does_not_lose_recall(catalog: VectorIndex, signals: Signals) -> None:
    # Jazz lover, but asking for cheap opera from decade-1: a handful of items, far from the user vector.
    filters = Filters(categories=frozenset({"opera"}), tags_any=frozenset({"decade-1"}), max_price=20.0)
    expected = [
        _item_id(n) for n in range(N_ITEMS)
        if _topic(n) == 2 and n % 3 == 1 and n % 50 <= 20 and n % 17 != 0
    ]
    result = recommend(catalog, signals, _history([0, 4, 8]), None, RankParams(k=50, filters=filters), NOW)
    assert sorted(i.item_id for i in result.items) == sorted(expected)


def test_similar_search_trending(catalog: VectorIndex, signals: Signals) -> None:
    similar = similar_items(catalog, signals, _item_id(3), 5, explain=True)
    assert len(similar) == 5 and _item_id(3) not in [i.item_id for i in similar]
    assert _topics_of([i.item_id for i in similar]).count(3) >= 4
    cf_only = similar_items(catalog, signals, _item_id(3), 5, weights=BlendWeights(embedding=0.0, cf=1.0))
    assert _topics_of([i.item_id for i in cf_only]) == [3] * 5
    assert all("Techno record 3" in item.reasons[0] for item in similar)
    with pytest.raises(NotFoundError):
        similar_items(catalog, signals, "nope", 5)
    query = catalog.vectors_for([_item_id(6)])[0]
    hits = search(catalog, query, 3, Filters(categories=frozenset({"opera"})))
    assert hits[0].item_id == _item_id(6) and _topics_of([h.item_id for h in hits]) == [2, 2, 2]
    with pytest.raises(InvalidInputError):
        search(catalog, np.ones(3, np.float32), 3)
    top = trending(catalog, signals, 4, exclude={_item_id(3)})
    assert [s.score for s in top] == sorted((s.score for s in top), reverse=True)
    assert _item_id(3) not in [t.item_id for t in top]


def test_trending_without_activity_fills_with_the_newest(catalog: VectorIndex) -> None:
    items = trending(catalog, Signals.empty(), 3, Filters(categories=frozenset({"rock"})), explain=True)
    assert [i.item_id for i in items] == [_item_id(1), _item_id(5), _item_id(9)]
    assert items[0].reasons == ("New in the catalog",)



def test_index_changes_reach_the_cached_signal_alignment(signals: Signals) -> None:
    """The request path caches the signals re-keyed by index position; an upsert or delete between two
    requests (a warm container applying a delta) must be seen by the next one, CF and trending alike."""
    rng = np.random.default_rng(3)
    ids = [_item_id(n) for n in range(N_ITEMS)]
    index = VectorIndex.build(ids, rng.normal(size=(N_ITEMS, DIM)))
    first = trending(index, signals, 3)[0].item_id
    assert _topics_of([first]) == [3]
    index.delete([first])
    assert first not in [t.item_id for t in trending(index, signals, 20)]
    history = _history([3, 7, 11])
    cf = RankParams(k=20, weights=BlendWeights(embedding=0.0, cf=1.0, trending=0.0))
    assert first not in [r.item_id for r in recommend(index, signals, history, None, cf, NOW).items]
    index.upsert([first], rng.normal(size=(1, DIM)))  # back, at a new position
    assert trending(index, signals, 1)[0].item_id == first
    assert first in [r.item_id for r in recommend(index, signals, history, None, cf, NOW).items]

def test_params_validation() -> None:
    for bad in ({"k": 0}, {"k": 10_000}, {"diversity": 1.5}, {"strategy": "random"}):
        with pytest.raises(InvalidInputError):
            RankParams(**bad)
    with pytest.raises(InvalidInputError):
        BlendWeights(embedding=-1.0)


# --------------------------------------------------------------------------- properties

KINDS = ["view", "click", "like", "purchase", "dislike", "add_to_cart"]
FILTER_CHOICES = [
    None,
    Filters(categories=frozenset({"jazz", "rock"})),
    Filters(exclude_categories=frozenset({"techno"}), min_price=10.0),
    Filters(tags_any=frozenset({"decade-2"}), max_price=5.0),
    Filters(available=False),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.integers(0, N_ITEMS - 1), max_size=25),
    kinds=st.lists(st.sampled_from(KINDS), min_size=25, max_size=25),
    ages=st.lists(st.floats(0, 4000 * DAY), min_size=25, max_size=25),
    k=st.integers(1, 30),
    diversity=st.sampled_from([0.0, 0.3, 1.0]),
    filter_choice=st.integers(0, len(FILTER_CHOICES) - 1),
    with_profile=st.booleans(),
)
def test_recommend_properties(
    catalog: VectorIndex, signals: Signals, items: list[int], kinds: list[str], ages: list[float], k: int,
    diversity: float, filter_choice: int, with_profile: bool,
) -> None:
    history = [Interaction(_item_id(n), kinds[i], NOW - ages[i]) for i, n in enumerate(items)]
    filters = FILTER_CHOICES[filter_choice]
    profile = catalog.vectors_for([_item_id(7)])[0] if with_profile else None
    params = RankParams(k=k, filters=filters, diversity=diversity, explain=True)
    result = recommend(catalog, signals, history, profile, params, NOW)
    ids = [item.item_id for item in result.items]
    scores = [item.score for item in result.items]
    assert len(ids) <= k and len(set(ids)) == len(ids)
    assert not set(ids) & {e.item_id for e in history}
    assert all(catalog.matches(ids, params.effective_filters()))
    assert all(s1 >= s2 for s1, s2 in pairwise(scores))
    assert all(np.isfinite(scores))
    assert recommend(catalog, signals, list(reversed(history)), profile, params, NOW) == result
    if diversity == 0.0 and result.items:
        # ties broken by item id
        assert all((-a.score, a.item_id) < (-b.score, b.item_id) for a, b in pairwise(result.items))


# --------------------------------------------------------------------------- MMR


def test_mmr_lambda_one_is_the_relevance_order() -> None:
    rng = np.random.default_rng(3)
    relevance = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    assert mmr(rng.normal(size=(5, 4)), relevance, 5, 1.0) == [1, 3, 2, 0, 4]
    assert mmr(rng.normal(size=(5, 4)), relevance, 2, 1.0) == [1, 3]


def test_mmr_diversifies_away_from_duplicates() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    relevance = np.array([1.0, 0.95, 0.6])
    assert mmr(vectors, relevance, 2, 1.0) == [0, 1]
    assert mmr(vectors, relevance, 2, 0.5) == [0, 2]
    with pytest.raises(InvalidInputError):
        mmr(vectors, relevance, 2, 1.5)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.integers(0, 45), st.floats(0.0, 1.0))
def test_mmr_properties(seed: int, n: int, k: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 6))
    relevance = rng.uniform(size=n).round(2)  # ties on purpose
    picked = mmr(vectors, relevance, k, lam)
    assert len(picked) == min(k, n) and len(set(picked)) == len(picked)
    assert picked == mmr(vectors, relevance, k, lam)
    if picked:
        assert picked[0] == int(np.lexsort((np.arange(n), -relevance))[0])


def _topic_likes(seed: int, per_user: int) -> list[tuple[str, Interaction]]:
    """80 users, each liking ``per_user`` random items of one topic (user u: topic u % 4), a second apart."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, N_ITEMS // 4, size=(80, per_user)) * 4 + np.arange(80)[:, None] % 4
    return [
        (f"u{u}", Interaction(_item_id(int(picks[u, j])), "like", NOW - DAY + j))
        for u in range(80)
        for j in range(per_user)
    ]


@pytest.mark.parametrize("typed", [False, True])
def test_cf_sources_are_weighed_as_the_cf_model_read_its_rows(catalog: VectorIndex, typed: bool) -> None:
    # Given: SLIST over the fixture's users (each inside one topic), with engagement rows or typed rows, and
    # a history of a jazz item bought, then two rock items viewed just after it
    events = _topic_likes(seed=11, per_user=10)
    params = SignalParams(neighbours=20, ease_min_total_users=0, cf_type_weights=typed)
    signals = compute_signals(events, [_item_id(n) for n in range(N_ITEMS)], params, now=NOW)
    assert signals.params["cf_model_used"] == "slist"
    history = [
        Interaction(_item_id(0), "purchase", NOW - 90),
        Interaction(_item_id(1), "view", NOW - 60),
        Interaction(_item_id(5), "view", NOW - 30),
    ]
    # When: a CF-only request ranks
    cf_only = RankParams(k=5, weights=BlendWeights(embedding=0.0, cf=1.0, trending=0.0))
    top = recommend(catalog, signals, history, None, cf_only, NOW).items
    # Then: engagement rows follow the newest events (rock), typed rows the purchase's weight (x5, jazz)
    assert _topics_of([item.item_id for item in top[:3]]) == [0 if typed else 1] * 3


def test_the_whole_cf_matrix_scores_the_pool_as_the_model_scores_a_row(catalog: VectorIndex) -> None:
    # Given: SLIST over users who each stay inside one topic, each item's neighbour row cut to its best 2
    events = _topic_likes(seed=3, per_user=12)
    ids = [_item_id(n) for n in range(N_ITEMS)]
    signals = compute_signals(events, ids, SignalParams(neighbours=2, ease_min_total_users=0), now=NOW)
    matrix = signals.cf_matrix
    assert signals.params["cf_model_used"] == "slist" and matrix is not None
    history = _history([1, 5, 9, 13, 17, 21])  # six rock items, newest last
    # When: a CF-only request ranks with the whole matrix, and with the neighbour rows alone
    cf_only = RankParams(k=8, weights=BlendWeights(embedding=0.0, cf=1.0, trending=0.0))
    whole = recommend(catalog, signals, history, None, cf_only, NOW).items
    rows_only = recommend(catalog, replace(signals, cf_matrix=None), history, None, cf_only, NOW).items
    # Then: each item's score is, up to the pool's common scale, sum_i w_i B[i, j] over the six sources,
    # weighed by recency as the model read engagement rows
    weights = interaction_weights(
        [e.type for e in history[::-1]], [e.timestamp for e in history[::-1]], ProfileParams().engagement()
    )
    sources = matrix.rows[[signals.position(e.item_id) for e in history[::-1]]]
    expected = weights @ matrix.weights[sources].astype(np.float64)

    def defined(item_id: str) -> float:
        return float(expected[matrix.rows[signals.position(item_id)]])

    scale = defined(whole[0].item_id) / whole[0].score
    assert [item.score * scale for item in whole] == pytest.approx([defined(i.item_id) for i in whole])
    assert _topics_of([item.item_id for item in whole]) == [1] * 8
    # ... which the neighbour rows alone do not give: they miss what most sources add to most items
    missed = [defined(item.item_id) for item in rows_only]
    assert [item.score * scale for item in rows_only] != pytest.approx(missed)
