"""ANN vs exact: ``python -m bench ann``.

recall@10 and single-query latency (one thread) of hnswlib against exact numpy search (float32 matrix-vector
product + argpartition) on the same vectors, in the same process:

- 100k real: the PyPI summary MiniLM vectors; the last 1,000 rows are held out as queries, 99,000 indexed.
  The graph is the product's (``VectorIndex.build`` defaults); the ef sweep calls its hnswlib graph directly.
- a re-ranking variant: HNSW over the top-D principal directions (uncentred second moment, so inner products
  keep the mean direction), a short candidate list re-ranked exactly in 384-d.
- filtered search (``VectorIndex.search`` with ``Filters``) at 10% and 1% selectivity, recall against exact
  search over the allowed items.
- 1M synthetic: vectors drawn from N(mean, cov) of the real ones and normalised (``BENCH_ANN_LARGE`` items,
  default 1,000,000; ``0`` skips), built with a smaller ef_construction to fit the time budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import hnswlib
import numpy as np

from bench._data import machine_line, pypi_vectors, synthetic_like
from embrec.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, Filters, VectorIndex

__all__ = ["exact_top", "main", "recall_at"]

K = 10
SEED = 5


def exact_top(base: np.ndarray, queries: np.ndarray, k: int = K, chunk: int = 256) -> np.ndarray:
    """int64 (q, k) exact top-k rows of ``base`` (n, d) by inner product for ``queries`` (q, d), batched."""
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def recall_at(found: list[np.ndarray] | np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean |found_i ∩ truth_i| / k."""
    hits = sum(
        len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    )
    return hits / (k * len(truth))


def _timed(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Results and mean single-query latency in ms (one warm-up pass over 20 queries first)."""
    for q in queries[:20]:
        search(q)
    found = []
    started = time.perf_counter()
    for q in queries:
        found.append(search(q))
    return found, (time.perf_counter() - started) * 1e3 / len(queries)


def _exact_single(base: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        scores = base @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    return search


def _graph_single(graph: hnswlib.Index) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        labels, _ = graph.knn_query(q.reshape(1, -1), k=K, num_threads=1)
        return labels[0]

    return search


def _rerank_single(
    graph: hnswlib.Index, projection: np.ndarray, base: np.ndarray, shortlist: int
) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        labels, _ = graph.knn_query((q @ projection).reshape(1, -1), k=shortlist, num_threads=1)
        cands = labels[0].astype(np.int64)
        scores = base[cands] @ q
        return cands[np.argsort(-scores)[:K]]

    return search


def _line(label: str, recall: float, ms: float, exact_ms: float) -> None:
    print(f"  {label:44s} recall@10 {recall:.3f}  {ms:7.3f} ms/query  x{exact_ms / ms:6.1f} exact throughput")


def _sweep_real(base: np.ndarray, queries: np.ndarray) -> None:
    n = base.shape[0]
    truth = exact_top(base, queries)
    found, exact_ms = _timed(_exact_single(base), queries)
    print(f"100k real ({n:,} indexed, {len(queries)} held-out queries, one thread per query)")
    _line("exact numpy (baseline)", recall_at(found, truth), exact_ms, exact_ms)
    rng = np.random.default_rng(SEED)
    cats = np.asarray(rng.integers(0, 100, size=n), dtype=np.int64)
    metadata = [{"title": "", "category": f"c{c:02d}"} for c in cats]
    ids = [f"p{i}" for i in range(n)]
    started = time.perf_counter()
    index = VectorIndex.build(ids, base, metadata, encoder_id="bench")
    build_s = time.perf_counter() - started
    print(
        f"  build VectorIndex M={DEFAULT_M} ef_construction={DEFAULT_EF_CONSTRUCTION}: {build_s:.1f} s "
        f"({n / build_s:,.0f} items/s, all cores)"
    )
    graph = index._graph  # the product's graph: the sweep measures the library call VectorIndex makes
    for ef in (32, 48, 64, 96, 128, 192):
        graph.set_ef(ef)
        found, ms = _timed(_graph_single(graph), queries)
        _line(f"hnswlib M={DEFAULT_M} ef={ef}", recall_at(found, truth), ms, exact_ms)
    position = {item_id: i for i, item_id in enumerate(ids)}
    found, ms = _timed(
        lambda q: np.array([position[i] for i, _ in index.search(q, K)], dtype=np.int64), queries
    )
    _line(
        f"VectorIndex.search (ef_search={index.ef_search}, end to end)", recall_at(found, truth), ms, exact_ms
    )

    # Re-ranking: HNSW on D principal directions, exact re-rank of a short list.
    second_moment = (base.T.astype(np.float64) @ base.astype(np.float64)) / n
    eigval, eigvec = np.linalg.eigh(second_moment)
    order = np.argsort(eigval)[::-1]
    for dims in (int(d) for d in os.environ.get("BENCH_ANN_PCA", "96,128").split(",") if d):
        projection = np.ascontiguousarray(eigvec[:, order[:dims]].astype(np.float32))
        kept = float(eigval[order[:dims]].sum() / eigval.sum())
        projected = np.ascontiguousarray(base @ projection)
        started = time.perf_counter()
        small = hnswlib.Index(space="ip", dim=dims)
        small.init_index(
            max_elements=n, M=DEFAULT_M, ef_construction=DEFAULT_EF_CONSTRUCTION, random_seed=100
        )
        small.add_items(projected, np.arange(n))
        build = time.perf_counter() - started
        print(f"  PCA-{dims} graph ({kept:.1%} of the energy) built in {build:.1f} s")
        for ef, shortlist in ((48, 32), (64, 40), (96, 50)):
            small.set_ef(ef)
            found, ms = _timed(_rerank_single(small, projection, base, shortlist), queries)
            _line(
                f"PCA-{dims} hnswlib ef={ef} + exact re-rank of {shortlist}",
                recall_at(found, truth),
                ms,
                exact_ms,
            )
    _filtered(index, base, queries, cats)


def _filtered(index: VectorIndex, base: np.ndarray, queries: np.ndarray, cats: np.ndarray) -> None:
    cases = (
        ("10%", Filters(categories=frozenset(f"c{c:02d}" for c in range(10))), cats < 10),
        ("1%", Filters(categories=frozenset({"c00"})), cats == 0),
    )
    position = {f"p{i}": i for i in range(base.shape[0])}
    for label, filters, mask in cases:
        allowed = np.flatnonzero(mask)
        truth = allowed[exact_top(base[allowed], queries)]

        def ours(q: np.ndarray, f: Filters = filters) -> np.ndarray:
            return np.array([position[i] for i, _ in index.search(q, K, f)], dtype=np.int64)

        def flat(q: np.ndarray, m: np.ndarray = mask) -> np.ndarray:
            return _masked_exact(base, m, q)

        found, ms = _timed(ours, queries)
        _, exact_ms = _timed(flat, queries)
        path = (
            "exact path"
            if (
                len(allowed) <= index.exact_max_items
                or len(allowed) <= index.exact_max_fraction * base.shape[0]
            )
            else "filtered graph"
        )
        print(
            f"  filtered {label:>3s} ({len(allowed):,} allowed, {path}): VectorIndex.search recall@10 "
            f"{recall_at(found, truth):.3f} {ms:.3f} ms; exact masked numpy {exact_ms:.3f} ms "
            f"(x{exact_ms / ms:.1f})"
        )


def _masked_exact(base: np.ndarray, mask: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Baseline filtered search: score everything, mask, top-k (what a flat scan does)."""
    scores = np.where(mask, base @ q, -np.inf)
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def _large(real: np.ndarray, n: int) -> None:
    ef_construction = int(os.environ.get("BENCH_ANN_LARGE_EFC", "64"))
    started = time.perf_counter()
    data = synthetic_like(real, n + 300, seed=SEED)
    base, queries = data[:n], data[n:]
    print(f"{n:,} synthetic (covariance of the real vectors; drawn in {time.perf_counter() - started:.0f} s)")
    truth = exact_top(base, queries)
    found, exact_ms = _timed(_exact_single(base), queries[:100])
    _line("exact numpy (baseline, 100 queries)", recall_at(found, truth[:100]), exact_ms, exact_ms)
    graph = hnswlib.Index(space="ip", dim=base.shape[1])
    graph.init_index(max_elements=n, M=DEFAULT_M, ef_construction=ef_construction, random_seed=100)
    started = time.perf_counter()
    graph.add_items(base, np.arange(n))
    build_s = time.perf_counter() - started
    print(
        f"  build M={DEFAULT_M} ef_construction={ef_construction}: {build_s:.0f} s "
        f"({n / build_s:,.0f} items/s)"
    )
    for ef in (64, 128, 256):
        graph.set_ef(ef)
        found, ms = _timed(_graph_single(graph), queries)
        _line(f"hnswlib M={DEFAULT_M} efc={ef_construction} ef={ef}", recall_at(found, truth), ms, exact_ms)


def main() -> None:
    print(machine_line())
    vectors, encoder_id = pypi_vectors()
    print(f"vectors: {vectors.shape[0]:,} PyPI summaries, encoder {encoder_id}")
    base, queries = vectors[:-1000], vectors[-1000:]
    n_queries = int(os.environ.get("BENCH_ANN_QUERIES", "500"))
    _sweep_real(np.ascontiguousarray(base), np.ascontiguousarray(queries[:n_queries]))
    large = int(os.environ.get("BENCH_ANN_LARGE", "1000000"))
    if large:
        _large(base, large)


if __name__ == "__main__":
    main()
