"""Rebuild signals: CF neighbours on synthetic matrices whose right answer is known, trending, save/load."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embrec.domain import signals as signals_module
from embrec.domain.model import Interaction
from embrec.domain.signals import CF_MODELS, SignalParams, Signals, compute_signals
from embrec.errors import CompatibilityError, IntegrityError, InvalidInputError
from embrec.manifest import describe_files, write_json

ROOT = Path(__file__).resolve().parents[2]

DAY = 86_400.0
T0 = 1_700_000_000.0


def _events(histories: dict[str, list[str]], kind: str = "like") -> list[tuple[str, Interaction]]:
    return [
        (user, Interaction(item, kind, T0 + n))
        for user, items in histories.items()
        for n, item in enumerate(items)
    ]


def _block_histories(seed: int = 0) -> tuple[dict[str, list[str]], list[str]]:
    """Two communities: users 0..29 use only a0..a7, users 30..59 only b0..b7 (random subsets)."""
    rng = np.random.default_rng(seed)
    histories: dict[str, list[str]] = {}
    for u in range(60):
        group = "a" if u < 30 else "b"
        chosen = rng.choice(8, size=int(rng.integers(3, 7)), replace=False)
        histories[f"u{u}"] = [f"{group}{j}" for j in sorted(chosen)]
    return histories, [f"a{j}" for j in range(8)] + [f"b{j}" for j in range(8)] + ["lonely"]


@pytest.mark.parametrize("model", CF_MODELS)
def test_neighbours_stay_inside_the_community(model: str) -> None:
    histories, ids = _block_histories()
    params = SignalParams(cf_model=model, neighbours=5, ease_lambda=5.0, ease_min_total_users=0)
    signals = compute_signals(_events(histories), ids, params)
    assert signals.params["cf_model_used"] == model
    for item_id in ids[:-1]:
        neighbours = signals.neighbours(item_id)
        assert neighbours, item_id
        assert all(other[0] == item_id[0] for other, _ in neighbours), (item_id, neighbours)
        assert item_id not in [other for other, _ in neighbours]
        scores = [score for _, score in neighbours]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert signals.neighbours("lonely") == []
    assert signals.cf_neighbours.dtype == np.int32 and signals.cf_scores.dtype == np.float32
    assert np.all(signals.cf_neighbours[ids.index("lonely")] == -1)


def test_cooccurrence_is_the_shrunk_cosine() -> None:
    # u1 {a, b}, u2 {a, b}, u3 {a, c}: S_ab = 2, S_aa = 3, S_bb = 2, c_ab = 2
    histories = {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["a", "c"]}
    for shrinkage in (0.0, 10.0):
        signals = compute_signals(
            _events(histories, "view"),
            ["a", "b", "c"],
            SignalParams(cf_model="cooccurrence", neighbours=2, shrinkage=shrinkage),
        )
        neighbours = dict(signals.neighbours("a"))
        assert neighbours["b"] == pytest.approx(2 / math.sqrt(6) * 2 / (2 + shrinkage), rel=1e-6)
        assert neighbours["c"] == pytest.approx(1 / math.sqrt(3) * 1 / (1 + shrinkage), rel=1e-6)


def test_popular_items_do_not_dominate_cooccurrence() -> None:
    # Everyone watched the blockbuster; x and y always go together.
    histories = {f"u{u}": ["blockbuster"] for u in range(50)}
    for u in range(5):
        histories[f"u{u}"] += ["x", "y"]
    params = SignalParams(cf_model="cooccurrence", neighbours=2, shrinkage=1)
    signals = compute_signals(_events(histories), ["blockbuster", "x", "y"], params)
    assert [item for item, _ in signals.neighbours("x")] == ["y", "blockbuster"]


def _assert_whole_matrix(signals: Signals, names: str, b: np.ndarray) -> None:
    """The signals keep the model's whole ``B`` (negative and small entries too) for ``names``, in float16."""
    matrix = signals.cf_matrix
    assert matrix is not None and matrix.weights.dtype == np.float16
    rows = matrix.rows[[signals.position(n) for n in names]]
    assert np.all(rows >= 0)
    kept = matrix.weights[np.ix_(rows, rows)].astype(np.float64)
    np.testing.assert_allclose(kept, b, rtol=2e-3, atol=1e-6)


def test_ease_matches_the_closed_form() -> None:
    histories = {"u1": ["a", "b"], "u2": ["a", "b", "c"], "u3": ["b", "c"], "u4": ["a", "c"]}
    lam = 0.5
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1]], dtype=np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(3))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0)
    # "view" weighs 1, so the user-item matrix is exactly x
    params = SignalParams(cf_model="ease", ease_min_total_users=0, ease_lambda=lam)
    signals = compute_signals(_events(histories, "view"), ["a", "b", "c"], params)
    for i, item in enumerate("abc"):
        expected = {other: b[i, j] for j, other in enumerate("abc") if j != i and b[i, j] > 0}
        assert dict(signals.neighbours(item)) == pytest.approx(expected, rel=1e-5)
    _assert_whole_matrix(signals, "abc", b)


def test_ease_leaves_out_items_a_single_user_touched_above_the_prune_size() -> None:
    # Given: the closed-form example plus "d", which only u1 touched
    histories = {"u1": ["a", "b", "d"], "u2": ["a", "b", "c"], "u3": ["b", "c"], "u4": ["a", "c"]}
    lam = 0.5
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1]], dtype=np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(3))
    b = -p / np.diag(p)[None, :]
    events, ids = _events(histories, "view"), ["a", "b", "c", "d"]
    # When: the catalog counts as large (more items touched than ease_prune_above)
    ease = SignalParams(cf_model="ease", ease_min_total_users=0, ease_lambda=lam)
    pruned = compute_signals(events, ids, replace(ease, ease_prune_above=3))
    # Then: "d" has no neighbours and is nobody's, and a, b, c are exactly the model without it
    assert pruned.neighbours("d") == []
    for i, item in enumerate("abc"):
        expected = {other: b[i, j] for j, other in enumerate("abc") if j != i and b[i, j] > 0}
        assert dict(pruned.neighbours(item)) == pytest.approx(expected, rel=1e-5)
    np.fill_diagonal(b, 0)
    _assert_whole_matrix(pruned, "abc", b)
    assert pruned.cf_matrix is not None and pruned.cf_matrix.rows[3] == -1  # and "d" has no row in it
    assert pruned.interacted_mask()[3]  # still known as touched (it is not "new")
    # ... while a small catalog (the default prune size, 2,000) keeps it: its solve is cheap
    assert compute_signals(events, ids, ease).neighbours("d")
    # ... and so does ease_min_users=1 at any size
    every = replace(ease, ease_prune_above=3, ease_min_users=1)
    assert compute_signals(events, ids, every).neighbours("d")


def test_ease_streams_users_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    histories, ids = _block_histories(seed=2)
    params = SignalParams(cf_model="ease", ease_min_total_users=0, neighbours=4, ease_lambda=5.0)
    whole = compute_signals(_events(histories), ids, params)
    monkeypatch.setattr(signals_module, "_EASE_BLOCK_CELLS", 1)  # one user per block
    blocked = compute_signals(_events(histories), ids, params)
    np.testing.assert_array_equal(whole.cf_neighbours, blocked.cf_neighbours)
    np.testing.assert_allclose(whole.cf_scores, blocked.cf_scores, rtol=1e-6)


def test_ease_needs_enough_users_and_falls_back_to_cooccurrence_below() -> None:
    # Given: the block communities of 40-odd users; EASE's default needs 100 users with events
    histories, ids = _block_histories()
    few = compute_signals(_events(histories), ids, SignalParams(cf_model="ease"))
    enough = compute_signals(_events(histories), ids, SignalParams(cf_model="ease", ease_min_total_users=10))
    # Then: too few users -> the co-occurrence model, recorded; enough -> EASE
    assert few.params["cf_model_used"] == "cooccurrence"
    assert enough.params["cf_model_used"] == "ease"


def test_ease_above_the_cap_falls_back_to_cooccurrence() -> None:
    histories, ids = _block_histories()
    capped = SignalParams(cf_model="ease", ease_min_total_users=0, ease_max_items=4)
    signals = compute_signals(_events(histories), ids, capped)
    assert signals.params["cf_model_used"] == "cooccurrence"
    assert signals.params["cf_model"] == "ease"


def test_blocking_does_not_change_the_result() -> None:
    histories, ids = _block_histories(seed=5)
    events = _events(histories)
    whole = compute_signals(events, ids, SignalParams(cf_model="cooccurrence", neighbours=6))
    blocked = compute_signals(events, ids, SignalParams(cf_model="cooccurrence", neighbours=6, pair_budget=1))
    np.testing.assert_array_equal(whole.cf_neighbours, blocked.cf_neighbours)
    np.testing.assert_allclose(whole.cf_scores, blocked.cf_scores)


def test_only_the_most_recent_items_per_user_feed_cf_and_negatives_are_ignored() -> None:
    events = [
        ("u", Interaction("old", "like", T0)),
        ("u", Interaction("a", "like", T0 + 10)),
        ("u", Interaction("b", "like", T0 + 20)),
        ("u", Interaction("c", "dislike", T0 + 30)),
        ("u", Interaction("ghost", "like", T0 + 40)),  # not in the catalog
    ]
    params = SignalParams(cf_model="cooccurrence", max_items_per_user=2)
    signals = compute_signals(events, ["old", "a", "b", "c"], params)
    assert [item for item, _ in signals.neighbours("a")] == ["b"]
    assert signals.neighbours("old") == [] and signals.neighbours("c") == []
    assert signals.params["n_events"] == 3


def test_trending_decays_from_now_within_the_window() -> None:
    now = T0 + 100 * DAY
    params = SignalParams(trending_half_life_days=2.0, trending_window_days=7.0)
    events = [
        ("u1", Interaction("fresh", "view", now)),
        ("u2", Interaction("fresh", "view", now - 1)),
        ("u1", Interaction("older", "view", now - 2 * DAY)),
        ("u1", Interaction("bought", "purchase", now - 4 * DAY)),
        ("u1", Interaction("stale", "purchase", now - 8 * DAY)),
        ("u1", Interaction("hated", "dislike", now)),
        ("u1", Interaction("future", "view", now + 3600)),
    ]
    ids = ["fresh", "older", "bought", "stale", "hated", "future"]
    signals = compute_signals(events, ids, params, now=now)
    trend = dict(zip(ids, signals.trending.tolist(), strict=True))
    assert trend["fresh"] == pytest.approx(2.0, rel=1e-4)
    assert trend["older"] == pytest.approx(0.5)
    assert trend["bought"] == pytest.approx(5 * 0.25)
    assert trend["stale"] == 0.0 and trend["hated"] == 0.0
    assert trend["future"] == pytest.approx(1.0)
    assert [signals.item_ids[p] for p in signals.trending_order()] == ["fresh", "bought", "future", "older"]


def test_one_user_replaying_events_counts_once() -> None:
    events = [("bot", Interaction("spam", "view", T0 - n)) for n in range(100)]
    events += [("u1", Interaction("real", "view", T0)), ("u2", Interaction("real", "view", T0))]
    signals = compute_signals(events, ["spam", "real"], now=T0)
    assert signals.trending_score("real") > signals.trending_score("spam") == pytest.approx(1.0)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    histories, ids = _block_histories()
    ids = [*ids, "ünïcode/ä"]
    signals = compute_signals(_events(histories), ids, SignalParams(neighbours=3, ease_min_total_users=0))
    manifest = signals.save(tmp_path)
    assert set(manifest["files"]) == {"signals.npz"} and manifest["count"] == len(ids)
    json.dumps(manifest)  # goes into the index manifest as is
    loaded = Signals.load(tmp_path, manifest["files"])
    assert loaded.item_ids == signals.item_ids
    np.testing.assert_array_equal(loaded.cf_neighbours, signals.cf_neighbours)
    np.testing.assert_array_equal(loaded.cf_scores, signals.cf_scores)
    np.testing.assert_array_equal(loaded.trending, signals.trending)
    assert loaded.params == manifest["params"]
    assert loaded.neighbours("a0") == signals.neighbours("a0")
    assert signals.cf_matrix is not None and loaded.cf_matrix is not None
    np.testing.assert_array_equal(loaded.cf_matrix.items, signals.cf_matrix.items)
    np.testing.assert_array_equal(loaded.cf_matrix.weights, signals.cf_matrix.weights)


@pytest.mark.parametrize("params", [
    SignalParams(keep_cf_matrix=False, ease_min_total_users=0),  # not asked for
    SignalParams(ease_min_total_users=1_000),  # co-occurrence: no matrix to keep
])
def test_signals_without_the_whole_matrix_save_and_load_without_it(
    tmp_path: Path, params: SignalParams
) -> None:
    histories, ids = _block_histories()
    signals = compute_signals(_events(histories), ids, params)
    assert signals.cf_matrix is None and signals.neighbours("a0")
    signals.save(tmp_path)
    with np.load(tmp_path / signals_module.SIGNALS_FILE, allow_pickle=False) as data:
        assert "cf_matrix" not in data.files
    assert Signals.load(tmp_path).cf_matrix is None


def test_the_whole_matrix_costs_two_bytes_a_cell_on_disk(tmp_path: Path) -> None:
    histories, ids = _block_histories()
    with_matrix = compute_signals(_events(histories), ids, SignalParams(ease_min_total_users=0))
    assert with_matrix.cf_matrix is not None
    m = with_matrix.cf_matrix.items.shape[0]
    with_matrix.save(tmp_path / "with")
    replace(with_matrix, cf_matrix=None).save(tmp_path / "without")
    size = [(tmp_path / d / signals_module.SIGNALS_FILE).stat().st_size for d in ("with", "without")]
    assert 2 * m * m <= size[0] - size[1] <= 2 * m * m + 1_024  # the cells and the npz entries' headers


def test_load_refuses_a_tampered_or_missing_file(tmp_path: Path) -> None:
    signals = compute_signals(_events({"u": ["a", "b"]}), ["a", "b"])
    manifest = signals.save(tmp_path)
    (tmp_path / "signals.npz").write_bytes(b"not an npz")
    with pytest.raises(IntegrityError):
        Signals.load(tmp_path, manifest["files"])
    with pytest.raises(IntegrityError):
        Signals.load(tmp_path)
    with pytest.raises(IntegrityError):
        Signals.load(tmp_path / "missing")


def test_params_validation_and_duplicate_ids() -> None:
    with pytest.raises(InvalidInputError):
        SignalParams(cf_model="magic")
    with pytest.raises(InvalidInputError):
        SignalParams(neighbours=0)
    signals = compute_signals([], ["a", "a", "b"])
    assert signals.item_ids == ("a", "b") and len(Signals.empty(["x"])) == 1
    assert np.all(signals.trending == 0)


# --------------------------------------------------------------------------- on-disk format


def _ragged_signals() -> Signals:
    """Rows with 3, 1 and 0 neighbours (width 3), as compute_signals leaves them: best first, -1 padded."""
    return Signals(
        item_ids=("a", "b", "c"),
        cf_neighbours=np.array([[1, 2, 0], [0, -1, -1], [-1, -1, -1]], dtype=np.int32),
        cf_scores=np.array([[0.9, 0.5, 0.25], [0.75, 0, 0], [0, 0, 0]], dtype=np.float32),
        trending=np.array([0.0, 2.0, 0.5], dtype=np.float32),
        params={"neighbours": 3},
        interacted=np.array([True, True, False]),
    )


def test_ragged_rows_round_trip_and_store_no_padding(tmp_path: Path) -> None:
    signals = _ragged_signals()

    manifest = signals.save(tmp_path)
    loaded = Signals.load(tmp_path)

    assert manifest["format_version"] == 2
    np.testing.assert_array_equal(loaded.cf_neighbours, signals.cf_neighbours)
    np.testing.assert_array_equal(loaded.cf_scores, signals.cf_scores)
    assert loaded.cf_neighbours.dtype == np.int32 and loaded.cf_scores.dtype == np.float32
    assert [loaded.neighbours(i) for i in "abc"] == [signals.neighbours(i) for i in "abc"]
    with np.load(tmp_path / signals_module.SIGNALS_FILE, allow_pickle=False) as data:
        assert data["cf_counts"].tolist() == [3, 1, 0] and data["cf_counts"].dtype == np.uint8
        pairs = data["cf_neighbour_ids"]
        assert pairs.tolist() == [1, 2, 0, 0] and pairs.dtype == np.uint8
        assert "cf_neighbours" not in data.files


def test_a_sparse_catalog_costs_a_count_per_item_not_a_padded_row(tmp_path: Path) -> None:
    # 10k items, one in ten with 50 neighbours (the 100k-item bench has 9% of its items with a CF row)
    n, width = 10_000, 50
    rng = np.random.default_rng(0)
    neighbours = np.full((n, width), -1, dtype=np.int32)
    scores = np.zeros((n, width), dtype=np.float32)
    rows = np.arange(0, n, 10)
    neighbours[rows] = rng.integers(0, n, size=(rows.size, width))
    scores[rows] = np.sort(rng.random((rows.size, width)), axis=1)[:, ::-1]
    ids = tuple(f"item-{i}" for i in range(n))
    signals = Signals(ids, neighbours, scores, np.zeros(n, np.float32))

    signals.save(tmp_path)
    loaded = Signals.load(tmp_path)

    np.testing.assert_array_equal(loaded.cf_neighbours, neighbours)
    np.testing.assert_array_equal(loaded.cf_scores, scores)
    dense_cf_bytes = n * width * 8
    assert (tmp_path / signals_module.SIGNALS_FILE).stat().st_size < dense_cf_bytes / 5


def _write_format_1(signals: Signals, directory: Path) -> None:
    """A signals directory as the code before format 2 wrote it: dense padded rows, int64 id offsets."""
    directory.mkdir(parents=True)
    blob = np.frombuffer("".join(signals.item_ids).encode(), dtype=np.uint8)
    offsets = np.r_[0, np.cumsum([len(i.encode()) for i in signals.item_ids])].astype(np.int64)
    np.savez(
        directory / signals_module.SIGNALS_FILE,
        format_version=np.asarray(1, dtype=np.int64),
        item_id_blob=blob,
        item_id_offsets=offsets,
        cf_neighbours=signals.cf_neighbours,
        cf_scores=signals.cf_scores,
        trending=signals.trending,
        params_json=np.frombuffer(json.dumps(dict(signals.params)).encode(), dtype=np.uint8),
    )
    files = describe_files(directory, [signals_module.SIGNALS_FILE])
    write_json(directory / "manifest.json", {"files": files, "format_version": 1})


def test_format_1_files_still_load(tmp_path: Path) -> None:
    signals = _ragged_signals()
    _write_format_1(signals, tmp_path / "v1")

    loaded = Signals.load(tmp_path / "v1")

    assert loaded.item_ids == signals.item_ids
    np.testing.assert_array_equal(loaded.cf_neighbours, signals.cf_neighbours)
    np.testing.assert_array_equal(loaded.cf_scores, signals.cf_scores)
    assert loaded.interacted is None  # not in format 1 files: interacted_mask falls back


def test_a_newer_format_is_a_compatibility_error_and_a_malformed_one_an_integrity_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "v3").mkdir()
    np.savez(tmp_path / "v3" / signals_module.SIGNALS_FILE, format_version=np.asarray(3, dtype=np.int64))
    files = describe_files(tmp_path / "v3", [signals_module.SIGNALS_FILE])
    with pytest.raises(CompatibilityError, match="format version 3"):
        Signals.load(tmp_path / "v3", files)

    _ragged_signals().save(tmp_path / "bad")
    with np.load(tmp_path / "bad" / signals_module.SIGNALS_FILE, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["cf_counts"] = np.array([3, 2, 0], dtype=np.uint8)  # one pair more than stored
    np.savez(tmp_path / "bad" / signals_module.SIGNALS_FILE, **arrays)
    files = describe_files(tmp_path / "bad", [signals_module.SIGNALS_FILE])
    with pytest.raises(IntegrityError, match="CF rows"):
        Signals.load(tmp_path / "bad", files)

    histories, ids = _block_histories()
    compute_signals(_events(histories), ids, SignalParams(ease_min_total_users=0)).save(tmp_path / "matrix")
    with np.load(tmp_path / "matrix" / signals_module.SIGNALS_FILE, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    broken = (
        ("cf_matrix", arrays["cf_matrix"][:-1]),  # a row short
        ("cf_matrix_items", arrays["cf_matrix_items"][::-1]),  # not ascending
        ("cf_matrix", arrays["cf_matrix"].astype(np.float32)),  # not what the code writes
    )
    for name, bad in broken:
        np.savez(tmp_path / "matrix" / signals_module.SIGNALS_FILE, **(arrays | {name: bad}))
        files = describe_files(tmp_path / "matrix", [signals_module.SIGNALS_FILE])
        with pytest.raises(IntegrityError, match="cf_matrix"):
            Signals.load(tmp_path / "matrix", files)


def test_load_hashes_against_its_manifest_when_given_a_plain_path(tmp_path: Path) -> None:
    _ragged_signals().save(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(IntegrityError, match="manifest"):  # no manifest: nothing to check against
        Signals.load(tmp_path)


# --------------------------------------------------------------------------- SLIST (sequence-aware)


def _slist_closed_form(
    sequences: list[list[int]], m: int, lam: float, alpha: float, half_life: float, window: int,
    side: np.ndarray | None = None, beta: float = 0.0,
) -> np.ndarray:
    """SLIST from its definition: X, S and T written out row by row, then the constrained least squares.
    ``side`` (m, d) with ``beta``: the content stacked under X as d more rows (Jeunen et al. 2020)."""
    x = np.zeros((len(sequences), m))
    s_rows, t_rows = [], []
    for u, seq in enumerate(sequences):
        x[u, seq] = 1.0
        for t in range(len(seq) - 1):
            s, target = np.zeros(m), np.zeros(m)
            for d in range(min(t + 1, window)):
                s[seq[t - d]] += 0.5 ** (d / half_life)
            for k in range(1, min(window, len(seq) - 1 - t) + 1):
                target[seq[t + k]] += 0.5 ** ((k - 1) / half_life)
            s_rows.append(s)
            t_rows.append(target)
    s_mat, t_mat = np.asarray(s_rows), np.asarray(t_rows)
    stacked = np.sqrt(alpha) * x
    if side is not None:
        stacked = np.vstack([stacked, np.sqrt(beta) * side.T])
    g = stacked.T @ stacked + (1 - alpha) * s_mat.T @ s_mat + lam * np.eye(m)
    c = stacked.T @ stacked + (1 - alpha) * s_mat.T @ t_mat
    p = np.linalg.inv(g)
    # diag(B) = 0 by a Lagrange multiplier per column: B = P (C - diag(mu))
    mu = np.diag(p @ c) / np.diag(p)
    b = p @ (c - np.diag(mu))
    assert np.allclose(np.diag(b), 0.0)
    return b


@pytest.mark.parametrize(("alpha", "window"), [(0.5, 10), (0.2, 2), (0.0, 3)])
def test_slist_matches_its_definition(alpha: float, window: int) -> None:
    # Given: four users' ordered histories over five items
    names = "abcde"
    sequences = [[0, 1, 2, 3], [1, 2, 4], [0, 2, 3, 4, 1], [3, 4, 0]]
    histories = {f"u{u}": [names[i] for i in seq] for u, seq in enumerate(sequences)}
    lam, half_life = 0.7, 2.0
    params = SignalParams(
        cf_model="slist", ease_min_total_users=0, ease_lambda=lam, slist_alpha=alpha,
        slist_half_life_events=half_life, slist_window=window, neighbours=4,
    )
    # When: the rebuild computes SLIST ("view" weighs 1, events in list order)
    signals = compute_signals(_events(histories, "view"), list(names), params)
    # Then: every item's neighbours are the positive off-diagonal entries of B's row
    b = _slist_closed_form(sequences, 5, lam, alpha, half_life, window)
    assert signals.params["cf_model_used"] == "slist"
    for i, item in enumerate(names):
        expected = {other: b[i, j] for j, other in enumerate(names) if j != i and b[i, j] > 0}
        assert dict(signals.neighbours(item)) == pytest.approx(expected, rel=1e-5)
    _assert_whole_matrix(signals, names, b)
    assert (b < 0).any()  # entries the neighbour rows leave out, which the matrix keeps


def test_slist_with_alpha_1_is_ease() -> None:
    histories, ids = _block_histories(seed=3)
    ease = SignalParams(cf_model="ease", ease_min_total_users=0, neighbours=5, ease_lambda=5.0)
    slis = replace(ease, cf_model="slist", slist_alpha=1.0)
    a, b = compute_signals(_events(histories), ids, ease), compute_signals(_events(histories), ids, slis)
    np.testing.assert_array_equal(a.cf_neighbours, b.cf_neighbours)
    np.testing.assert_allclose(a.cf_scores, b.cf_scores, rtol=1e-5)


def test_slist_learns_what_comes_next_where_ease_sees_only_togetherness() -> None:
    # Given: 40 users each walk a chain c0 -> c1 -> ... -> c7 (a random stretch of it), in order
    rng = np.random.default_rng(0)
    histories = {}
    for u in range(40):
        start = int(rng.integers(0, 4))
        histories[f"u{u}"] = [f"c{j}" for j in range(start, start + int(rng.integers(3, 5)))]
    ids = [f"c{j}" for j in range(8)]
    ease = SignalParams(cf_model="ease", ease_min_total_users=0, neighbours=3, ease_lambda=2.0)
    slist = replace(ease, cf_model="slist", slist_alpha=0.2, slist_half_life_events=1.0)
    # When: both models are built from the same events
    by_ease = compute_signals(_events(histories), ids, ease)
    by_slist = compute_signals(_events(histories), ids, slist)
    # Then: SLIST's best neighbour of each inner link is the next one; EASE's is as often the previous one
    inner = [f"c{j}" for j in range(1, 6)]
    slist_next = sum(by_slist.neighbours(c)[0][0] == f"c{int(c[1:]) + 1}" for c in inner)
    ease_next = sum(by_ease.neighbours(c)[0][0] == f"c{int(c[1:]) + 1}" for c in inner)
    assert slist_next == len(inner)
    assert ease_next < len(inner)


@pytest.mark.parametrize(
    ("model", "alpha", "beta"), [("ease", 1.0, 0.6), ("slist", 0.5, 0.6), ("slist", 0.2, 3.0)]
)
def test_side_information_matches_its_definition(model: str, alpha: float, beta: float) -> None:
    # Given: the four ordered histories over five items, and a 3-d content vector per item (unit rows)
    names = "abcde"
    sequences = [[0, 1, 2, 3], [1, 2, 4], [0, 2, 3, 4, 1], [3, 4, 0]]
    histories = {f"u{u}": [names[i] for i in seq] for u, seq in enumerate(sequences)}
    content = np.random.default_rng(7).normal(size=(5, 3))
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    lam, half_life = 0.7, 2.0
    params = SignalParams(
        cf_model=model, ease_min_total_users=0, ease_lambda=lam, slist_alpha=alpha,
        slist_half_life_events=half_life, neighbours=4, side_weight=beta,
    )
    # When: the rebuild solves with the content as side information
    signals = compute_signals(_events(histories, "view"), list(names), params, item_vectors=content)
    # Then: B is the constrained least squares over [X; sqrt(beta) V^T] (plus SLIST's transition rows)
    b = _slist_closed_form(sequences, 5, lam, alpha, half_life, 10, content, beta)
    assert signals.params["side_information_used"] is True
    for i, item in enumerate(names):
        expected = {other: b[i, j] for j, other in enumerate(names) if j != i and b[i, j] > 0}
        assert dict(signals.neighbours(item)) == pytest.approx(expected, rel=1e-5)


def test_a_thinly_used_item_borrows_the_neighbours_of_items_its_text_resembles() -> None:
    # Given: the two communities, and "a-twin" whose text is a0's, touched by two users of community b only
    histories, ids = _block_histories(seed=1)
    histories["u30"] = [*histories["u30"], "a-twin"]
    histories["u31"] = [*histories["u31"], "a-twin"]
    ids = [*ids, "a-twin"]
    content = np.eye(len(ids))
    content[ids.index("a-twin")] = content[ids.index("a0")]
    plain = SignalParams(cf_model="slist", ease_min_total_users=0, neighbours=5, ease_lambda=5.0)
    side = replace(plain, side_weight=5.0)
    # When: SLIST is solved without and with the content
    without = compute_signals(_events(histories), ids, plain, item_vectors=content)
    with_text = compute_signals(_events(histories), ids, side, item_vectors=content)
    # Then: from its two users alone it looks like a b item; with its text it also reaches a0's community
    assert not any(other.startswith("a") for other, _ in without.neighbours("a-twin"))
    assert dict(with_text.neighbours("a-twin"))["a0"] > 0
    assert without.params["side_information_used"] is False
    assert without.params["input_sha256"] != with_text.params["input_sha256"]


def test_side_information_needs_one_vector_per_item_and_is_skipped_without_vectors() -> None:
    histories, ids = _block_histories()
    params = SignalParams(cf_model="ease", ease_min_total_users=0, neighbours=5, side_weight=1.0)
    without = compute_signals(_events(histories), ids, params)
    assert without.params["side_information_used"] is False
    with pytest.raises(InvalidInputError) as error:
        compute_signals(_events(histories), ids, params, item_vectors=np.ones((3, 4)))
    assert error.value.field == "item_vectors"
    with pytest.raises(InvalidInputError):
        SignalParams(side_weight=-1.0)


def test_slist_params_are_checked() -> None:
    for bad in ({"slist_alpha": 1.5}, {"slist_half_life_events": 0.0}, {"slist_window": 0}):
        with pytest.raises(InvalidInputError):
            SignalParams(**bad)  # type: ignore[arg-type]


_BEFORE_HEAD_WALK = Path(__file__).parents[1] / "fixtures" / "signals-before-head-walk.npz"


@pytest.mark.parametrize("model", CF_MODELS)
def test_the_signals_are_what_the_builder_made_before_the_head_item_walk(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: seeded Zipf events (8,000 over 300 items and 250 users, weights 0.3 / 0.7 / 1.1 / 2.9, a
    # dislike, an unknown type, ids outside the catalog, a few future events) and the neighbours and trending
    # the builder computed from them before head items were walked (fixture written then, pair budget 4M)
    fixture = np.load(_BEFORE_HEAD_WALK, allow_pickle=False)
    kinds = ("view", "click", "like", "purchase", "dislike", "share")
    weights = {"view": 0.3, "click": 0.7, "like": 1.1, "purchase": 2.9, "dislike": -1.0}
    users, items, types, times = (fixture[key].tolist() for key in ("users", "items", "kinds", "times"))
    events = [
        (f"u{u}", Interaction(f"i{i}", kinds[t], ts))
        for u, i, t, ts in zip(users, items, types, times, strict=True)
    ]
    # When: the events are split into many user ranges and the pair budget (30) is below what the most
    # popular items' users hold, and below one item's user count (the walk splits its destinations too)
    monkeypatch.setattr(signals_module, "_RANGE_EVENTS", 500)
    walked: list[int] = []
    heavy_row = signals_module._heavy_row

    def counted(src: int, *rest: Any) -> tuple[np.ndarray, np.ndarray]:
        walked.append(src)
        return heavy_row(src, *rest)

    monkeypatch.setattr(signals_module, "_heavy_row", counted)
    params = SignalParams(
        cf_model=model, neighbours=12, type_weights=weights, max_items_per_user=40, ease_min_total_users=0,
        ease_lambda=5.0, pair_budget=30, slist_half_life_events=3.0,  # the fixture's (then default) half-life
        cf_type_weights=True,  # and its typed rows (engagement rows since session 16)
    )
    computed = compute_signals(events, [f"i{k}" for k in range(300)], params, now=1_790_000_000.0)
    # Then: the same neighbours, scores and trending, bit for bit (this machine's BLAS for EASE and SLIST)
    assert computed.params["cf_model_used"] == model
    np.testing.assert_array_equal(computed.cf_neighbours, fixture[f"{model}_neighbours"])
    if model == "cooccurrence":
        np.testing.assert_array_equal(computed.cf_scores, fixture[f"{model}_scores"])
    else:  # a closed-form solve: another BLAS may round its last bits differently
        np.testing.assert_allclose(computed.cf_scores, fixture[f"{model}_scores"], rtol=1e-6)
    np.testing.assert_array_equal(computed.trending, fixture[f"{model}_trending"])
    if model == "cooccurrence":
        assert len(walked) > 50  # the popular items took the walk


def test_event_pages_keep_what_the_same_events_one_by_one_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given: the fixture's events (a dislike, an unknown type, ids outside the catalog), a non-finite time,
    # and columns in chunks of 1,000 events, so pages cross chunk boundaries
    fixture = np.load(_BEFORE_HEAD_WALK, allow_pickle=False)
    kinds = ("view", "click", "like", "purchase", "dislike", "share")
    weights = {"view": 0.3, "click": 0.7, "like": 1.1, "purchase": 2.9, "dislike": -1.0}
    users = [f"u{u}" for u in fixture["users"].tolist()]
    items = [f"i{i}" for i in fixture["items"].tolist()]
    types = [kinds[t] for t in fixture["kinds"].tolist()]
    times = fixture["times"].astype(np.float64)
    times[7] = np.nan
    monkeypatch.setattr(signals_module.EventColumns, "CHUNK_EVENTS", 1_000)
    catalog = [f"i{k}" for k in range(300)]
    one_by_one = signals_module.EventColumns(catalog, weights).extend(
        (u, Interaction(i, t, float(ts))) for u, i, t, ts in zip(users, items, types, times, strict=True)
    )
    # When: the same events arrive as pages of uneven sizes (one empty), mixed with single events
    cuts = [0, 1, 1, 700, 2_500, 2_501, 6_000, len(users) - 3]
    entries: list[Any] = [
        signals_module.EventPage(users[a:b], items[a:b], types[a:b], times[a:b])
        for a, b in itertools.pairwise(cuts)
    ]
    entries += [
        (users[k], Interaction(items[k], types[k], float(times[k]))) for k in range(cuts[-1], len(users))
    ]
    paged = signals_module.EventColumns(catalog, weights).extend(entries)
    # Then: the same columns, users, types, marks and count, and the same signals
    assert paged.seen == one_by_one.seen == len(users)
    assert paged.finish() == one_by_one.finish()
    for k in range(4):
        np.testing.assert_array_equal(
            np.concatenate([chunk[k] for chunk in paged.chunks]),
            np.concatenate([chunk[k] for chunk in one_by_one.chunks]),
        )
    assert paged.type_names == one_by_one.type_names and paged.type_table == one_by_one.type_table
    np.testing.assert_array_equal(paged.interacted, one_by_one.interacted)
    params = SignalParams(cf_model="cooccurrence", type_weights=weights, neighbours=12)
    a = signals_module.signals_from_events(paged, params, now=1_790_000_000.0)
    b = signals_module.signals_from_events(one_by_one, params, now=1_790_000_000.0)
    np.testing.assert_array_equal(a.cf_neighbours, b.cf_neighbours)
    np.testing.assert_array_equal(a.trending, b.trending)
    assert a.params["input_sha256"] == b.params["input_sha256"]


def test_an_event_page_has_columns_of_one_length() -> None:
    with pytest.raises(InvalidInputError, match="timestamps"):
        signals_module.EventPage(["u"], ["i"], ["view", "like"], np.zeros(1))


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _released_bytes() -> tuple[int, int]:
    """(bytes the process's RSS fell by when two chunks of columns were released, the chunks' bytes)."""
    # Given: a process that freed a 16 MB array (the index phase frees larger ones: glibc then serves anything
    # smaller from its heap), two full chunks of columns, every page written, and a 1 MB array allocated
    # after each (with one array per column, in the heap, that kept the freed columns from the OS: the RSS
    # did not move)
    np.ones(2 * 2**20).sum()
    events = signals_module.EventColumns(["a"], {"view": 1.0})
    pinned: list[np.ndarray] = []
    for _ in range(2):
        events._open_chunk()
        for k in range(4):
            events.chunks[-1][k].fill(1)
        pinned.append(np.ones(2**17))
    size = 2 * 17 * signals_module.EventColumns.CHUNK_EVENTS
    assert size / 2 > 32 * 2**20  # each chunk above glibc's largest mmap threshold
    before = _rss_bytes()
    # When: the columns are released, as signals_from_events does once it has read them
    events.chunks.clear()
    return before - _rss_bytes(), size


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS (Linux)")
def test_released_event_columns_go_back_to_the_os() -> None:
    # Measured in a fresh interpreter: in the full suite's long-lived process, what earlier tests allocated
    # and freed decides what glibc returns on a free (the RSS did not move at all there), not the layout
    code = (
        "import json, sys; sys.path.insert(0, '.'); "
        "from tests.unit.test_signals import _released_bytes as f; print(json.dumps(f()))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    released, size = json.loads(out.stdout.strip().splitlines()[-1])
    # Then: the process holds that much less at once
    assert released > 0.9 * size, (released, size)


@pytest.mark.parametrize("model", ["ease", "slist"])
def test_the_solves_read_engagement_unless_asked_to_weigh_types(model: str) -> None:
    # Given: the block histories, each event a like or a view at random, and the same events all views
    histories, ids = _block_histories(seed=5)
    rng = np.random.default_rng(5)
    mixed = [(user, replace(e, type=str(rng.choice(["like", "view"])))) for user, e in _events(histories)]
    params = SignalParams(cf_model=model, ease_min_total_users=0, neighbours=5, ease_lambda=5.0)
    # When: the rebuild solves over each, with engagement rows (the default) and with typed rows
    engaged = compute_signals(mixed, ids, params)
    viewed = compute_signals(_events(histories, "view"), ids, params)
    typed = compute_signals(mixed, ids, replace(params, cf_type_weights=True))
    # Then: engagement rows do not see the types (a like and a view are one engagement); typed rows do
    np.testing.assert_array_equal(engaged.cf_neighbours, viewed.cf_neighbours)
    np.testing.assert_allclose(engaged.cf_scores, viewed.cf_scores, rtol=1e-6)
    assert not np.allclose(typed.cf_scores, viewed.cf_scores, rtol=1e-3)
    # And: the signals tell a request how to weigh its CF sources
    assert engaged.cf_reads_engagement and not typed.cf_reads_engagement


def test_only_a_solve_over_engagement_rows_reads_engagement() -> None:
    histories, ids = _block_histories()
    few_users = SignalParams(cf_model="slist", ease_min_total_users=1_000)  # falls back to co-occurrence
    signals = compute_signals(_events(histories), ids, few_users)
    assert signals.params["cf_model_used"] == "cooccurrence" and not signals.cf_reads_engagement
    # Signals saved before the option existed recorded no cf_type_weights: their rows were typed
    old = Signals(signals.item_ids, signals.cf_neighbours, signals.cf_scores, signals.trending,
                  {"cf_model_used": "slist"})
    assert not old.cf_reads_engagement
