"""The learned blend: it learns a known relation, degrades to the weighted blend, round-trips, trains in the
rebuild from the users' own newest events, and ranks through ``recommend`` only when asked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embrec.app import build
from embrec.domain import learned_blend, ranking
from embrec.domain.learned_blend import FEATURES, Example, ItemStats, LearnedBlend, fit, holdout, item_stats
from embrec.domain.model import Interaction, StoredItem
from embrec.domain.ranking import RankParams, learning_example, recommend
from embrec.domain.signals import DEFAULT_TYPE_WEIGHTS, EventColumns, compute_signals, signals_from_events
from embrec.engine.index import VectorIndex
from embrec.errors import IntegrityError, InvalidInputError

NOW = 1_790_000_000.0
DAY = 86_400.0


def _stats(n: int = 10) -> ItemStats:
    return ItemStats(np.zeros(n, np.float32), np.full(n, np.nan))


def _lists(count: int, seed: int, signal: str = "last_similarity") -> list[Example]:
    """Lists of 20 candidates where the target is the candidate with the highest ``signal`` feature and the
    blend feature is noise: a model must learn to read ``signal``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = rng.uniform(0, 1, size=(20, len(FEATURES)))
        target = int(np.argmax(x[:, FEATURES.index(signal)] + 0.1 * rng.standard_normal(20)))
        out.append(Example(x, np.ones(20), target))
    return out


def _top1(model: LearnedBlend, lists: list[Example]) -> float:
    return float(np.mean([np.argmax(model.score(e.features, e.evidence)) == e.target for e in lists]))


def test_it_learns_which_feature_predicts_the_next_item() -> None:
    # Given training lists whose target is the candidate most similar to the user's last item
    model = fit(_lists(400, seed=1), _stats(), l2=0.05)
    assert model is not None and model.info["lists"] == 400 and model.info["loss"] < model.info["loss_blend"]
    # Then on fresh lists it finds the target far more often than the blend prior (chance: 1 in 20)
    prior = LearnedBlend(learned_blend.prior_weights(), model.mean, model.scale, _stats())
    fresh = _lists(300, seed=2)
    assert _top1(model, fresh) > 0.35 > 0.15 > _top1(prior, fresh)
    assert np.argmax(model.weights) == FEATURES.index("last_similarity")


def test_too_few_lists_give_no_model_and_a_strong_prior_keeps_the_blend_order() -> None:
    lists = _lists(learned_blend.MIN_LISTS, seed=3)
    # Given one list fewer than the threshold: no model (ranking keeps the weighted blend)
    assert fit(lists[:-1], _stats()) is None
    assert fit(lists, _stats()) is not None
    # Lists whose target is not in the pool do not count
    assert fit([*lists[:-1], replace(lists[-1], target=-1)], _stats()) is None
    # With a heavy pull to the prior the model orders every list as the blend feature does
    model = fit(_lists(learned_blend.MIN_LISTS, seed=3, signal="blend"), _stats(), l2=1e6)
    assert model is not None
    for example in lists[:20]:
        blend = example.features[:, FEATURES.index("blend")]
        assert list(np.argsort(-model.score(example.features, example.evidence))) == list(np.argsort(-blend))
    with pytest.raises(InvalidInputError, match="l2"):
        fit(lists, _stats(), l2=0)


def test_items_without_evidence_get_neutral_evidence_features() -> None:
    model = fit(_lists(300, seed=4, signal="cf_rank"), _stats())
    assert model is not None
    x = np.random.default_rng(5).uniform(0, 1, size=(5, len(FEATURES)))
    z = model.standardise(x, np.asarray([1.0, 1.0, 0.0, 0.5, 0.0]))
    for name in learned_blend.EVIDENCE_FEATURES:
        f = FEATURES.index(name)
        assert z[2, f] == z[4, f] == 0.0  # no evidence: the training mean
        assert z[3, f] == pytest.approx(0.5 * (x[3, f] - model.mean[f]) / model.scale[f])
    assert z[2, FEATURES.index("last_similarity")] != 0.0  # content features still count


def test_save_load_round_trip_and_refusals(tmp_path: Path) -> None:
    model = fit(_lists(250, seed=6), item_stats(4, np.asarray([0, 0, 2]), np.asarray([3.0, 1.0, 2.0])))
    assert model is not None
    # item 0: two events, the first at 1; item 2: one at 2; items 1 and 3: none
    assert model.stats.popularity == pytest.approx([np.log1p(2), 0, np.log1p(1), 0])
    first_seen = model.stats.first_seen
    assert first_seen[[0, 2]].tolist() == [1.0, 2.0] and np.isnan(first_seen[[1, 3]]).all()
    manifest = model.save(tmp_path / "r", "digest")
    assert manifest["input_sha256"] == "digest" and manifest["features"] == list(FEATURES)
    loaded = LearnedBlend.load(tmp_path / "r")
    assert loaded is not None
    x = np.random.default_rng(7).uniform(size=(9, len(FEATURES)))
    assert np.array_equal(loaded.score(x, np.ones(9)), model.score(x, np.ones(9)))
    assert LearnedBlend.load(tmp_path / "none") is None  # a version without a ranker
    data = (tmp_path / "r" / learned_blend.RANKER_FILE).read_bytes()
    (tmp_path / "r" / learned_blend.RANKER_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        LearnedBlend.load(tmp_path / "r")


# ----------------------------------------------------------------------------------------- with real signals


def _catalog(n: int = 40, dim: int = 16) -> tuple[list[str], np.ndarray]:
    ids = [f"item-{i:03d}" for i in range(n)]
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    return ids, vectors


def _events(ids: list[str], users: int, per_user: int = 4) -> list[tuple[str, Interaction]]:
    """Users walking the catalog in order: each user's next item is the one after their last."""
    rng = np.random.default_rng(1)
    out = []
    for u in range(users):
        start = int(rng.integers(0, len(ids) - per_user))
        for k in range(per_user):
            ts = NOW - DAY * (per_user - k) - u
            out.append((f"u{u:04d}", Interaction(ids[start + k], "view", ts, event_id=f"{u}-{k}")))
    return out


def test_holdout_holds_out_each_sampled_users_newest_event() -> None:
    ids, _ = _catalog()
    events = [*_events(ids, 30), ("short", Interaction(ids[0], "view", NOW - DAY))]
    columns = EventColumns(ids, DEFAULT_TYPE_WEIGHTS).extend(events)
    split = holdout(columns, max_users=20)
    # Then 20 of the 30 users with >= 3 events (never "short"), each held out at their newest event
    assert len(split.cases) == 20
    by_user: dict[str, list[Interaction]] = {}
    for user, event in events:
        by_user.setdefault(user, []).append(event)
    newest = {max(evs, key=lambda e: e.timestamp).item_id for user, evs in by_user.items() if len(evs) >= 3}
    for history, target, at in split.cases:
        assert target in newest and len(history) == 3 and target not in {e.item_id for e in history}
        assert all(e.timestamp < at and e.type == "view" for e in history)
    # and the training columns lack exactly the held-out events, while the input keeps every event
    assert sum(c[0].size for c in split.train_events.chunks) == 30 * 4 + 1 - 20
    assert sum(c[0].size for c in columns.chunks) == 30 * 4 + 1
    assert split.stats_full.popularity.sum() > split.stats_train.popularity.sum()
    # so signals from them are those of the events without the held-out ones, and of all events
    held = {(target, at) for _, target, at in split.cases}
    without = [(user, e) for user, e in events if (e.item_id, e.timestamp) not in held]
    from_train = signals_from_events(split.train_events, now=NOW)
    assert np.array_equal(from_train.cf_neighbours, compute_signals(without, ids, now=NOW).cf_neighbours)
    from_all = signals_from_events(columns, now=NOW)
    assert np.array_equal(from_all.cf_neighbours, compute_signals(events, ids, now=NOW).cf_neighbours)


def test_a_model_that_learned_nothing_ranks_as_the_weighted_blend() -> None:
    ids, vectors = _catalog()
    index = VectorIndex.build(ids, vectors, [{"title": i} for i in ids], encoder_id="e")
    train = _events(ids, 60)
    signals = compute_signals(train, ids, now=NOW)
    history = [event for user, event in train if user == "u0001"]
    stats = ItemStats(np.ones(len(ids), np.float32), np.full(len(ids), NOW - 30 * DAY))
    f = len(FEATURES)
    prior = LearnedBlend(learned_blend.prior_weights(), np.zeros(f), np.ones(f), stats)
    blend = recommend(index, signals, history, None, RankParams(k=10), NOW)
    learned = recommend(index, signals, history, None, RankParams(k=10, ranker=prior), NOW)
    assert [i.item_id for i in learned.items] == [i.item_id for i in blend.items]
    # learning_example: the pool's features with the held-out item's row
    target = blend.items[3].item_id
    example = learning_example(index, signals, stats, history, target, RankParams(), NOW)
    assert example is not None and example.features.shape[1] == len(FEATURES)
    assert learning_example(index, signals, stats, history, history[0].item_id, RankParams(), NOW) is None


def _stored(ids: list[str], vectors: np.ndarray) -> Iterator[StoredItem]:
    for item_id, vector in zip(ids, vectors, strict=True):
        yield StoredItem(item_id, {"item_id": item_id, "title": item_id}, "", vector)


def test_the_rebuild_trains_a_ranker_only_with_enough_users(tmp_path: Path) -> None:
    ids, vectors = _catalog()
    # Given fewer users than training lists need: no ranker, the version serves the weighted blend
    few = build.build_version(
        _stored(ids, vectors), _events(ids, learned_blend.MIN_LISTS - 1), tmp_path / "few", encoder_id="e",
        now=NOW,
    )
    assert "ranker" not in few.details and not (tmp_path / "few" / build.RANKER_DIR).exists()
    _, signals = build.load_version(tmp_path / "few")
    assert build.load_ranker(tmp_path / "few", signals) is None
    # When there are enough
    many = build.build_version(
        _stored(ids, vectors), _events(ids, 300), tmp_path / "many", encoder_id="e", now=NOW
    )
    # Then the version carries a ranker named in its manifest, loaded against the signals
    manifest = json.loads((tmp_path / "many" / build.RANKER_DIR / "manifest.json").read_text())
    assert many.details["ranker"]["info"]["lists"] == manifest["info"]["lists"] >= learned_blend.MIN_LISTS
    index, signals = build.load_version(tmp_path / "many")
    ranker = build.load_ranker(tmp_path / "many", signals)
    assert ranker is not None and len(ranker.stats) == len(signals)
    # and it learned what the blend alone misses here: the next item follows the last one
    history = [Interaction(ids[10], "view", NOW - 2 * DAY), Interaction(ids[11], "view", NOW - DAY)]
    learned = recommend(index, signals, history, None, RankParams(k=3, ranker=ranker), NOW)
    assert learned.items[0].item_id == ids[12]
    # and a ranker for other signals is refused
    with pytest.raises(IntegrityError):
        build.load_ranker(tmp_path / "many", compute_signals([], ids[:5]))


def test_fresh_items_keep_the_slots_the_weighted_blend_gives_them() -> None:
    # Given a pool of 8: the blend's order is 0..7; items 1, 4 and 5 are fresh (new and untouched), and the
    # model reverses the order of the others and would put the fresh ones last
    blend = np.linspace(1.0, 0.0, 8)
    fresh = np.zeros(8, dtype=bool)
    fresh[[1, 4, 5]] = True
    learned = np.where(fresh, -1.0, blend[::-1])
    # When the fresh items are put back
    out = learned_blend.keep_fresh_slots(learned, blend, fresh)
    # Then each fresh item has the rank the blend gives it, the others fill the rest in the model's order
    order = list(np.argsort(-out, kind="stable"))
    assert order == [7, 1, 6, 3, 4, 5, 2, 0]
    assert out.min() == 0.0 and out.max() == 1.0
    # a fresh item the blend puts first stays first, one it puts last stays last; ties go to the fresh one
    tied = learned_blend.keep_fresh_slots(np.asarray([0.2, 0.9, 0.5]), np.asarray([0.5, 0.5, 0.1]),
                                          np.asarray([True, False, False]))
    assert list(np.argsort(-tied)) == [0, 1, 2]
    last = learned_blend.keep_fresh_slots(np.asarray([0.9, 0.2, 0.5]), np.asarray([0.1, 0.5, 0.4]),
                                          np.asarray([True, False, False]))
    assert list(np.argsort(-last)) == [2, 1, 0]
    # No fresh item: the model's scores as they are; every item fresh: the blend's order
    np.testing.assert_array_equal(learned_blend.keep_fresh_slots(learned, blend, np.zeros(8, dtype=bool)),
                                  learned)
    everything = learned_blend.keep_fresh_slots(learned, blend, np.ones(8, dtype=bool))
    assert list(np.argsort(-everything)) == list(range(8))


def test_a_model_that_sinks_new_items_leaves_them_where_the_weighted_blend_ranks_them() -> None:
    # Given a catalog whose last 10 items the rebuild did not know (new, untouched), and a model that reads
    # only CF and popularity (a new item has neither)
    ids, vectors = _catalog()
    index = VectorIndex.build(ids, vectors, [{"title": i} for i in ids], encoder_id="e")
    train = [(user, event) for user, event in _events(ids, 60) if event.item_id in ids[:30]]
    signals = compute_signals(train, ids[:30], now=NOW)
    history = [event for user, event in train if user == "u0001"]
    stats = ItemStats(np.ones(30, np.float32), np.full(30, NOW - 30 * DAY))
    weights = np.zeros(len(FEATURES))
    weights[FEATURES.index("cf")] = weights[FEATURES.index("popularity")] = 5.0
    f = len(FEATURES)
    sinker = LearnedBlend(weights, np.zeros(f), np.ones(f), stats)
    params = RankParams(k=20, candidate_pool=40)
    blend = [i.item_id for i in recommend(index, signals, history, None, params, NOW).items]
    learned = [i.item_id for i in recommend(index, signals, history, None, replace(params, ranker=sinker),
                                            NOW).items]
    new = set(ids[30:])
    assert new & set(blend[:10])
    # Then every new item holds the blend's place, and the model orders the others
    slots = [(k, i) for k, i in enumerate(learned) if i in new]
    assert slots == [(k, i) for k, i in enumerate(blend) if i in new]
    assert [i for i in learned if i not in new] != [i for i in blend if i not in new]
    # and the training lists leave the new items out: not the model's to rank
    known = next(i for i in blend if i not in new)
    example = learning_example(index, signals, stats, history, known, RankParams(), NOW)
    pool = ranking._personal_pool(index, signals, ranking._request(index, history, RankParams(), NOW), None,
                                  RankParams())
    assert example is not None and pool is not None and pool[0].fresh is not None
    assert example.features.shape[0] == int(np.count_nonzero(~pool[0].fresh)) < len(pool[0].ids)
    fresh_ids = [i for i, is_new in zip(pool[0].ids, pool[0].fresh, strict=True) if is_new]
    assert learning_example(index, signals, stats, history, fresh_ids[0], RankParams(), NOW) is None
