"""ANN vs exact: ``python -m bench ann``.

recall@10 and single-query latency of hnswlib against exact numpy search (float32 matrix-vector product +
argpartition, numpy's BLAS with its own threads) on the same vectors, in the same process:

- 100k real: the PyPI summary MiniLM vectors; the last 1,000 rows are held out as queries, 99,000 indexed.
  The product graph (``VectorIndex.build`` defaults) with an ef sweep on its hnswlib graph (the library call
  ``VectorIndex`` makes), ``VectorIndex.search`` end to end, and other graph parameters (``BENCH_ANN_M``,
  default 12,24: M values built with ef_construction 200 beside the product's M=16).
- a re-ranking variant: HNSW over the top-D principal directions (``BENCH_ANN_PCA``, default 192,256;
  uncentred second moment, so inner products keep the mean direction), a short candidate list re-ranked
  exactly on the 384-d vectors.
- filtered search (``VectorIndex.search`` with ``Filters``) at 10% and 1% selectivity, recall against exact
  search over the allowed items.
- 1M synthetic (``BENCH_ANN_LARGE`` items, default 1,000,000; ``0`` skips), built with ef_construction
  ``BENCH_ANN_LARGE_EFC`` (default 100) to fit the time budget; build time, resident memory, exact numpy at
  1M. ``BENCH_ANN_LARGE_KIND=local`` (default): :func:`bench._data.synthetic_local_like`, real vectors moved
  by covariance-shaped noise, queried with the real held-out queries; ``gaussian``:
  :func:`bench._data.synthetic_like`, one Gaussian with the real covariance (no local structure: far harder
  for HNSW than real data, see BENCHMARKS.md).
- another hnswlib build (``BENCH_ANN_ALT_HNSWLIB``: a directory holding a locally built ``hnswlib`` extension,
  e.g. the x86-64-v3 build described in BENCHMARKS.md): the product graph is saved and a subprocess with that
  directory first on ``sys.path`` repeats the exact baseline and the ef sweep on the same graph and queries.

Latency is wall clock per query, one thread for hnswlib; every figure (ours and the baseline alike) is the
best of ``BENCH_ANN_ROUNDS`` (default 3) passes over the queries, because the 2 cores are shared with other
work and a pass that lost the CPU measures the neighbours, not the search. Each ratio divides by the exact
baseline re-timed just before it (first 100 queries), so the load a figure saw is the load its baseline saw.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

from bench._data import ROOT, machine_line, pypi_vectors, synthetic_like, synthetic_local_like
from embrec.domain.model import Filters
from embrec.engine.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, VectorIndex, library_version

__all__ = ["exact_top", "hnswlib_build", "main", "recall_at"]

K = 10
SEED = 5
EF_SWEEP = (32, 48, 64, 80, 96, 128, 192)


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


def hnswlib_build() -> str:
    """Which hnswlib extension this process imported, and whether its code uses AVX registers."""
    path = Path(hnswlib.__file__).resolve()
    where = "installed wheel" if "site-packages" in path.parts else f"local build {path.parent}"
    isa = "objdump not installed"
    if shutil.which("objdump"):
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True, check=False
        ).stdout
        isa = "AVX-512" if "%zmm" in listing else "AVX" if "%ymm" in listing else "SSE only, no AVX"
    return f"chroma-hnswlib {library_version()} ({where}; {isa})"


def _rounds() -> int:
    return max(1, int(os.environ.get("BENCH_ANN_ROUNDS", "3")))


def _timed(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Results and single-query latency in ms: the best of ``_rounds()`` passes (20-query warm-up first)."""
    for q in queries[:20]:
        search(q)
    best = float("inf")
    found: list[np.ndarray] = []
    for _ in range(_rounds()):
        found = []
        started = time.perf_counter()
        for q in queries:
            found.append(search(q))
        best = min(best, (time.perf_counter() - started) * 1e3 / len(queries))
    return found, best


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


class _Exact:
    """The exact baseline, re-timed next to every figure (first 100 queries, best of rounds): the shared
    cores' load moves during a run, and a ratio is only fair against a baseline timed under the same load."""

    def __init__(self, base: np.ndarray, queries: np.ndarray) -> None:
        self._search = _exact_single(base)
        self._queries = queries[:100]

    def __call__(self) -> float:
        return _timed(self._search, self._queries)[1]


def _line(label: str, recall: float, ms: float, exact: Callable[[], float]) -> None:
    exact_ms = exact()
    print(
        f"  {label:52s} recall@10 {recall:.3f}  {ms:7.3f} ms/query  exact {exact_ms:7.3f} ms  "
        f"x{exact_ms / ms:6.1f} exact throughput",
        flush=True,
    )


def _ef_sweep(
    graph: hnswlib.Index, label: str, queries: np.ndarray, truth: np.ndarray, exact: Callable[[], float]
) -> None:
    for ef in EF_SWEEP:
        graph.set_ef(ef)
        found, ms = _timed(_graph_single(graph), queries)
        _line(f"{label} ef={ef}", recall_at(found, truth), ms, exact)


def _raw_graph(data: np.ndarray, M: int, ef_construction: int) -> tuple[hnswlib.Index, float]:
    """An hnswlib graph over ``data`` (labels = rows) and its build time in s (all cores)."""
    graph = hnswlib.Index(space="ip", dim=data.shape[1])
    graph.init_index(max_elements=data.shape[0], M=M, ef_construction=ef_construction, random_seed=100)
    started = time.perf_counter()
    graph.add_items(data, np.arange(data.shape[0]))
    return graph, time.perf_counter() - started


def _sweep_real(base: np.ndarray, queries: np.ndarray) -> None:
    n = base.shape[0]
    truth = exact_top(base, queries)
    found, exact_ms = _timed(_exact_single(base), queries)
    exact = _Exact(base, queries)
    print(f"100k real ({n:,} indexed, {len(queries)} held-out queries, one thread per query)")
    _line("exact numpy (baseline)", recall_at(found, truth), exact_ms, lambda: exact_ms)
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
    graph = index.graph  # the product's graph: the sweep measures the library call VectorIndex makes
    _ef_sweep(graph, f"hnswlib M={DEFAULT_M}", queries, truth, exact)
    alt = os.environ.get("BENCH_ANN_ALT_HNSWLIB")
    if alt:
        _alt_build(graph, Path(alt), len(queries))
    position = {item_id: i for i, item_id in enumerate(ids)}
    seen = ids[:: n // 200][:200]  # a user's 200 interactions: what the request path excludes
    unseen = np.ones(n, dtype=bool)
    unseen[[position[i] for i in seen]] = False
    truth_unseen = np.flatnonzero(unseen)[exact_top(base[unseen], queries)]
    default_ef = index.ef_search
    for ef in sorted({96, default_ef}):
        index.ef_search = ef
        for label, exclude, expected in (("", (), truth), (", 200 seen excluded", seen, truth_unseen)):

            def ours(q: np.ndarray, e: list[str] | tuple[()] = exclude) -> np.ndarray:
                return np.array([position[i] for i, _ in index.search(q, K, exclude=e)], dtype=np.int64)

            found, ms = _timed(ours, queries)
            _line(f"VectorIndex.search ef_search={ef}{label}", recall_at(found, expected), ms, exact)
    index.ef_search = default_ef
    for M in (int(m) for m in os.environ.get("BENCH_ANN_M", "12,24").split(",") if m):
        other, build_s = _raw_graph(base, M, DEFAULT_EF_CONSTRUCTION)
        print(f"  hnswlib M={M} ef_construction={DEFAULT_EF_CONSTRUCTION} built in {build_s:.1f} s")
        _ef_sweep(other, f"hnswlib M={M}", queries, truth, exact)
        del other
    _pca_rerank(base, queries, truth, exact)
    _filtered(index, base, queries, cats)


def _pca_rerank(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, exact: Callable[[], float]) -> None:
    """HNSW on D principal directions, exact re-rank of a short list on the full vectors."""
    n = base.shape[0]
    second_moment = (base.T.astype(np.float64) @ base.astype(np.float64)) / n
    eigval, eigvec = np.linalg.eigh(second_moment)
    order = np.argsort(eigval)[::-1]
    for dims in (int(d) for d in os.environ.get("BENCH_ANN_PCA", "192,256").split(",") if d):
        projection = np.ascontiguousarray(eigvec[:, order[:dims]].astype(np.float32))
        kept = float(eigval[order[:dims]].sum() / eigval.sum())
        small, build_s = _raw_graph(
            np.ascontiguousarray(base @ projection), DEFAULT_M, DEFAULT_EF_CONSTRUCTION
        )
        print(f"  PCA-{dims} graph ({kept:.1%} of the energy) built in {build_s:.1f} s")
        for ef, shortlist in ((48, 32), (64, 40), (64, 64), (96, 50), (96, 96)):
            small.set_ef(ef)
            found, ms = _timed(_rerank_single(small, projection, base, shortlist), queries)
            _line(
                f"PCA-{dims} hnswlib ef={ef} + exact re-rank of {shortlist}",
                recall_at(found, truth),
                ms,
                exact,
            )


def _alt_build(graph: hnswlib.Index, directory: Path, n_queries: int) -> None:
    """Repeat the exact baseline and the ef sweep on the same graph with another hnswlib build."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.hnsw"
        graph.save_index(str(path))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(directory), str(ROOT)]))
        env["BENCH_ANN_QUERIES"] = str(n_queries)
        subprocess.run([sys.executable, "-m", "bench.ann", "--graph", str(path)], env=env, check=True)


def _graph_only(path: Path) -> None:
    """Subprocess side of :func:`_alt_build`: load ``path`` with whichever hnswlib is first on sys.path."""
    base, queries = _split()
    truth = exact_top(base, queries)
    found, exact_ms = _timed(_exact_single(base), queries)
    exact = _Exact(base, queries)
    print(f"  -- same graph and queries, {hnswlib_build()}:")
    _line("exact numpy (baseline, this process)", recall_at(found, truth), exact_ms, lambda: exact_ms)
    graph = hnswlib.Index(space="ip", dim=base.shape[1])
    graph.load_index(str(path), max_elements=base.shape[0])
    _ef_sweep(graph, f"hnswlib M={DEFAULT_M} (this build)", queries, truth, exact)


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
            f"(x{exact_ms / ms:.1f})",
            flush=True,
        )


def _masked_exact(base: np.ndarray, mask: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Baseline filtered search: score everything, mask, top-k (what a flat scan does)."""
    scores = np.where(mask, base @ q, -np.inf)
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _large(real: np.ndarray, real_queries: np.ndarray, n: int) -> None:
    ef_construction = int(os.environ.get("BENCH_ANN_LARGE_EFC", "100"))
    kind = os.environ.get("BENCH_ANN_LARGE_KIND", "local")
    started = time.perf_counter()
    if kind == "gaussian":  # one Gaussian with the real covariance; queries drawn the same way
        data = synthetic_like(real, n + 300, seed=SEED)
        base, queries = data[:n], data[n:]
        what = "one Gaussian with the real vectors' covariance, drawn queries"
    else:  # smoothed bootstrap of the real vectors; the real held-out queries
        base, queries = synthetic_local_like(real, n, seed=SEED), real_queries[:300]
        what = "real vectors + covariance-shaped noise at the nearest-neighbour scale, real held-out queries"
    print(
        f"{n:,} synthetic ({what}; drawn in {time.perf_counter() - started:.0f} s; "
        f"vectors {base.nbytes / 1e6:,.0f} MB)",
        flush=True,
    )
    truth = exact_top(base, queries)
    exact = _Exact(base, queries)
    found, exact_ms = _timed(_exact_single(base), queries[:100])
    _line("exact numpy (baseline, 100 queries)", recall_at(found, truth[:100]), exact_ms, lambda: exact_ms)
    before = _rss_mb()
    graph, build_s = _raw_graph(base, DEFAULT_M, ef_construction)
    graph_mb = _rss_mb() - before
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(
        f"  build M={DEFAULT_M} ef_construction={ef_construction}: {build_s:.0f} s "
        f"({n / build_s:,.0f} items/s, all cores); graph {graph_mb:,.0f} MB resident "
        f"({graph_mb * 1e6 / n:,.0f} bytes/item); process peak RSS {peak_mb:,.0f} MB",
        flush=True,
    )
    for ef in (96, 128, 192, 256, 384, 512):
        graph.set_ef(ef)
        found, ms = _timed(_graph_single(graph), queries)
        _line(f"hnswlib M={DEFAULT_M} efc={ef_construction} ef={ef}", recall_at(found, truth), ms, exact)


def _split() -> tuple[np.ndarray, np.ndarray]:
    """(base, queries): 99,000 indexed PyPI vectors and the first BENCH_ANN_QUERIES of the last 1,000."""
    vectors, _ = pypi_vectors()
    n_queries = int(os.environ.get("BENCH_ANN_QUERIES", "500"))
    return np.ascontiguousarray(vectors[:-1000]), np.ascontiguousarray(vectors[-1000:][:n_queries])


def main() -> None:
    print(machine_line())
    print(f"hnswlib: {hnswlib_build()}")
    _, encoder_id = pypi_vectors()
    base, queries = _split()
    print(f"vectors: {base.shape[0] + 1000:,} PyPI summaries, encoder {encoder_id}")
    _sweep_real(base, queries)
    large = int(os.environ.get("BENCH_ANN_LARGE", "1000000"))
    if large:
        _large(base, queries, large)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--graph"]:
        _graph_only(Path(sys.argv[2]))
    else:
        main()
