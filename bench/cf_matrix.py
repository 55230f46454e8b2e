"""The whole CF matrix at its cap: ``python -m bench cf_matrix``.

SLIST / EASE run only while at most ``SignalParams.ease_max_items`` (10,000) items are solved; above that the
model is co-occurrence and keeps no matrix, so 10,000 is the largest ``Signals.cf_matrix`` a deployment can
carry. For ``BENCH_MATRIX_SIZES`` solved items (default 2,227 — the 100k rebuild bench's — and 10,000) in a
100k-item catalog, with and without the matrix, each in a fresh child process: the ``signals.npz`` size, the
time ``Signals.load`` takes (sha256 check included, median of 3) and the resident memory its first call
adds (small matrices can land in memory the child freed while making them), and the read a request makes
(``ranking._matrix_cf``'s gather: 50 sources' rows at 450 candidates' columns, float16 to float64, one
product; median of 2,000). The matrix's values are seeded random: these costs depend on its shape only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench._data import ROOT, machine_line, seeded_cf_matrix
from embrec.domain.signals import Signals

__all__ = ["main"]

N_ITEMS = 100_000
NEIGHBOURS = 50
SOURCES, CANDIDATES = 50, 450


def _signals(m: int) -> Signals:
    matrix = seeded_cf_matrix(N_ITEMS, m)
    items = matrix.items
    rng = np.random.default_rng(1)
    neighbours = np.full((N_ITEMS, NEIGHBOURS), -1, dtype=np.int32)
    scores = np.zeros((N_ITEMS, NEIGHBOURS), dtype=np.float32)
    neighbours[items] = rng.choice(items, size=(m, NEIGHBOURS)).astype(np.int32)
    scores[items] = np.sort(rng.random((m, NEIGHBOURS), dtype=np.float32), axis=1)[:, ::-1]
    ids = tuple(f"pypi-{i}" for i in range(N_ITEMS))
    return Signals(ids, neighbours, scores, np.zeros(N_ITEMS, np.float32), {}, None, matrix)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(m: int, variant: str) -> None:
    signals = _signals(m)
    if variant == "rows":
        signals = replace(signals, cf_matrix=None)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / variant
        signals.save(directory)
        result["mb"] = (directory / "signals.npz").stat().st_size / 1e6
        times, grew = [], []
        for _ in range(3):
            before = _rss_mb()
            started = time.perf_counter()
            loaded = Signals.load(directory)
            times.append(time.perf_counter() - started)
            grew.append(_rss_mb() - before)
            del loaded
        result["load_s"] = sorted(times)[1]
        result["rss_mb"] = grew[0]  # later loads reuse what the first one freed
    if signals.cf_matrix is not None:
        weights = signals.cf_matrix.weights
        rng = np.random.default_rng(1)
        reads = []
        for _ in range(2_000):
            rows = rng.choice(m, size=SOURCES, replace=False)
            cols = np.sort(rng.choice(m, size=CANDIDATES, replace=False))
            source_weights = rng.random(SOURCES)
            started = time.perf_counter()
            source_weights @ weights[np.ix_(rows, cols)].astype(np.float64)
            reads.append(time.perf_counter() - started)
        result["read_us"] = float(np.median(reads)) * 1e6
    print(json.dumps(result))


def _run_child(m: int, variant: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.cf_matrix", "--child", str(m), variant],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    print(machine_line())
    sizes = [int(x) for x in os.environ.get("BENCH_MATRIX_SIZES", "2227,10000").split(",") if x]
    for m in sizes:
        rows, whole = _run_child(m, "rows"), _run_child(m, "whole")
        print(
            f"  {m:>6,} solved items: signals.npz {rows['mb']:.1f} -> {whole['mb']:.1f} MB, load "
            f"{rows['load_s'] * 1e3:.0f} -> {whole['load_s'] * 1e3:.0f} ms (median of 3), its first load's "
            f"resident memory +{rows['rss_mb']:.0f} -> +{whole['rss_mb']:.0f} MB; a request's read of "
            f"{SOURCES} sources x {CANDIDATES} candidates {whole['read_us']:.0f} us (median of 2,000)"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), sys.argv[3])
    else:
        main()
