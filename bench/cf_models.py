"""CF models' rebuild cost: ``python -m bench cf_models``.

Each CF model (``SignalParams.cf_model``, with the shipped parameters otherwise) computes the signals of a
``BENCH_CF_ITEMS`` (default 100,000) item catalog from the rebuild bench's 90k Zipf-popular synthetic events
(`bench._data.synthetic_interactions`), in a fresh subprocess so its peak resident memory (VmHWM) is its own.
The index build (hnswlib, ~50 s at 100k: `bench rebuild`) does not depend on the CF model, so the difference
between two lines is the difference a model makes to the rebuild. Ratios are to SLIST without side
information. ``slist+side`` solves with the items' content as side information (``side_weight``): its
cost depends on the shapes only (m solved items x 384), so the content is seeded random unit vectors,
memory-mapped from a file as the rebuild maps the graph file it just wrote (the solve reads only its rows).
``slist-rows`` is SLIST without keeping its whole weight matrix (``SignalParams.keep_cf_matrix`` False, the
behaviour before session 17): the difference to ``slist`` is what the matrix costs the rebuild. The models
run in turn, repeat after repeat, so each sees the same machine load; ``BENCH_CF_MODELS`` (comma-separated)
runs some of them. ``BENCH_CF_EVENTS=movielens``: the events are MovieLens ml-latest-small's leave-last-out
training ratings instead (``data/ml-latest-small``, 9,742 items of which ~6.3k are solved): a real catalog
whose solve is three times the synthetic one's width.
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

from bench._data import ROOT, machine_line, peak_rss_mb, synthetic_interactions
from embrec.domain.model import Interaction

__all__ = ["main"]

NOW = 1_790_000_000.0
MODELS = ("ease", "slist", "slist-rows", "slist+side", "cooccurrence")
SIDE_DIM = 384
SIDE_WEIGHT = 100.0  # the weight changes the solution, not the work


def _memory_mapped_unit_vectors(n: int, directory: Path) -> np.ndarray:
    """(n, SIDE_DIM) float32 unit rows memory-mapped from a file, as the rebuild maps the graph file it just
    wrote. Written in 10k-row chunks through the file (not a mapping): they stay out of the memory floor."""
    path = directory / "vectors.npy"
    rng = np.random.default_rng(0)
    with path.open("wb") as out:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, SIDE_DIM)}
        np.lib.format.write_array_header_1_0(out, header)
        for lo in range(0, n, 10_000):
            rows = rng.standard_normal((min(n, lo + 10_000) - lo, SIDE_DIM), dtype=np.float32)
            out.write((rows / np.linalg.norm(rows, axis=1, keepdims=True)).tobytes())
    return np.load(path, mmap_mode="r")


def _events(n: int) -> tuple[list[str], list[tuple[str, Interaction]]]:
    if os.environ.get("BENCH_CF_EVENTS") == "movielens":
        from embrec_tools.datasets import load_movielens
        from embrec_tools.evaluation import leave_last_out

        dataset = load_movielens(ROOT / "data" / "ml-latest-small")
        return dataset.item_ids, leave_last_out(dataset.interactions).train
    ids = [f"pypi-{i}" for i in range(n)]
    return ids, synthetic_interactions(ids)


def _child(model: str, n: int) -> None:
    from embrec.domain.signals import SignalParams, compute_signals

    ids, events = _events(n)
    n = len(ids)
    params = SignalParams(cf_model=model.removesuffix("+side").removesuffix("-rows"))
    if model.endswith("-rows"):
        params = replace(params, keep_cf_matrix=False)
    scratch = tempfile.TemporaryDirectory()
    vectors = None
    if model.endswith("+side"):
        params = replace(params, side_weight=SIDE_WEIGHT)
        vectors = _memory_mapped_unit_vectors(n, Path(scratch.name))
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    signals = compute_signals(events, ids, params, now=NOW, item_vectors=vectors)
    result = {
        "seconds": time.perf_counter() - started,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "solved_items": signals.params["n_items_with_events"],
        "model_used": signals.params["cf_model_used"],
        "side": signals.params["side_information_used"],
        "matrix_mb": signals.cf_matrix.weights.nbytes / 1e6 if signals.cf_matrix is not None else 0.0,
    }
    del vectors
    scratch.cleanup()
    print(json.dumps(result))


def _run_child(model: str, n: int) -> dict[str, float | str]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.cf_models", "--child", model, str(n)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    print(machine_line())
    n = int(os.environ.get("BENCH_CF_ITEMS", "100000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    movielens = os.environ.get("BENCH_CF_EVENTS") == "movielens"
    catalog = "MovieLens (leave-last-out training)" if movielens else f"{n:,} items"
    models = os.environ.get("BENCH_CF_MODELS", ",".join(MODELS)).split(",")
    if "slist" not in models or not set(models) <= set(MODELS):
        raise SystemExit(f"BENCH_CF_MODELS: a subset of {','.join(MODELS)} holding slist (the ratios' base)")
    runs: dict[str, list[dict[str, float | str]]] = {model: [] for model in models}
    for _ in range(repeats):
        for model in models:
            runs[model].append(_run_child(model, n))
    medians = {}
    for model, results in runs.items():
        seconds = sorted(float(r["seconds"]) for r in results)[len(results) // 2]
        growth = sorted(float(r["peak_rss_mb"]) - float(r["rss_before_mb"]) for r in results)
        above = growth[len(results) // 2]
        medians[model] = (seconds, above)
        kept = float(results[0]["matrix_mb"])
        print(
            f"  {model:13s} signals of {catalog}: median {seconds:6.2f} s of {repeats}, peak RSS above "
            f"the loaded events {above:6.0f} MB ({results[0]['model_used']} over "
            f"{results[0]['solved_items']:,} items; whole matrix kept: {kept:.1f} MB)"
        )
    base_s, base_mb = medians["slist"]
    for model in models:
        seconds, above = medians[model]
        print(
            f"  {model:13s} / slist: time x{seconds / base_s:.2f}, memory above floor x{above / base_mb:.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
