"""Coverage-aware blending: items CF/trending have no evidence about are ranked on the signals that cover
them; ``Signals.interacted`` says which items the signals saw; CF reasons name the most similar source."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embrec.domain import ranking
from embrec.domain.model import Interaction
from embrec.domain.profiles import ProfileParams
from embrec.domain.ranking import BlendWeights, RankParams, recommend
from embrec.domain.signals import SIGNALS_FILE, SignalParams, Signals, compute_signals
from embrec.engine.index import VectorIndex
from embrec.manifest import describe_files

DAY = 86_400.0
NOW = 1_764_000_000.0
DIM = 8


def _pool(embedding: list[float], cf: list[float], covered: list[bool]) -> ranking._Pool:
    n = len(embedding)
    cov = np.asarray(covered, dtype=bool)
    return ranking._Pool(
        [f"i{j}" for j in range(n)], np.asarray(embedding, float), np.asarray(cf, float), np.zeros(n), {},
        np.ones(n, dtype=bool), cov, cov,
    )


def test_blend_divides_by_the_weights_of_the_covering_signals() -> None:
    # Given: i0 is covered by every signal and best on each; i1 is uncovered (new) with the best embedding;
    # i2 is covered, as good as i1 on embedding, but has no CF relation to the user (a real 0); i3 is the
    # embedding minimum.
    pool = _pool([1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.5], [True, False, True, True])
    weights = BlendWeights(embedding=0.5, cf=1.0, trending=0.2)
    # When
    relevance, e, c, t = ranking._blend(pool, weights)
    # Then: the new item is not dragged down by the CF term it cannot have, the covered zero still counts
    np.testing.assert_allclose(relevance, e + c + t)
    full = weights.embedding + weights.cf + weights.trending
    assert relevance[0] == pytest.approx((0.5 + 1.0) / full)  # trending is constant: min-max 0
    assert relevance[1] == pytest.approx(1.0)
    assert relevance[2] == pytest.approx(0.5 / full)
    assert relevance[1] > relevance[0] > relevance[2]


def test_blend_without_coverage_information_is_the_plain_weighted_sum() -> None:
    pool = _pool([0.2, 0.9], [0.4, 0.1], [True, True])
    pool.embedding_covered = pool.cf_covered = pool.trending_covered = None
    relevance, *_ = ranking._blend(pool, BlendWeights(embedding=1.0, cf=2.0, trending=0.0))
    np.testing.assert_allclose(relevance, [0.0 + 2.0 * 1.0, 1.0 + 2.0 * 0.25])


_CENTRES = np.eye(DIM)[:2]  # genre a, genre b


def _genre_items(rng: np.random.Generator, per_genre: int) -> tuple[list[str], np.ndarray]:
    """Ids ``a0..`` then ``b0..`` and their vectors: ``per_genre`` items around each genre's centre."""
    ids = [f"{genre}{j}" for genre in "ab" for j in range(per_genre)]
    return ids, np.vstack([centre + 0.3 * rng.normal(size=(per_genre, DIM)) for centre in _CENTRES])


def _genre_likes(rng: np.random.Generator, per_genre: int, per_user: int) -> list[tuple[str, Interaction]]:
    """40 users co-liking within a genre (u0-u19 genre a, u20-u39 genre b): ``per_user`` of its items each,
    a second apart, ten days before ``NOW``."""
    return [
        (f"u{u}", Interaction(f"{'a' if u < 20 else 'b'}{j}", "like", NOW - 10 * DAY + n))
        for u in range(40)
        for n, j in enumerate(rng.choice(per_genre, size=per_user, replace=False))
    ]


def _world(
    new_in_signals: bool, new_created_at: float | None = None
) -> tuple[VectorIndex, Signals]:
    """Two genres; users co-like within a genre. ``new-a`` (genre a, closest to the genre centre) has no
    events; ``sour-a`` (genre a) was only disliked. ``new_in_signals``: the rebuild already knew ``new-a``
    (False: it was added since)."""
    rng = np.random.default_rng(3)
    warm_ids, warm = _genre_items(rng, 20)
    ids = [*warm_ids, "new-a", "sour-a"]
    vectors = np.vstack([
        warm,
        _CENTRES[0] + 0.01 * rng.normal(size=(1, DIM)),
        _CENTRES[0] + 0.3 * rng.normal(size=(1, DIM)),
    ])
    metadata = [
        {"title": item_id.upper(), "created_at": new_created_at if item_id == "new-a" else NOW - 400 * DAY}
        for item_id in ids
    ]
    index = VectorIndex.build(ids, vectors, metadata)
    events = [*_genre_likes(rng, 20, 6), ("u0", Interaction("sour-a", "dislike", NOW - 5 * DAY))]
    known = ids if new_in_signals else [item_id for item_id in ids if item_id != "new-a"]
    return index, compute_signals(events, known, SignalParams(neighbours=10), now=NOW)


@pytest.fixture(scope="module")
def world() -> tuple[VectorIndex, Signals]:
    return _world(new_in_signals=False)


def test_interacted_counts_any_event_type(world: tuple[VectorIndex, Signals]) -> None:
    _, signals = world
    mask = signals.interacted_mask()
    seen = {item_id for item_id, flag in zip(signals.item_ids, mask, strict=True) if flag}
    assert "new-a" not in seen and "sour-a" in seen  # a dislike is evidence, no event is none
    assert not signals.neighbours("sour-a")  # ... though only positive events feed CF


def test_interacted_round_trips_and_older_files_fall_back(world: tuple[VectorIndex, Signals],
                                                          tmp_path: Path) -> None:
    _, signals = world
    signals.save(tmp_path / "new")
    loaded = Signals.load(tmp_path / "new")
    np.testing.assert_array_equal(loaded.interacted_mask(), signals.interacted_mask())
    # A file written before ``interacted`` existed: items with a CF row or trending > 0 count as seen.
    with np.load(tmp_path / "new" / SIGNALS_FILE, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != "interacted"}
    (tmp_path / "old").mkdir()
    np.savez(tmp_path / "old" / SIGNALS_FILE, **arrays)
    old = Signals.load(tmp_path / "old", describe_files(tmp_path / "old", [SIGNALS_FILE]))
    assert old.interacted is None
    expected = (signals.cf_neighbours[:, 0] >= 0) | (signals.trending > 0)
    np.testing.assert_array_equal(old.interacted_mask(), expected)


def test_a_new_item_is_not_buried_under_warm_items(world: tuple[VectorIndex, Signals]) -> None:
    # Given: a genre-a history; the item nearest to it has no events at all (added since the rebuild)
    index, signals = world
    history = [Interaction(f"a{j}", "like", NOW - 3600 + j) for j in range(5)]
    params = RankParams(k=5, weights=BlendWeights(embedding=0.5, cf=1.0, trending=0.2))
    # When
    ids = [item.item_id for item in recommend(index, signals, history, None, params, NOW).items]
    # Then: it reaches the top of the list, and the rest stays in the genre
    assert ids[0] == "new-a"
    assert all(item_id.endswith("-a") or item_id.startswith("a") for item_id in ids)
    # CF alone still cannot recommend it (no CF row), embedding alone ranks it first too
    cf_only = RankParams(k=5, weights=BlendWeights(embedding=0.0, cf=1.0, trending=0.0))
    assert "new-a" not in [i.item_id for i in recommend(index, signals, history, None, cf_only, NOW).items]


@pytest.mark.parametrize(
    ("created_days_ago", "is_first"), [(None, False), (400.0, False), (29.0, True), (0.0, True)]
)
def test_an_untouched_item_the_rebuild_knew_is_new_only_by_its_created_at(
    created_days_ago: float | None, is_first: bool
) -> None:
    # Given: the rebuild knew new-a, and nearly every other item has events (its silence says a lot)
    created_at = None if created_days_ago is None else NOW - created_days_ago * DAY
    index, signals = _world(new_in_signals=True, new_created_at=created_at)
    history = [Interaction(f"a{j}", "like", NOW - 3600 + j) for j in range(5)]
    params = RankParams(k=5, weights=BlendWeights(embedding=0.5, cf=1.0, trending=0.2), new_item_days=30)
    # When
    ids = [item.item_id for item in recommend(index, signals, history, None, params, NOW).items]
    # Then: created within new_item_days it leads on content; older (or undated) it carries its CF 0
    assert (ids[0] == "new-a") is is_first
    assert ("new-a" in ids) is is_first


def test_on_a_young_catalog_silence_says_little_and_content_leads() -> None:
    # Given: the rebuild knew every item, but only 3 of 42 have events (a new deployment)
    index, _ = _world(new_in_signals=True)
    ids = index.live_ids()
    events = [(f"u{u}", Interaction(f"a{j}", "like", NOW - DAY + u)) for u in range(6) for j in range(3)]
    signals = compute_signals(events, ids, SignalParams(neighbours=10), now=NOW)
    history = [Interaction("a0", "like", NOW - 3600), Interaction("a1", "like", NOW - 3500)]
    # (both history items weigh the same: no position decay, so "nearest to the history" is to their mean)
    params = RankParams(
        k=5, weights=BlendWeights(embedding=0.5, cf=1.0, trending=0.2),
        profile=ProfileParams(half_life_events=None),
    )
    # When
    got = [item.item_id for item in recommend(index, signals, history, None, params, NOW).items]
    # Then: the one item co-liked with the history leads, and untouched items follow on content: new-a, the
    # second nearest to the history, is third (on a mature catalog it would not make the list: test above)
    assert got[0] == "a2" and "new-a" in got[1:3]
    assert all(item_id.endswith("-a") or item_id.startswith("a") for item_id in got)


def test_cf_reason_names_the_most_similar_history_item(world: tuple[VectorIndex, Signals]) -> None:
    # Given: a history whose newest event carries most of the (recency-decayed) weight
    index, signals = world
    history = [Interaction(f"a{j}", "like", NOW - (30 - 7 * j) * DAY) for j in range(5)]
    params = RankParams(k=10, explain=True)
    # When
    items = recommend(index, signals, history, None, params, NOW).items
    # Then: each "People who liked X" names the history item with the highest CF similarity to that item
    named = 0
    titles = {e.item_id: str(index.metadata(e.item_id)["title"]) for e in history}
    for item in items:
        for reason in item.reasons:
            if reason.startswith("People who liked "):
                sims = {src: dict(signals.neighbours(src)).get(item.item_id, 0.0) for src in titles}
                source = next(src for src, title in titles.items() if f"liked {title} " in reason)
                assert sims[source] == max(sims.values()) > 0
                named += 1
    assert named > 0


def test_a_dislike_only_item_changes_the_signals_digest() -> None:
    # The digest stands for the saved signals (a rebuild with an equal digest is skipped), and
    # ``interacted`` is saved: an event that only flips it must change the digest.
    ids = ["a", "b", "c"]
    events = [("u1", Interaction("a", "like", NOW)), ("u1", Interaction("b", "like", NOW + 1))]
    before = compute_signals(events, ids, now=NOW + 10)
    after = compute_signals([*events, ("u2", Interaction("c", "dislike", NOW + 2))], ids, now=NOW + 10)
    assert not before.interacted_mask()[2] and after.interacted_mask()[2]
    assert before.params["input_sha256"] != after.params["input_sha256"]


def _taste_world() -> tuple[VectorIndex, Signals]:
    """Two genres of 30 warm items each (users co-like within a genre) and one new item per genre, added since
    the rebuild and nearest its genre's centre."""
    rng = np.random.default_rng(5)
    warm_ids, warm = _genre_items(rng, 30)
    ids = [*warm_ids, "new-a", "new-b"]
    vectors = np.vstack([warm, _CENTRES + 0.01 * rng.normal(size=(2, DIM))])
    index = VectorIndex.build(ids, vectors, [{"created_at": NOW - 400 * DAY} for _ in ids])
    events = _genre_likes(rng, 30, 8)
    return index, compute_signals(events, warm_ids, SignalParams(neighbours=10), now=NOW)


def test_a_new_item_meets_the_users_taste_and_warm_items_keep_their_scores() -> None:
    # Given: a long run of genre-a likes, then four genre-b likes (the newest), all within the hour
    index, signals = _taste_world()
    history = [Interaction(f"a{j}", "like", NOW - 3600 + j) for j in range(20)]
    history += [Interaction(f"b{j}", "like", NOW - 600 + j) for j in range(4)]
    default = ProfileParams()
    taste_is_request = replace(
        default, taste_half_life_events=default.half_life_events, taste_half_life_days=default.half_life_days
    )

    def ranked(profile: ProfileParams) -> dict[str, float]:
        params = RankParams(k=50, profile=replace(profile, max_interests=1))
        return {i.item_id: i.score for i in recommend(index, signals, history, None, params, NOW).items}

    # When the new items are ranked against the taste (10 events, no time decay), then against the request's
    # own weights (4 events: the genre-b likes lead)
    taste, recent = ranked(ProfileParams()), ranked(taste_is_request)
    # Then the taste puts the genre of twenty likes first among the new items, the request's weights the genre
    # of the last four
    assert taste["new-a"] > taste["new-b"] and recent["new-b"] > recent["new-a"]
    # ... and every warm item keeps its score (content, CF and trending as before)
    warm = (set(taste) & set(recent)) - {"new-a", "new-b"}
    assert len(warm) >= 20
    assert all(taste[item_id] == pytest.approx(recent[item_id]) for item_id in warm)


def test_the_new_items_are_listed_without_a_pass_over_every_position() -> None:
    # Given: items the rebuild knew (dated, undated, touched), items added after it, one of each deleted
    rng = np.random.default_rng(4)
    ids = [f"k{j}" for j in range(30)] + [f"later{j}" for j in range(6)]
    created = [None if j % 4 == 0 else NOW - j * DAY for j in range(36)]
    metadata = [
        {"title": i} | ({"created_at": c} if c is not None else {}) for i, c in zip(ids, created, strict=True)
    ]
    index = VectorIndex.build(ids, rng.standard_normal((36, DIM)).astype(np.float32), metadata)
    events = [(f"u{u}", Interaction(f"k{j}", "view", NOW - DAY)) for u in range(3) for j in range(0, 30, 3)]
    signals = compute_signals(events, ids[:30], SignalParams(neighbours=5), now=NOW)
    index.delete(["k5", "later2"])
    aligned = ranking._aligned(index, signals)
    live = index.allowed_mask(None)
    # When / Then: for any new_since, the listed positions are exactly the live ones untouched_new holds for
    for new_since in (-np.inf, NOW - 40 * DAY, NOW - 10 * DAY, NOW - 7 * DAY, NOW + DAY, np.inf):
        listed = aligned.untouched_new_positions(new_since)
        expected = np.flatnonzero(aligned.untouched_new(slice(None), new_since) & live)
        assert sorted(listed.tolist()) == expected.tolist() and len(set(listed.tolist())) == listed.size
        assert aligned.may_hold_new(new_since) is bool(listed.size)
