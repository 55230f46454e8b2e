"""embrec.engine.index against a brute-force reference on real MiniLM embeddings
(tests/fixtures/pypi-5k-minilm.npz).

Modelled on hnswlib's tests/python/bindings_test_recall.py: recall@10 of the graph against exact search,
before and after save/load, and after incremental changes. Filtered recall is measured against brute force
over the allowed subset. The one graph build at default parameters is shared by the module; every mutating
test works on a copy loaded from disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embrec.domain.model import Filters
from embrec.engine.index import IndexDelta, VectorIndex, read_graph_vectors
from embrec.errors import CompatibilityError, IntegrityError, InvalidInputError, NotFoundError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pypi-5k-minilm.npz"
K = 10


class Corpus:
    """The fixture: item ids, unit vectors (n, 384) float32, held-out query vectors, synthetic metadata."""

    def __init__(self) -> None:
        with np.load(FIXTURE, allow_pickle=False) as data:
            self.ids: list[str] = [str(x) for x in data["item_ids"]]
            self.vectors = _unit(data["vectors"].astype(np.float32))
            self.queries = _unit(data["query_vectors"].astype(np.float32))
            self.encoder_id = str(data["encoder_id"])
        self.metadata = make_metadata(len(self.ids), seed=7)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_metadata(n: int, seed: int) -> list[dict[str, Any]]:
    """Seeded metadata: 100 categories of exactly n/100 items, 0-3 of 20 tags, prices (20% missing) ..."""
    rng = np.random.default_rng(seed)
    categories = rng.permutation(n) % 100
    rows = []
    for i in range(n):
        tags = sorted({f"tag{t:02d}" for t in rng.integers(0, 20, size=int(rng.integers(0, 4)))})
        rows.append(
            {
                "title": f"Item {i} — ünïcode",
                "category": f"cat{categories[i]:02d}",
                "tags": tags,
                "price": None if rng.random() < 0.2 else round(float(rng.uniform(1, 100)), 2),
                "available": bool(rng.random() < 0.9),
                "created_at": float(1.7e9 + rng.integers(0, 10**7)),
                "description": "ignored by the index",
            }
        )
    return rows


def passes(row: dict[str, Any], filters: Filters) -> bool:
    """Reference semantics of Filters on one metadata dict (independent of the vectorised implementation)."""
    if filters.categories is not None and row["category"] not in filters.categories:
        return False
    if filters.exclude_categories is not None and row["category"] in filters.exclude_categories:
        return False
    if filters.tags_any is not None and not set(row["tags"]) & filters.tags_any:
        return False
    price = row["price"]
    if filters.min_price is not None and (price is None or price < filters.min_price):
        return False
    if filters.max_price is not None and (price is None or price > filters.max_price):
        return False
    if filters.available is not None and row["available"] != filters.available:
        return False
    return filters.created_after is None or (
        row["created_at"] is not None and row["created_at"] > filters.created_after
    )


def top_ids(ids: Sequence[str], scores: np.ndarray, k: int, allowed: np.ndarray) -> list[str]:
    """Exact top ``k`` of one row of float64 ``scores`` among ``allowed``, ties by id."""
    scores = np.where(allowed, scores, -np.inf)
    top = np.argpartition(-scores, k)[: k + 1] if len(scores) > k + 1 else np.arange(len(scores))
    order = sorted((i for i in top.tolist() if allowed[i]), key=lambda i: (-scores[i], ids[i]))
    return [ids[i] for i in order[:k]]


def brute_force(
    ids: Sequence[str], vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray
) -> list[str]:
    return top_ids(ids, vectors.astype(np.float64) @ query.astype(np.float64), k, allowed)


def recall(
    index: VectorIndex,
    ids: Sequence[str],
    vectors: np.ndarray,
    queries: np.ndarray,
    allowed: np.ndarray | None = None,
    filters: Filters | None = None,
) -> float:
    allowed = np.ones(len(ids), dtype=bool) if allowed is None else allowed
    found = total = 0
    all_scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    for query, scores in zip(queries, all_scores, strict=True):
        truth = set(top_ids(ids, scores, K, allowed))
        got = [item_id for item_id, _ in index.search(query, K, filters)]
        assert len(got) == len(truth)
        found += len(truth & set(got))
        total += len(truth)
    return found / total


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


@pytest.fixture(scope="module")
def saved(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[VectorIndex, Path]:
    """The index at default parameters, built once, and the directory it was saved to."""
    index = VectorIndex.build(corpus.ids, corpus.vectors, corpus.metadata, encoder_id=corpus.encoder_id)
    directory = tmp_path_factory.mktemp("index")
    index.save(directory)
    return index, directory


@pytest.fixture
def fresh(saved: tuple[VectorIndex, Path]) -> VectorIndex:
    """A private, mutable copy of the module index."""
    return VectorIndex.load(saved[1])


# -- recall --------------------------------------------------------------------------------------------------
def test_recall_at_10_against_brute_force(saved: tuple[VectorIndex, Path], corpus: Corpus) -> None:
    index, _ = saved
    assert recall(index, corpus.ids, corpus.vectors, corpus.queries) >= 0.98


def test_save_load_keeps_recall_and_answers(saved: tuple[VectorIndex, Path], corpus: Corpus) -> None:
    index, directory = saved
    loaded = VectorIndex.load(directory, expected_encoder_id=corpus.encoder_id, expected_dim=384)
    assert recall(loaded, corpus.ids, corpus.vectors, corpus.queries) >= 0.98
    for query in corpus.queries[:20]:
        assert loaded.search(query, K) == index.search(query, K)
    assert len(loaded) == len(index) == 5000
    assert loaded.metadata(corpus.ids[3]) == index.metadata(corpus.ids[3])


def test_vectors_are_stored_once_inside_the_graph_file(
    saved: tuple[VectorIndex, Path], corpus: Corpus
) -> None:
    index, directory = saved
    from_graph = read_graph_vectors(directory / "graph.hnsw", 384, 5000)
    np.testing.assert_array_equal(from_graph, index.vectors_for(corpus.ids))
    np.testing.assert_allclose(from_graph, corpus.vectors, atol=1e-6)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["files"]) == {"graph.hnsw", "metadata.npz"}
    stored = sum(entry["size"] for entry in manifest["files"].values())
    assert stored / (5000 * 384 * 4) < 1.3  # the artifact is within 1.3x of the raw float32 vector bytes


def test_recall_after_upserts_deltas_and_tombstones(
    fresh: VectorIndex, corpus: Corpus, tmp_path: Path
) -> None:
    # Given: 150 items whose vectors change (moved onto held-out real vectors), 100 new items and 300
    # deletions, half applied directly and half through a published delta
    rng = np.random.default_rng(3)
    ids, vectors = list(corpus.ids), corpus.vectors.copy()
    moved = rng.choice(len(ids), size=150, replace=False)
    replacement = _unit(corpus.queries[:150] + 0.05 * rng.standard_normal((150, 384)).astype(np.float32))
    fresh.upsert([ids[i] for i in moved[:75]], replacement[:75], [corpus.metadata[i] for i in moved[:75]])
    new_ids = [f"new:{j}" for j in range(100)]
    new_vectors = _unit(corpus.queries[100:200] + 0.05 * rng.standard_normal((100, 384)).astype(np.float32))
    gone = [ids[i] for i in rng.choice(np.setdiff1d(np.arange(len(ids)), moved), size=300, replace=False)]
    fresh.delete(gone[:150])
    delta = IndexDelta(
        item_ids=tuple([ids[i] for i in moved[75:]] + new_ids),
        vectors=np.vstack([replacement[75:], new_vectors]),
        metadata=tuple([corpus.metadata[i] for i in moved[75:]] + make_metadata(100, seed=9)),
        deletes=tuple(gone[150:]),
        encoder_id=corpus.encoder_id,
    )
    delta.save(tmp_path / "delta")
    fresh.apply(IndexDelta.load(tmp_path / "delta", expected_encoder_id=corpus.encoder_id, expected_dim=384))
    vectors[moved] = replacement
    reference_ids = ids + new_ids
    reference = np.vstack([vectors, new_vectors])
    live = np.array([item_id not in set(gone) for item_id in reference_ids])

    # Then: counts, tombstones and recall against brute force over the live set, also after a save/load
    assert len(fresh) == 5000 + 100 - 300
    assert not any(fresh.contains(item_id) for item_id in gone)
    np.testing.assert_allclose(fresh.vectors_for([ids[moved[0]]])[0], replacement[0], atol=1e-6)
    assert recall(fresh, reference_ids, reference, corpus.queries, allowed=live) >= 0.98
    fresh.save(tmp_path / "v2")
    reloaded = VectorIndex.load(tmp_path / "v2")
    assert len(reloaded) == len(fresh)
    returned = {item_id for query in corpus.queries[:50] for item_id, _ in reloaded.search(query, 50)}
    assert returned and returned.isdisjoint(gone)  # the graph's tombstones survived the round trip
    assert recall(reloaded, reference_ids, reference, corpus.queries, allowed=live) >= 0.98
    assert set(reloaded.live_ids()) == {
        item_id for item_id, ok in zip(reference_ids, live, strict=True) if ok
    }


# -- filtered search -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("force_graph", [False, True], ids=["default-routing", "graph-path"])
@pytest.mark.parametrize("selectivity", [0.01, 0.10])
def test_filtered_recall(
    saved: tuple[VectorIndex, Path], corpus: Corpus, selectivity: float, force_graph: bool
) -> None:
    index, directory = saved
    if force_graph:  # exercise hnswlib's filtered search even where the router would go exact
        index = VectorIndex.load(directory)
        index.exact_max_items, index.exact_max_fraction = 0, 0.0
    filters = Filters(categories=frozenset(f"cat{c:02d}" for c in range(int(selectivity * 100))))
    allowed = np.array([passes(row, filters) for row in corpus.metadata])
    assert allowed.mean() == pytest.approx(selectivity)
    queries = corpus.queries[:50] if force_graph else corpus.queries
    assert recall(index, corpus.ids, corpus.vectors, queries, allowed, filters) >= 0.95


def test_every_filter_kind_matches_the_reference_semantics(
    saved: tuple[VectorIndex, Path], corpus: Corpus
) -> None:
    index, _ = saved
    cases = [
        Filters(exclude_categories=frozenset({"cat00", "cat01"})),
        Filters(tags_any=frozenset({"tag03", "tag07"})),
        Filters(min_price=20.0, max_price=40.0),
        Filters(max_price=5),
        Filters(available=False),
        Filters(created_after=1.7e9 + 9.5e6),
        Filters(categories=frozenset({"cat05", "nope"}), tags_any=frozenset({"tag01"}), available=True),
        Filters(categories=frozenset({"unknown"})),
    ]
    for filters in cases:
        expected = np.array([passes(row, filters) for row in corpus.metadata])
        np.testing.assert_array_equal(index.matches(corpus.ids, filters), expected)
        sample = np.random.default_rng(0).integers(0, len(corpus.ids), size=300)  # shuffled, with repeats
        picked = [corpus.ids[i] for i in sample]
        np.testing.assert_array_equal(index.matches([*picked, "ghost"], filters), [*expected[sample], False])
        np.testing.assert_array_equal(index._meta.mask(filters), expected)  # the whole-index path of search
        got = index.search(corpus.queries[0], K, filters)
        assert (got and expected.any()) or not got
        assert all(expected[corpus.ids.index(item_id)] for item_id, _ in got)


def test_exclude_removes_seen_items_without_losing_recall(
    saved: tuple[VectorIndex, Path], corpus: Corpus
) -> None:
    index, _ = saved
    for query in corpus.queries[:20]:
        seen = [item_id for item_id, _ in index.search(query, 25)]
        got = index.search(query, K, exclude=[*seen, "not-an-item"])
        allowed = np.array([item_id not in set(seen) for item_id in corpus.ids])
        assert not {item_id for item_id, _ in got} & set(seen)
        assert len(got) == K
        truth = brute_force(corpus.ids, corpus.vectors, query, K, allowed)
        assert len(set(truth) & {item_id for item_id, _ in got}) >= 9


@pytest.mark.parametrize("route", ["exact", "overfetch", "graph"])
def test_search_positions_answers_as_search_does_for_the_same_mask(
    saved: tuple[VectorIndex, Path], corpus: Corpus, route: str
) -> None:
    # Given: the request path's mask (filters + seen items) built once, and each of the three search routes
    index = VectorIndex.load(saved[1])
    filters = {"exact": Filters(categories=frozenset({"cat00"})), "overfetch": Filters(available=True),
               "graph": Filters(categories=frozenset(f"cat{c:02d}" for c in range(30)))}[route]
    if route == "graph":
        index.exact_max_items, index.exact_max_fraction, index.overfetch_min_selectivity = 0, 0.0, 1.1
    for query in corpus.queries[:10]:
        seen = [item_id for item_id, _ in index.search(query, 15)]
        mask = index.allowed_mask(filters, index.positions_of(seen))
        # When
        positions, scores = index.search_positions(query, K, mask)
        # Then: the same items, scores and order as search with filters and exclusions
        expected = index.search(query, K, filters, exclude=seen)
        assert index.ids_at(positions) == [item_id for item_id, _ in expected]
        np.testing.assert_allclose(scores, [score for _, score in expected])
        assert positions.dtype == np.int64 and mask[positions].all()


# -- edge cases ----------------------------------------------------------------------------------------------
def _small(n: int = 6, dim: int = 8) -> VectorIndex:
    rng = np.random.default_rng(1)
    return VectorIndex.build(
        [f"s{i}" for i in range(n)],
        rng.standard_normal((n, dim)),
        [{"title": f"t{i}", "category": "a" if i < 2 else "b"} for i in range(n)],
        encoder_id="enc-1",
    )


def test_query_scale_dtype_and_shape_do_not_change_the_answer() -> None:
    # Given one query direction as float32 (dim,), as float64 (1, dim), and scaled by tiny and huge factors
    index = _small()
    query = np.random.default_rng(3).standard_normal(8).astype(np.float32)
    expected = index.search(query, 6)
    # Then every form returns the same ids and cosine scores (the query is normalised in float64 first)
    for variant in (query.astype(np.float64).reshape(1, 8), query * 1e-30, query * 1e30, list(query)):
        got = index.search(variant, 6)  # type: ignore[arg-type]
        assert [item_id for item_id, _ in got] == [item_id for item_id, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=1e-6)
    assert all(-1.0 <= score <= 1.0 for _, score in expected)


def test_k_larger_than_live_count_returns_what_there_is() -> None:
    index = _small()
    query = np.ones(8, dtype=np.float32)
    assert len(index.search(query, 100)) == 6
    index.delete(["s0", "s3"])
    got = index.search(query, 100)
    assert len(got) == 4 and {"s0", "s3"}.isdisjoint(item_id for item_id, _ in got)
    assert [item_id for item_id, _ in index.search(query, 100, Filters(categories=frozenset({"a"})))] == [
        "s1"
    ]
    assert index.search(query, 3, exclude=index.live_ids()) == []


def test_an_empty_index_searches_saves_and_grows(tmp_path: Path) -> None:
    empty = VectorIndex.build([], np.zeros((0, 8), dtype=np.float32))
    assert len(empty) == 0 and empty.search(np.ones(8), 5) == []
    empty.save(tmp_path / "v1")
    grown = VectorIndex.load(tmp_path / "v1")
    grown.upsert(["a", "b"], np.eye(8)[:2])
    assert [item_id for item_id, _ in grown.search(np.ones(8), 5)] == ["a", "b"]  # a tie, by id
    grown.delete(["a", "b"])
    assert grown.search(np.ones(8), 5) == [] and grown.live_ids() == []


def test_ties_are_broken_by_item_id_whatever_the_insertion_order() -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    twin = base[0].copy()  # bit-identical rows: exactly equal scores for every query
    ids = [f"id{i:02d}" for i in range(40)] + ["zz-twin", "aa-twin", "mm-twin"]
    vectors = np.vstack([base, twin, twin, twin])
    answers = []
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(ids))
        index = VectorIndex.build([ids[i] for i in order], vectors[order], M=8, ef_construction=50)
        answers.append(index.search(base[0], 4))
        answers.append(index.search(base[0], 4, Filters(available=True)))  # the exact path
    assert all(answer == answers[0] for answer in answers)
    assert [item_id for item_id, _ in answers[0]] == ["aa-twin", "id00", "mm-twin", "zz-twin"]


def test_metadata_vectors_and_membership() -> None:
    index = _small()
    assert index.metadata("s1") == {
        "title": "t1",
        "category": "a",
        "tags": [],
        "price": None,
        "available": True,
        "created_at": None,
    }
    assert index.dim == 8 and index.encoder_id == "enc-1" and index.contains("s2")
    vectors = index.vectors_for(["s2", "s0"])
    assert vectors.shape == (2, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert index.delete(["s2", "s2", "unknown"]) == 1 and index.delete(["s2"]) == 0
    with pytest.raises(NotFoundError):
        index.vectors_for(["s2"])
    with pytest.raises(NotFoundError):
        index.metadata("unknown")
    np.testing.assert_array_equal(
        index.matches(["s0", "s2", "x", "s4"], Filters(categories=frozenset({"b"}))),
        [False, False, False, True],
    )


@pytest.mark.parametrize(
    "bad",
    [np.full((1, 8), np.nan), np.full((1, 8), np.inf), np.zeros((1, 8)), np.ones((1, 7)), np.ones(8)],
    ids=["nan", "inf", "zero", "wrong-dim", "1-d"],
)
def test_bad_vectors_are_rejected(bad: np.ndarray) -> None:
    index = _small()
    with pytest.raises(InvalidInputError):
        index.upsert(["x"], bad)
    with pytest.raises(InvalidInputError):
        VectorIndex.build(["x"], bad if bad.ndim == 2 and bad.shape[1] == 8 else np.ones(8))
    if bad.ndim == 2:
        with pytest.raises(InvalidInputError):
            index.search(bad[0], 3)
    assert len(index) == 6 and not index.contains("x")


def test_bad_arguments_are_rejected() -> None:
    index = _small()
    with pytest.raises(InvalidInputError):
        index.search(np.ones(8), 0)
    with pytest.raises(InvalidInputError):
        index.upsert(["a", "a"], np.ones((2, 8)))
    with pytest.raises(InvalidInputError):
        index.upsert(["a"], np.ones((1, 8)), [{"tags": "not-a-list"}])
    with pytest.raises(InvalidInputError):
        Filters(min_price=10, max_price=5)
    with pytest.raises(InvalidInputError):
        IndexDelta(("a",), np.ones((1, 8)), deletes=("a",))


# -- artifacts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["graph.hnsw", "metadata.npz"])
def test_a_flipped_byte_is_an_integrity_error(tmp_path: Path, name: str) -> None:
    _small().save(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        VectorIndex.load(tmp_path)


def test_mismatched_dim_encoder_or_library_is_a_compatibility_error(tmp_path: Path) -> None:
    manifest = _small().save(tmp_path)
    assert manifest["library"] == "chroma-hnswlib" and manifest["space"] == "ip" and manifest["count"] == 6
    with pytest.raises(CompatibilityError):
        VectorIndex.load(tmp_path, expected_dim=384)
    with pytest.raises(CompatibilityError):
        VectorIndex.load(tmp_path, expected_encoder_id="enc-2")
    assert len(VectorIndex.load(tmp_path, expected_encoder_id="enc-1", expected_dim=8)) == 6
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "library_version": "0.8.0"}))
    with pytest.raises(CompatibilityError):
        VectorIndex.load(tmp_path)


def test_delta_round_trip_integrity_and_compatibility(tmp_path: Path) -> None:
    index = _small()
    delta = IndexDelta(("s1", "new"), np.ones((2, 8)), ({"title": "T", "tags": ["x"]}, {}), ("s5",), "enc-1")
    delta.save(tmp_path / "d")
    loaded = IndexDelta.load(tmp_path / "d")
    assert (
        loaded.item_ids == ("s1", "new")
        and loaded.deletes == ("s5",)
        and loaded.metadata[0]["tags"] == ("x",)
    )
    index.apply(loaded)
    assert len(index) == 6 and index.metadata("s1")["title"] == "T" and not index.contains("s5")
    with pytest.raises(CompatibilityError):
        index.apply(IndexDelta(("q",), np.ones((1, 8)), encoder_id="enc-2"))
    with pytest.raises(CompatibilityError):
        index.apply(IndexDelta(("q",), np.ones((1, 4)), encoder_id="enc-1"))
    with pytest.raises(CompatibilityError):
        IndexDelta.load(tmp_path / "d", expected_encoder_id="enc-2")
    path = tmp_path / "d" / "delta.npz"
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(IntegrityError):
        IndexDelta.load(tmp_path / "d")
