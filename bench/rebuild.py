"""Rebuild: ``python -m bench rebuild``.

Ours: ``rebuild.build_version`` (index + CF/trending signals + save, as the rebuild function runs it after its
DynamoDB scan) over ``BENCH_REBUILD_ITEMS`` (default 100,000) PyPI summary vectors and 90k synthetic events,
in a fresh subprocess so its peak resident memory (VmHWM) is its own. Baseline, also in a fresh
subprocess: hnswlib ``add_items`` alone on the same vectors with the same parameters (the library floor).
The built version is kept under .cache/bench/ for ``bench cold_start``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench._data import (
    CATEGORIES,
    ROOT,
    machine_line,
    peak_rss_mb,
    pypi_texts,
    pypi_vectors,
    synthetic_interactions,
    version_dir,
)

__all__ = ["build_bench_version", "main"]

NOW = 1_790_000_000.0


def build_bench_version(
    vectors: np.ndarray, texts: list[str], encoder_id: str, target: Path
) -> dict[str, float]:
    """Build a version of ``vectors`` (n, dim) into ``target`` with build_version; timings in seconds."""
    from embrec.app.build import build_version
    from embrec.domain.model import StoredItem

    n = vectors.shape[0]
    ids = [f"pypi-{i}" for i in range(n)]
    items = [
        StoredItem(
            ids[i],
            {"item_id": ids[i], "title": texts[i][:80], "category": CATEGORIES[i % 20]},
            "",
            vectors[i],
        )
        for i in range(n)
    ]
    events = synthetic_interactions(ids)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    built = build_version(items, events, staging, encoder_id=encoder_id, now=NOW)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    peak = peak_rss_mb()
    return {"seconds": elapsed, "items": built.items, "rss_before_mb": rss_before, "peak_rss_mb": peak}


def _child(mode: str, n: int) -> None:
    vectors, encoder_id = pypi_vectors()
    vectors = np.ascontiguousarray(vectors[:n])
    if mode == "ours":
        result = build_bench_version(vectors, pypi_texts()[:n], encoder_id, version_dir(n, encoder_id))
    else:
        import hnswlib

        from embrec.engine.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M

        rss_before = peak_rss_mb()
        started = time.perf_counter()
        graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
        graph.init_index(
            max_elements=n, M=DEFAULT_M, ef_construction=DEFAULT_EF_CONSTRUCTION, random_seed=100
        )
        graph.add_items(vectors, np.arange(n))
        result = {
            "seconds": time.perf_counter() - started,
            "items": n,
            "rss_before_mb": rss_before,
            "peak_rss_mb": peak_rss_mb(),
        }
    print(json.dumps(result))


def _run_child(mode: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.rebuild", "--child", mode, str(n)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    print(machine_line())
    n = int(os.environ.get("BENCH_REBUILD_ITEMS", "100000"))
    pypi_vectors()  # encode/cache before timing anything
    base = _run_child("hnswlib", n)
    ours = _run_child("ours", n)
    for label, r in (
        ("ours  build_version (index+signals+save)", ours),
        ("base  hnswlib add_items alone", base),
    ):
        print(
            f"  {label:42s} {r['seconds']:6.1f} s  {r['items'] / r['seconds']:8,.0f} items/s  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB (vectors loaded: {r['rss_before_mb']:.0f} MB)"
        )
    print(
        f"  ratio time ours/base x{ours['seconds'] / base['seconds']:.2f}; goal: 100k rebuild < 60 s "
        f"({'met' if ours['seconds'] < 60 else 'missed'} at {n:,} items)"
    )
    per_item_kb = (ours["peak_rss_mb"] - ours["rss_before_mb"]) * 1024 / n
    print(f"  peak memory per item above the process floor: {per_item_kb:.2f} kB (for the 1M extrapolation)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
