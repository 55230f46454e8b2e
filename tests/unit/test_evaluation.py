"""Offline evaluation: metrics on hand-computed cases, leak-free protocol splits, an end-to-end run."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from embrec.config import DEFAULT_HISTORY_LIMIT, Settings, get_settings
from embrec.domain.learned_blend import fit
from embrec.domain.model import Interaction
from embrec.domain.profiles import ProfileParams, event_order, recent_history
from embrec.domain.ranking import BlendWeights, RankParams
from embrec.domain.signals import SignalParams, compute_signals
from embrec.engine.encoder import TextEncoder
from embrec.engine.index import VectorIndex
from embrec_tools import evaluation
from embrec_tools.cli import build_parser, main
from embrec_tools.datasets import Dataset, load_movielens
from embrec_tools.evaluation import (
    EVAL_STRATEGIES,
    METRICS,
    Split,
    build_index,
    coverage,
    encode_catalog,
    evaluate,
    hit_rate,
    intra_list_diversity,
    item_cold_start,
    leave_last_out,
    load_dataset,
    markdown_table,
    ndcg,
    novelty,
    paired_difference,
    paired_table,
    recall,
    reciprocal_rank,
    sample_cases,
    strategy_params,
    train_learned_blend,
    tune,
    validation_split,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _ev(user: str, item: str, ts: float, kind: str = "like") -> tuple[str, Interaction]:
    return user, Interaction(item, kind, ts, event_id=f"{user}:{item}")


# --------------------------------------------------------------------------- metrics


def test_hit_rate_and_recall() -> None:
    ranked = ["a", "b", "c", "d"]
    assert hit_rate(ranked, {"c"}, 3) == 1.0
    assert hit_rate(ranked, {"d"}, 3) == 0.0
    assert recall(ranked, {"a", "d", "z"}, 2) == pytest.approx(1 / 3)
    assert recall(ranked, {"a", "d", "z"}, 4) == pytest.approx(2 / 3)
    assert recall(ranked, set(), 4) == 0.0


def test_ndcg_hand_computed() -> None:
    # one relevant item at rank 3: 1/log2(4) = 0.5
    assert ndcg(["a", "b", "c"], {"c"}, 10) == pytest.approx(0.5)
    assert ndcg(["c", "a"], {"c"}, 10) == pytest.approx(1.0)
    # two relevant at ranks 1 and 3: (1 + 0.5) / (1 + 1/log2(3))
    assert ndcg(["a", "b", "c"], {"a", "c"}, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg(["a", "b", "c"], {"c"}, 2) == 0.0


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(["a", "b", "c", "d"], {"d", "c"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["a"], {"z"}) == 0.0


def test_coverage_counts_distinct_items_in_top_k() -> None:
    lists = [["a", "b", "x"], ["b", "c", "y"]]
    assert coverage(lists, 10, 2) == pytest.approx(3 / 10)
    assert coverage([], 0, 10) == 0.0


def test_intra_list_diversity() -> None:
    same = np.array([[1.0, 0.0], [2.0, 0.0]])
    orthogonal = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert intra_list_diversity(same) == pytest.approx(0.0)
    # pairs: (0,1) 1, (0,2) 1, (1,2) 0 -> mean distance 2/3
    assert intra_list_diversity(orthogonal) == pytest.approx(2 / 3)
    assert intra_list_diversity(np.ones((1, 2))) == 0.0


def test_novelty_is_mean_self_information() -> None:
    popularity = {"a": 3, "b": 0}
    # p(a) = 4/8, p(b) = 1/8 -> (1 + 3) / 2 = 2 bits
    assert novelty(["a", "b"], popularity, 7, 10) == pytest.approx(2.0)
    assert novelty([], popularity, 7, 10) == 0.0


# --------------------------------------------------------------------------- protocols


def test_leave_last_out_holds_out_the_newest_event_with_a_fixed_tie_break() -> None:
    events = [
        _ev("u1", "i1", 1), _ev("u1", "i2", 2), _ev("u1", "i4", 3), _ev("u1", "i3", 3),  # tie at t=3
        _ev("u2", "i1", 5), _ev("u2", "i2", 6),  # only two events: all training
        _ev("u3", "i5", 1), _ev("u3", "i6", 2), _ev("u3", "i7", 9),
    ]
    split = leave_last_out(events)
    again = leave_last_out(list(reversed(events)))
    assert split.cases == again.cases
    by_user = {case.user_id: case for case in split.cases}
    assert set(by_user) == {"u1", "u3"}
    assert by_user["u1"].targets == {"i4"}  # equal timestamps: the larger item id counts as later
    # the profile's rule for the newer event (profiles.event_order): the one held out is the newest it sees
    u1 = [e for u, e in events if u == "u1"]
    assert {max(u1, key=event_order).item_id} == by_user["u1"].targets
    assert [e.item_id for e in recent_history(by_user["u1"].history, 10)] == ["i3", "i2", "i1"]
    assert by_user["u1"].now == 3
    assert [e.item_id for e in by_user["u1"].history] == ["i1", "i2", "i3"]
    assert by_user["u3"].targets == {"i7"}
    train = {(u, e.item_id) for u, e in split.train}
    for case in split.cases:
        for target in case.targets:
            assert (case.user_id, target) not in train
            assert target not in {e.item_id for e in case.history}
            assert all(e.timestamp <= case.now for e in case.history)
    assert ("u2", "i1") in train and ("u2", "i2") in train
    assert len(split.train) == len(events) - 2


def test_a_test_user_sees_the_newest_history_limit_events_as_a_request_reads_them() -> None:
    # Given a user with more events than a request reads (EMBREC_HISTORY_LIMIT's default)
    assert Settings().history_limit == DEFAULT_HISTORY_LIMIT
    n = DEFAULT_HISTORY_LIMIT + 7
    events = [_ev("heavy", f"i{t:04d}", float(t)) for t in range(n)]
    # When both protocols split them
    split = leave_last_out(events)
    (case,) = split.cases
    # Then the ranking sees (and excludes) the newest DEFAULT_HISTORY_LIMIT before the held-out one, while
    # CF trains on all of them
    assert [e.item_id for e in case.history] == [f"i{t:04d}" for t in range(7 - 1, n - 1)]
    assert len(split.train) == n - 1
    cold = item_cold_start([*events, _ev("other", "i0000", 0.5)], fraction=0.01)
    (cold_case,) = [c for c in cold.cases if c.user_id == "heavy"]
    warm = n - cold.info["cold_items"]
    newest_warm = [f"i{t:04d}" for t in range(warm - DEFAULT_HISTORY_LIMIT, warm)]
    assert [e.item_id for e in cold_case.history] == newest_warm


def test_the_eval_index_takes_the_rebuilds_layout_one_stray_image_fuses_nothing() -> None:
    # Given 10 items of which one carries an image vector (below the rebuild's minimum share)
    rows = [{"item_id": f"i{n}", "title": f"item {n}"} for n in range(10)]
    rows[3]["image_embedding"] = [0.5] * 8
    vectors = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    dataset = Dataset("stray-image", rows, [])
    # When the evaluation builds its index, Then it is the plain text layout, as the rebuild's would be
    index = build_index(dataset, [r["item_id"] for r in rows], vectors, "enc")
    assert index.fusion is None and index.dim == 16
    # and with most items carrying one, both fuse
    for row in rows[:6]:
        row["image_embedding"] = [0.5] * 8
    fused = build_index(dataset, [r["item_id"] for r in rows], vectors, "enc")
    assert fused.fusion is not None and fused.fusion["image_dim"] == 8


def test_item_cold_start_withholds_the_newest_items_from_all_training() -> None:
    events = [_ev(f"u{u}", f"i{i:02d}", 100 * i + u) for i in range(20) for u in range(3) if (i + u) % 2 == 0]
    events += [_ev("u9", "i19", 5.0), _ev("u9", "i00", 1.0)]  # a later item seen early by one user
    split = item_cold_start(events, fraction=0.1)
    first_seen: dict[str, float] = {}
    for _, e in events:
        first_seen[e.item_id] = min(first_seen.get(e.item_id, math.inf), e.timestamp)
    cold = set(sorted(first_seen, key=lambda i: (-first_seen[i], i))[:2])
    assert split.info["cold_items"] == 2
    assert "i19" not in cold  # first interaction time, not the last one
    assert not {e.item_id for _, e in split.train} & cold
    assert split.cases
    for case in split.cases:
        assert case.targets <= cold
        assert not {e.item_id for e in case.history} & cold


def test_the_cold_start_validation_split_is_carved_from_training_only() -> None:
    # Given: an item cold-start split of 40 items, each first seen a step later than the one before
    events = [_ev(f"u{u}", f"i{i:02d}", 100 * i + u) for i in range(40) for u in range(4) if (i + u) % 3]
    test = item_cold_start(events, fraction=0.1)
    # When: the validation split is carved from it
    validation = validation_split(test)
    # Then: the same protocol over the training interactions: its new items are the newest *training* items,
    # the test's new items appear nowhere in it, and no test (user, item) pair is a validation target
    assert validation.protocol == "item-cold-start" and validation.info["fraction"] == test.info["fraction"]
    assert validation.new_items == item_cold_start(test.train, fraction=0.1).new_items
    assert not validation.new_items & test.new_items and validation.cases
    assert not {e.item_id for _, e in validation.train} & (test.new_items | validation.new_items)
    test_pairs = {(c.user_id, t) for c in test.cases for t in c.targets}
    assert not {(c.user_id, t) for c in validation.cases for t in c.targets} & test_pairs
    for case in validation.cases:
        assert not {e.item_id for e in case.history} & (test.new_items | validation.new_items)
    # leave-last-out's validation is each user's last training event, as before
    llo = leave_last_out(events)
    assert validation_split(llo).cases == leave_last_out(llo.train).cases


def test_replay_serves_trending_as_a_rebuild_at_each_request_time() -> None:
    # Given: three users' events over 60 days on a small catalog, and an index over it
    day = 86_400.0
    train = [
        _ev(f"u{u}", f"i{(u * 7 + n) % 12}", (u * 5 + n * 3) * day, "like" if n % 3 else "view")
        for u in range(3) for n in range(12)
    ]
    ids = [f"i{j}" for j in range(12)]
    index = VectorIndex.build(ids, np.eye(12, dtype=np.float32), [{} for _ in ids])
    split = Split("leave-last-out", train, [])
    params = SignalParams(trending_window_days=10.0, trending_half_life_days=2.0)
    replay = split.replay(index, params)
    for now in (0.0, 17.5 * day, 33 * day, 90 * day):
        # When: the signals a request at `now` is served
        served = replay.at(now)
        # Then: trending is a rebuild's at `now` over the events up to `now`; CF is the whole run's
        rebuilt = compute_signals([e for e in train if e[1].timestamp <= now], ids, params, now=now)
        np.testing.assert_allclose(served.trending, rebuilt.trending, rtol=1e-6)
        assert served.cf_neighbours is replay.signals.cf_neighbours
    assert replay.at(90 * day).trending.sum() == 0.0  # the window has passed every event
    assert replay.at(17.5 * day).trending.sum() > 0.0


def test_replay_gives_the_cf_solve_the_index_vectors_of_the_items_the_rebuild_knew() -> None:
    # Given: 40 users over 12 items, an index over those and two new items, and SLIST with side information
    train = [_ev(f"u{u}", f"i{(u * 5 + n) % 12}", float(n)) for u in range(40) for n in range(5)]
    ids = [f"i{j}" for j in range(12)] + ["new0", "new1"]
    vectors = np.random.default_rng(0).standard_normal((14, 8)).astype(np.float32)
    index = VectorIndex.build(ids, vectors, [{} for _ in ids])
    split = Split("item-cold-start", train, [], new_items=frozenset({"new0", "new1"}))
    params = SignalParams(ease_min_total_users=0, side_weight=20.0)
    # When: the evaluation replays the rebuild
    served = split.replay(index, params).signals
    # Then: the solve saw the known items' index vectors, in the signals' item order
    known = served.item_ids
    rebuilt = compute_signals(train, list(known), params, item_vectors=index.vectors_for(list(known)))
    assert served.params["side_information_used"] is True and "new0" not in known
    assert served.params["input_sha256"] == rebuilt.params["input_sha256"]
    np.testing.assert_allclose(served.cf_scores, rebuilt.cf_scores)


def test_sample_cases_is_seeded_and_sorted() -> None:
    events = [_ev(f"u{u:02d}", f"i{i}", i) for u in range(30) for i in range(4)]
    cases = leave_last_out(events).cases
    a, b = sample_cases(cases, 10, seed=1), sample_cases(cases, 10, seed=1)
    assert a == b and len(a) == 10
    assert [c.user_id for c in a] == sorted(c.user_id for c in a)
    assert sample_cases(cases, None) == cases


def test_strategies_are_rank_params_of_the_same_ranking() -> None:
    assert strategy_params("popularity").strategy == "trending"
    assert strategy_params("embedding").weights.cf == 0.0
    assert strategy_params("cf").weights.embedding == 0.0
    assert strategy_params("hybrid+diversity").diversity > 0
    assert strategy_params("multi-interest").profile.max_interests > 1
    assert strategy_params("hybrid").profile.max_interests == 1


def test_the_evaluation_ranks_the_candidates_the_api_ranks_for_a_list_of_ten() -> None:
    # HR@10 and NDCG@10 are read off the top 10 of longer lists; that top 10 is the API's list at k = 10
    # only when both blend the same candidate pool (the pool grows with k past candidate_pool / 3).
    api = RankParams(k=10)
    for name in EVAL_STRATEGIES:
        params = strategy_params(name)
        assert params.k == evaluation.EVAL_K >= 20  # Recall@20 reads the top 20
        assert params.pool == api.pool == api.candidate_pool, name


# --------------------------------------------------------------------------- end to end


def test_movielens_slice_end_to_end(encoder: TextEncoder, tmp_path: Path) -> None:
    # Given the MovieLens slice encoded by the real encoder (vectors cached on disk)
    dataset = load_movielens(FIXTURES / "movielens-slice")
    calls: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return encoder.encode(texts)

    ids, vectors = encode_catalog(dataset, encode, encoder.encoder_id, tmp_path)
    ids2, vectors2 = encode_catalog(dataset, encode, encoder.encoder_id, tmp_path)
    assert len(calls) == 1 and ids == ids2 and np.array_equal(vectors, vectors2)
    index = build_index(dataset, ids, vectors, encoder.encoder_id)
    # When every strategy is evaluated under both protocols
    for split in (leave_last_out(dataset.interactions), item_cold_start(dataset.interactions)):
        assert split.cases
        metrics = evaluate(index, split, split.cases)
        # Then every strategy has every metric, within range
        assert list(metrics) == list(EVAL_STRATEGIES)
        for values in metrics.values():
            assert set(values) == set(METRICS)
            for name in ("HR@10", "NDCG@10", "Recall@20", "MRR", "coverage@10", "diversity@10"):
                assert 0.0 <= values[name] <= 1.0 + 1e-9
            assert values["novelty@10"] >= 0.0
        assert metrics["embedding"]["coverage@10"] > 0
        # a slice too small to train the learned blend on: it ranks exactly as the weighted blend
        assert metrics["learned"] == metrics["hybrid"]
        table = markdown_table(metrics)
        assert table.count("\n") == len(EVAL_STRATEGIES) + 1 and "| hybrid |" in table


def test_tune_uses_only_training_data(encoder: TextEncoder, tmp_path: Path) -> None:
    dataset = load_movielens(FIXTURES / "movielens-slice")
    ids, vectors = encode_catalog(dataset, encoder.encode, encoder.encoder_id, tmp_path)
    index = build_index(dataset, ids, vectors, encoder.encoder_id)
    split = leave_last_out(dataset.interactions)
    held_out = {(c.user_id, t) for c in split.cases for t in c.targets}
    result = tune(
        index, split, users=None, cf_grid=[SignalParams(), SignalParams(shrinkage=0.0)],
        # a grid value equal to the current default is skipped by design, so derive one that differs
        half_lives=(30.0,), event_half_lives=(None,), weight_grid={"cf": (BlendWeights().cf + 1.0,)},
    )
    assert result.validation["tuned"]["NDCG@10"] >= result.validation["default"]["NDCG@10"]
    assert len(result.trials) == 2 + 1 + 1 + 1  # CF grid, half-life in days, in events, one weight
    assert {trial["half_life_events"] for trial in result.trials} == {ProfileParams().half_life_events, None}
    assert result.to_dict()["half_life_events"] == result.profile.half_life_events
    # the three pooled validation splits are carved from training: no test (user, item) is a validation target
    train, pooled = split.train, 0
    for _ in range(3):
        validation = leave_last_out(train)
        assert not {(c.user_id, t) for c in validation.cases for t in c.targets} & held_out
        train, pooled = validation.train, pooled + len(validation.cases)
    assert result.validation["users"] == {"count": pooled, "splits": 3, "seed": 0}


def test_the_learned_blend_trains_on_validation_lists_carved_from_training(
    encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_movielens(FIXTURES / "movielens-slice")
    ids, vectors = encode_catalog(dataset, encoder.encode, encoder.encoder_id, tmp_path)
    index = build_index(dataset, ids, vectors, encoder.encoder_id)
    split = leave_last_out(dataset.interactions)
    lists: list[tuple[str, float]] = []
    real = evaluation.learning_example

    def spy(*args: object) -> object:
        lists.append((args[4], args[6]))  # (target, now)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluation, "learning_example", spy)
    # Given a threshold low enough for the slice
    monkeypatch.setattr(evaluation, "fit", lambda examples, stats: fit(examples, stats, min_lists=1))
    model = train_learned_blend(index, split)
    # Then every training list's target is a training event, never a test case's held-out one
    assert lists and set(lists) <= {(e.item_id, float(e.timestamp)) for _, e in split.train}
    assert not set(lists) & {(t, c.now) for c in split.cases for t in c.targets}
    assert model is not None and len(model.stats) == len(split.replay(index).signals)


def test_amazon_synthetic_loads_for_evaluation(tmp_path: Path) -> None:
    # The synthetic fixture keeps names of its own (no file in the repo may look like the real Amazon data);
    # laid out under the release's names, it is read as `embrec eval --path DIR` reads the real files.
    source = FIXTURES / "amazon-synthetic"
    shutil.copy(source / "ratings-synthetic.csv", tmp_path / "Magazine_Subscriptions.csv")
    shutil.copy(source / "meta-synthetic.json", tmp_path / "meta_Magazine_Subscriptions.json")
    dataset = load_dataset("amazon-magazines", tmp_path)
    assert dataset.name == "amazon-magazines" and dataset.interactions
    split = leave_last_out(dataset.interactions, min_events=2)
    assert all(case.targets.isdisjoint(e.item_id for e in case.history) for case in split.cases)


def test_embrec_eval_runs_from_a_shell_without_stack_settings(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a shell with no EMBREC_* variable (no bucket, no tables, no endpoint: the eval needs none)
    for name in [n for n in os.environ if n.startswith("EMBREC_")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    out = tmp_path / "results.json"
    # When `embrec eval` runs on the slice, Then it finishes and saves its results
    argv = ["eval", "--dataset", "movielens", "--path", str(FIXTURES / "movielens-slice"), "--users", "2",
            "--strategies", "popularity", "--encoder", str(encoder_dir), "--cache", str(tmp_path),
            "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["users"] == 2


def test_cli_registers_eval() -> None:
    args = build_parser().parse_args(
        ["eval", "--dataset", "movielens", "--path", "x", "--protocol", "item-cold-start", "--users", "5"]
    )
    assert args.protocol == "item-cold-start" and args.users == 5 and not args.tune


def test_paired_difference_separates_a_real_gap_from_noise() -> None:
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2, size=600).astype(float)  # per-user hits of one strategy
    # A strategy that hits 60 more users: the interval lies above 0
    better = base.copy()
    better[np.flatnonzero(base == 0)[:60]] = 1.0
    mean, low, high = paired_difference(better, base)
    assert mean == pytest.approx(0.1) and 0 < low < mean < high
    # One that swaps 10 hits for 10 misses (same mean): the interval holds 0
    shuffled = base.copy()
    shuffled[np.flatnonzero(base == 1)[:10]] = 0.0
    shuffled[np.flatnonzero(base == 0)[:10]] = 1.0
    mean, low, high = paired_difference(shuffled, base)
    assert mean == 0.0 and low < 0 < high
    assert paired_difference(shuffled, base) == paired_difference(shuffled, base)  # seeded
    assert paired_difference([], []) == (0.0, 0.0, 0.0)
    table = paired_table({"cf": {"HR@10": (0.1, 0.05, 0.15), "NDCG@10": (-0.01, -0.02, 0.0)}})
    assert "| hybrid - cf | +0.1000 [+0.0500, +0.1500] | -0.0100 [-0.0200, +0.0000] |" in table

