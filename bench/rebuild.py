"""Rebuild: ``python -m bench rebuild``.

Memory and time of ``build.build_version`` as the rebuild function runs it, fed by stub stores with the
DynamoDB adapters' access pattern (an item generator, one object per item made as it is yielded; then the
window's events as pages of columns, ``EventPage``, as ``InteractionStore.read_window`` yields them):
``BENCH_REBUILD_SIZES`` (default ``100000:5000000,250000:12500000``) items:events.
Item vectors are synthetic 384-d unit vectors around 2,000 seeded centres (clustered like real embeddings,
so hnswlib's work is comparable; no encoding needed); events are Zipf-popular over the catalog, 50 per user,
mixed types, over 30 days. Each size runs in a fresh process. The index is built on its own thread while the
events are read, so the phases' memory is measured together: the peak (VmHWM) above the process floor per
size, and the slopes between sizes that share a catalog (bytes an event) or an event count (bytes an item).
Time: each phase's wall seconds (``details["seconds"]``), the CPU seconds of the main thread (the item scan,
the event read, the signals) and of the whole process (hnswlib's threads besides).
Baseline: hnswlib ``add_items`` alone on the first size's vectors (the library floor), in a fresh process.
``BENCH_REBUILD_BASELINE=0`` skips it. ``BENCH_REBUILD_RANKER=0`` builds without the learned blend (its
training is part of the signals phase), for the before/after of its cost.
``build_bench_version`` keeps a 100k version under .cache/bench/ for ``bench cold_start``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench._data import (
    CATEGORIES,
    ROOT,
    TYPES,
    machine_line,
    peak_rss_mb,
    rss_mb,
    synthetic_interactions,
)
from embrec.domain.model import StoredItem
from embrec.domain.signals import EventPage

__all__ = ["build_bench_version", "main"]

NOW = 1_790_000_000.0
EVENTS_PER_USER = 50
PAGE_EVENTS = 5_000


def build_bench_version(
    vectors: np.ndarray, texts: list[str], encoder_id: str, target: Path
) -> dict[str, float]:
    """Build a version of ``vectors`` (n, dim) into ``target`` with build_version; timings in seconds."""
    from embrec.app.build import build_version

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


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def _synthetic_block(rows: np.ndarray, dim: int = 384) -> np.ndarray:
    """float32 (len(rows), dim) unit vectors, a pure function of the row numbers: a seeded centre (2,000 of
    them) plus noise, so a catalog has neighbourhoods like real embeddings."""
    centres = np.random.default_rng(1).standard_normal((2000, dim)).astype(np.float32)
    out = np.empty((rows.size, dim), dtype=np.float32)
    for k, row in enumerate(rows.tolist()):
        out[k] = centres[row % 2000] + 0.6 * np.random.default_rng(row).standard_normal(dim, dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def _stub_items(n: int) -> Iterator[StoredItem]:
    """What ``ItemStore.scan_for_index`` yields: one StoredItem at a time (index fields only), in scan
    order (a seeded shuffle of the ids), its id string made as it is yielded."""
    order = np.random.default_rng(5).permutation(n)
    for start in range(0, n, 4096):
        rows = order[start : start + 4096]
        block = _synthetic_block(rows)
        for k, i in enumerate(rows.tolist()):
            fields = {"item_id": f"item-{i:08d}", "title": f"Synthetic catalog item number {i} of the bench",
                      "category": CATEGORIES[i % 20], "price": float(i % 500), "available": True}
            yield StoredItem(fields["item_id"], fields, "", block[k])


def _stub_events(n_items: int, n_events: int) -> Iterator[EventPage]:
    """What ``InteractionStore.read_window`` yields: pages of 5,000 events as columns, each made as it is
    yielded."""
    rng = np.random.default_rng(7)
    item_ids = [f"item-{i:08d}" for i in range(n_items)]
    permutation = rng.permutation(n_items)
    users = max(1, n_events // EVENTS_PER_USER)
    for start in range(0, n_events, PAGE_EVENTS):
        size = min(PAGE_EVENTS, n_events - start)
        items = permutation[rng.zipf(1.2, size=size) % n_items].tolist()
        user = rng.integers(0, users, size=size).tolist()
        kinds = rng.integers(0, len(TYPES), size=size).tolist()
        yield EventPage(
            users=[f"u{u}" for u in user],
            items=[item_ids[i] for i in items],
            types=[TYPES[k] for k in kinds],
            timestamps=NOW - rng.uniform(0, 30 * 86_400, size=size),
        )


def _stream_child(n_items: int, n_events: int) -> dict[str, Any]:
    import tempfile

    from embrec.app.build import build_version

    floor = rss_mb()
    _reset_peak()
    started, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    with tempfile.TemporaryDirectory() as scratch:
        built = build_version(
            _stub_items(n_items), _stub_events(n_items, n_events), Path(scratch),
            encoder_id="bench-synthetic", now=NOW, text_dim=384,
            train_ranker=os.environ.get("BENCH_REBUILD_RANKER", "1") != "0",
        )
        ranker = built.details.get("ranker", {}).get("info", {}).get("lists", 0)
        ranker_seconds = built.details["learned_blend_seconds"]
    return {
        "items": built.items,
        "events": built.interactions,
        "floor_mb": floor,
        "peak_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - started,
        "phases": built.details["seconds"],
        "phases_cpu": built.details["cpu_seconds"],
        "cpu_seconds": time.process_time() - cpu,
        "main_cpu_seconds": time.thread_time() - main_cpu,
        "ranker_lists": ranker,
        "ranker_seconds": ranker_seconds,
    }


def _child(mode: str, n_items: int, n_events: int) -> None:
    if mode == "stream":
        result = _stream_child(n_items, n_events)
    else:
        import hnswlib

        from embrec.engine.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M

        vectors = _synthetic_block(np.arange(n_items))
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
        graph.init_index(
            max_elements=n_items, M=DEFAULT_M, ef_construction=DEFAULT_EF_CONSTRUCTION, random_seed=100
        )
        graph.add_items(vectors, np.arange(n_items))
        result = {
            "seconds": time.perf_counter() - started,
            "items": n_items,
            "rss_before_mb": rss_before,
            "peak_rss_mb": peak_rss_mb(),
        }
    print(json.dumps(result))


def _run_child(mode: str, n_items: int, n_events: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.rebuild", "--child", mode, str(n_items), str(n_events)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    print(machine_line())
    sizes = [
        tuple(int(x) for x in size.split(":"))
        for size in os.environ.get("BENCH_REBUILD_SIZES", "100000:5000000,250000:12500000").split(",")
    ]
    if os.environ.get("BENCH_REBUILD_BASELINE", "1") != "0":
        base = _run_child("hnswlib", sizes[0][0], 0)
        print(
            f"  base  hnswlib add_items alone, {base['items']:,} items: {base['seconds']:.1f} s, peak above "
            f"the floor {(base['peak_rss_mb'] - base['rss_before_mb']) * 2**20 / base['items']:,.0f} B/item",
            flush=True,
        )
    runs = []
    for n_items, n_events in sizes:
        r = _run_child("stream", n_items, n_events)
        runs.append(r)
        phases = " ".join(f"{name} {value:.1f}" for name, value in r["phases"].items())
        phases += "; CPU " + " ".join(f"{name} {value:.1f}" for name, value in r["phases_cpu"].items())
        print(
            f"  ours  {r['items']:>9,} items {r['events']:>11,} events: {r['seconds']:6.1f} s ({phases} s; "
            f"the index on its own thread) | CPU {r['cpu_seconds']:.1f} s, main thread "
            f"{r['main_cpu_seconds']:.1f} s | peak {r['peak_mb'] - r['floor_mb']:6.0f} MB above the floor "
            f"({r['floor_mb']:.0f} MB) | learned blend: {r['ranker_lists']} lists, "
            f"{r['ranker_seconds']:.1f} s of the signal phase",
            flush=True,
        )
    for a, b in itertools.pairwise(runs):
        grown = (b["peak_mb"] - b["floor_mb"]) - (a["peak_mb"] - a["floor_mb"])
        if a["items"] == b["items"] and b["events"] != a["events"]:
            print(f"  slope {a['events']:,} -> {b['events']:,} events at {a['items']:,} items: "
                  f"{grown * 2**20 / (b['events'] - a['events']):.1f} B/event (target <= 40)")
        elif a["events"] == b["events"] and b["items"] != a["items"]:
            print(f"  slope {a['items']:,} -> {b['items']:,} items at {a['events']:,} events: "
                  f"{grown * 2**20 / (b['items'] - a['items']):,.0f} B/item (target <= 3,584)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
