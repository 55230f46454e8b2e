"""Hypothesis properties of VectorIndex.search on a small seeded index (both the exact and the graph path).

Whatever the query, k, filters, exclusions and tombstones: never an excluded, filtered-out or deleted item;
never more than k; exactly min(k, allowed) results; scores non-increasing, ties ordered by item id; scores
are the cosine similarity; and the exact path equals brute force.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embrec.domain.model import Filters
from embrec.engine.index import VectorIndex

N, DIM = 300, 16
CATEGORIES = ["books", "games", "music", "tools", ""]
TAGS = [f"t{i}" for i in range(8)]


def _corpus() -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((6, DIM))
    vectors = centers[rng.integers(0, 6, N)] + 0.4 * rng.standard_normal((N, DIM))
    vectors[200:210] = vectors[199]  # exact duplicates: ties must be ordered by id
    ids = [f"item-{(i * 7919) % N:03d}" for i in range(N)]  # ids not in insertion order
    metadata = [
        {
            "title": f"title {i}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "tags": [TAGS[j] for j in range(len(TAGS)) if ((i >> j) & 1 and j < 4) or (i + j) % 11 == 0],
            "price": None if i % 9 == 0 else float(i % 50),
            "available": i % 4 != 0,
            "created_at": None if i % 13 == 0 else float(1000 + i),
        }
        for i in range(N)
    ]
    return ids, (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), metadata


IDS, VECTORS, METADATA = _corpus()
DELETED = frozenset(IDS[::17])


@pytest.fixture(scope="module")
def index() -> VectorIndex:
    built = VectorIndex.build(IDS, VECTORS, METADATA, M=8, ef_construction=64, ef_search=32)
    built.delete(sorted(DELETED))
    return built


def _passes(row: dict[str, Any], f: Filters) -> bool:
    price, created = row["price"], row["created_at"]
    return (
        (f.categories is None or row["category"] in f.categories)
        and (f.exclude_categories is None or row["category"] not in f.exclude_categories)
        and (f.tags_any is None or bool(set(row["tags"]) & f.tags_any))
        and (f.min_price is None or (price is not None and price >= f.min_price))
        and (f.max_price is None or (price is not None and price <= f.max_price))
        and (f.available is None or row["available"] == f.available)
        and (f.created_after is None or (created is not None and created > f.created_after))
    )


def _optional_set(values: list[str]) -> st.SearchStrategy[frozenset[str] | None]:
    return st.none() | st.frozensets(st.sampled_from(values), max_size=3)


filters_strategy = st.builds(
    Filters,
    categories=_optional_set([*CATEGORIES, "unknown"]),
    exclude_categories=_optional_set(CATEGORIES),
    tags_any=_optional_set([*TAGS, "unknown"]),
    min_price=st.none() | st.floats(0, 30),
    max_price=st.none() | st.floats(30, 60),
    available=st.none() | st.booleans(),
    created_after=st.none() | st.floats(900, 1300),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query_seed=st.integers(0, 2**32 - 1),
    near_item=st.none() | st.integers(0, N - 1),
    k=st.integers(1, 60),
    filters=st.none() | filters_strategy,
    exclude=st.lists(st.sampled_from([*IDS, "ghost"]), max_size=40),
    graph_path=st.booleans(),
)
def test_search_properties(
    index: VectorIndex,
    query_seed: int,
    near_item: int | None,
    k: int,
    filters: Filters | None,
    exclude: list[str],
    graph_path: bool,
) -> None:
    rng = np.random.default_rng(query_seed)
    query = rng.standard_normal(DIM).astype(np.float32)
    if near_item is not None:  # queries near real items hit the duplicate/tie region too
        query = VECTORS[near_item] + 0.05 * query
    index.exact_max_items, index.exact_max_fraction = (0, 0.0) if graph_path else (4096, 0.02)

    got = index.search(query, k, filters, exclude)

    allowed = {
        item_id
        for item_id, row in zip(IDS, METADATA, strict=True)
        if item_id not in DELETED and item_id not in exclude and (filters is None or _passes(row, filters))
    }
    ids = [item_id for item_id, _ in got]
    scores = [score for _, score in got]
    assert len(ids) == len(set(ids)) == min(k, len(allowed))
    assert set(ids) <= allowed
    assert all(a[1] > b[1] or (a[1] == b[1] and a[0] < b[0]) for a, b in itertools.pairwise(got)), (
        "scores must be non-increasing with ties ordered by id"
    )
    unit = query.astype(np.float64) / np.linalg.norm(query.astype(np.float64))
    position = {item_id: i for i, item_id in enumerate(IDS)}
    expected_scores = [float(VECTORS[position[i]].astype(np.float64) @ unit) for i in ids]
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
    restricted = (filters is not None and not filters.is_empty()) or any(
        item_id in IDS and item_id not in DELETED for item_id in exclude
    )
    if restricted and not graph_path:  # small allowed set: the router searched exactly
        brute = sorted(allowed, key=lambda item_id: (-float(VECTORS[position[item_id]] @ unit), item_id))
        best = [float(VECTORS[position[i]] @ unit) for i in brute[: len(ids)]]
        np.testing.assert_allclose(scores, best, atol=1e-6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query_seed=st.integers(0, 2**32 - 1),
    near_item=st.none() | st.integers(0, N - 1),
    k=st.integers(1, 60),
    among=st.sets(st.integers(0, N - 1), max_size=120),
    exclude=st.lists(st.sampled_from(IDS), max_size=40),
    over_the_block_cap=st.booleans(),
)
def test_search_among_equals_the_masked_search(
    index: VectorIndex,
    query_seed: int,
    near_item: int | None,
    k: int,
    among: set[int],
    exclude: list[str],
    over_the_block_cap: bool,
) -> None:
    # Given: a set of positions (the duplicates' tie region included), a request's allowed mask
    rng = np.random.default_rng(query_seed)
    query = rng.standard_normal(DIM).astype(np.float32)
    if near_item is not None:
        query = VECTORS[near_item] + 0.05 * query
    index.exact_max_items, index.exact_max_fraction = (0 if over_the_block_cap else 4096, 0.02)
    positions = np.asarray(sorted(among), dtype=np.int64)
    allowed = index.allowed_mask(None, index.positions_of(exclude))
    mask = np.zeros(allowed.shape[0], dtype=bool)
    mask[positions] = allowed[positions]
    # When: the same question is asked among the positions, twice (the second reads the kept block)
    first = index.search_among(query, k, positions, allowed)
    again = index.search_among(query, k, positions, allowed)
    # Then: the masked search's answer, positions and scores, in order
    expected = index.search_positions(query, k, mask) if mask.any() else (np.zeros(0, np.int64), np.zeros(0))
    for got in (first, again):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_search_among_keeps_one_block_until_asked_for_another(index: VectorIndex) -> None:
    index.exact_max_items = 4096
    allowed = index.allowed_mask(None)
    query = VECTORS[3]
    first, second = np.arange(10, 60, dtype=np.int64), np.arange(100, 130, dtype=np.int64)
    index.search_among(query, 5, first, allowed)
    block = index._block
    index.search_among(query, 5, first.copy(), allowed)
    assert index._block is block  # the same positions: the same block, not gathered again
    found = index.search_among(query, 5, second, allowed)[0]
    assert index._block is not block and set(found.tolist()) <= set(second.tolist())
