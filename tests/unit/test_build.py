"""The rebuild's build step: the streamed build saves what build().save() saves, and its memory is arrays.

Memory is measured with tracemalloc (numpy's buffers are traced; hnswlib's C++ graph is not, so these
figures are what *our* code holds per item and per event, the part issue 14 asks to bound). BENCHMARKS.md §5
has the process-level figures (VmHWM) at 100k-250k items and 5M-12.5M events.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embrec.app import build
from embrec.domain import signals
from embrec.domain.fusion import FusionConfig
from embrec.domain.model import Interaction, StoredItem
from embrec.domain.signals import SignalParams, compute_signals
from embrec.engine.index import VectorIndex, index_memory_bytes
from embrec.errors import CompatibilityError

DIM = 64
NOW = 1_790_000_000.0


def _items(n: int, seed: int = 0) -> Iterator[StoredItem]:
    rng = np.random.default_rng(seed)
    for i in rng.permutation(n).tolist():
        fields = {
            "item_id": f"item-{i:06d}", "title": f"Item {i}", "category": f"c{i % 7}",
            "tags": [f"t{i % 5}", f"t{i % 3}"], "price": float(i % 50), "available": bool(i % 2),
        }
        vector = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)  # a function of the id
        yield StoredItem(f"item-{i:06d}", fields, "", vector)


def test_the_streamed_build_saves_what_build_then_save_saves_whatever_the_scan_order(tmp_path: Path) -> None:
    # Given the same items in two scan orders
    first = build.build_version(_items(9000, seed=1), [], tmp_path / "a", encoder_id="e", now=NOW)
    second = build.build_version(_items(9000, seed=2), [], tmp_path / "b", encoder_id="e", now=NOW)
    # and the same items built the way VectorIndex.build(...).save() does it, sorted by id
    rows = sorted(_items(9000, seed=1), key=lambda item: item.item_id)
    vectors = np.stack([r.vector for r in rows])
    whole = VectorIndex.build(
        [r.item_id for r in rows], vectors, [r.fields for r in rows], encoder_id="e"
    ).save(tmp_path / "c")

    assert first.details["index"]["input_sha256"] == second.details["index"]["input_sha256"]
    assert first.details["index"]["input_sha256"] == whole["input_sha256"]
    loaded = VectorIndex.load(tmp_path / "a" / build.INDEX_DIR)
    assert loaded.metadata("item-000042") == {
        "title": "Item 42", "category": "c0", "tags": ["t2", "t0"], "price": 42.0, "available": False,
        "created_at": None,
    }
    assert np.allclose(loaded.vectors_for(["item-000042"]), whole_vector(rows, "item-000042"), atol=1e-6)


def whole_vector(rows: list[StoredItem], item_id: str) -> np.ndarray:
    vector = next(r.vector for r in rows if r.item_id == item_id)
    assert vector is not None
    return (vector / np.linalg.norm(vector))[None, :]


def test_an_empty_catalog_builds_an_index_of_the_encoders_dimension(tmp_path: Path) -> None:
    built = build.build_version([], [], tmp_path, encoder_id="e", now=NOW, text_dim=384)
    index, _ = build.load_version(tmp_path)
    assert built.items == 0 and index.dim == 384 and len(index) == 0
    assert index.search(np.ones(384, dtype=np.float32), 5) == []


def _events_after(started: threading.Event, n: int = 300) -> Iterator[tuple[str, Interaction]]:
    started.set()
    for k in range(n):
        yield f"u{k % 30}", Interaction(f"item-{k % 200:06d}", "like", NOW - k)


def test_the_window_is_read_while_the_index_is_being_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an index build that waits (up to 30 s) for the first event to be read before it writes
    reading = threading.Event()
    saw_reading: list[bool] = []
    write_index = build.write_index

    def waiting(*args: Any, **kwargs: Any) -> Any:
        saw_reading.append(reading.wait(timeout=30))
        return write_index(*args, **kwargs)

    monkeypatch.setattr(build, "write_index", waiting)
    # When the version is built
    built = build.build_version(_items(500), _events_after(reading), tmp_path, encoder_id="e", now=NOW)
    # Then the events were being read while the index had not been written (one after the other, it waits out)
    assert saw_reading == [True]
    assert built.interactions == 300
    assert set(built.details["seconds"]) == {"items", "index", "events", "signals"}
    assert build.load_version(tmp_path)[1].params["n_events"] == 300


def test_a_failure_on_either_side_is_raised_after_the_index_thread_has_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_events() -> Iterator[tuple[str, Interaction]]:
        yield "u", Interaction("item-000001", "like", NOW)
        raise RuntimeError("the window read failed")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="window read failed"):
        build.build_version(_items(300), broken_events(), tmp_path / "a", encoder_id="e", now=NOW)
    assert threading.active_count() == before  # the index thread was joined, not left writing

    def broken_index(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(build, "write_index", broken_index)
    with pytest.raises(OSError, match="disk full"):
        build.build_version(_items(300), [], tmp_path / "b", encoder_id="e", now=NOW)
    assert threading.active_count() == before


def test_the_build_holds_arrays_per_item_not_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 30k items of 64 float32 (256 bytes): what our code holds at its peak, per item (1 MiB blocks, so the
    # last block's unused rows, which tracemalloc counts but RSS does not, stay small beside 30k items)
    monkeypatch.setattr(build, "BLOCK_BYTES", 2**20)
    n = 30_000
    tracemalloc.start()
    build.build_version(_items(n), [], tmp_path, encoder_id="e", now=NOW)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_item = peak / n
    # one vector copy plus the sorted copy as it fills (<= 2 x 256), ids, metadata columns, the sort order,
    # and, since the signals are computed while the index is built, their dense neighbour rows beside it (50
    # x (int32 + float32) = 400) and the item positions: measured 1,230. A list of StoredItem fields and
    # per-item numpy arrays (the old build) was over 1.5 kB before those 400
    assert per_item < 1_400, per_item


def test_signals_hold_compact_columns_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 400k events (8k users x 50, Zipf items) and the per-range temporaries capped at 50k events
    monkeypatch.setattr(signals, "_RANGE_EVENTS", 50_000)
    monkeypatch.setattr(signals.EventColumns, "CHUNK_EVENTS", 1 << 16)
    rng = np.random.default_rng(3)
    ids = [f"i{k}" for k in range(5000)]
    n = 400_000
    items = rng.zipf(1.2, size=n) % len(ids)
    users = rng.integers(0, 8000, size=n)
    times = NOW - rng.uniform(0, 30 * 86_400, size=n)
    kinds = ("view", "click", "like", "purchase")

    def stream() -> Iterator[tuple[str, Interaction]]:
        for k in range(n):
            yield f"u{users[k]}", Interaction(ids[items[k]], kinds[k % 4], float(times[k]))

    params = SignalParams(cf_model="cooccurrence", pair_budget=50_000)
    tracemalloc.start()
    computed = compute_signals(stream(), ids, params, now=NOW)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert computed.params["n_events"] == n
    # 17 bytes of columns an event and 5 per (user, item) pair while they are read, then 12 per pair of CSR
    # rows and the CF model's arrays over them (32 per pair at most; every expansion within the pair budget).
    # Measured: 48, the per-range and budget constants included (slope from 200k to 800k events: 23). It was
    # 90 when the expansion of the most popular items grew with all their users' pairs, 190 with lists of
    # Python numbers and a row per event
    assert peak / n < 60, peak / n


def _with_images(n: int) -> Iterator[StoredItem]:
    for item in _items(n):
        yield StoredItem(item.item_id, {**item.fields, "image_embedding": [1.0] * 4096}, "", item.vector)


def test_a_fused_layout_over_the_memory_budget_falls_back_to_text_and_a_plain_one_is_refused(
    tmp_path: Path,
) -> None:
    # Given 300 items, each with a 4,096-value image: fused, 4,160 dims; plain, 64
    fused_need, plain_need = index_memory_bytes(300, DIM + 4096), index_memory_bytes(300, DIM)
    budget = (fused_need + plain_need) // 2
    built = build.build_version(
        _with_images(300), [], tmp_path / "a", encoder_id="e", now=NOW, fusion=FusionConfig(mode="on"),
        memory_budget=budget,
    )
    assert built.details["fusion"]["over_budget"] == 1 and built.details["index"]["dim"] == DIM
    assert "fusion" not in built.details["index"]

    with pytest.raises(CompatibilityError, match="memory budget"):
        build.build_version(
            _items(300), [], tmp_path / "b", encoder_id="e", now=NOW, memory_budget=plain_need // 2
        )
    assert not (tmp_path / "b" / build.INDEX_DIR).exists()


def test_a_container_refuses_to_load_a_version_over_its_memory_budget(tmp_path: Path) -> None:
    build.build_version(_items(300), [], tmp_path, encoder_id="e", now=NOW)
    with pytest.raises(CompatibilityError, match="memory budget"):
        build.load_version(tmp_path, memory_budget=index_memory_bytes(300, DIM) // 2)
    index, _ = build.load_version(tmp_path, memory_budget=index_memory_bytes(300, DIM))
    assert len(index) == 300


def test_the_rebuild_gives_the_cf_solve_the_vectors_it_indexed_as_side_information(tmp_path: Path) -> None:
    # Given 300 items and 150 users' events, and SLIST with side information
    ids = sorted(f"item-{i:06d}" for i in range(300))
    rng = np.random.default_rng(3)
    events = [
        (f"u{u}", Interaction(ids[int(i)], "like", NOW - 1000.0 + n))
        for u in range(150)
        for n, i in enumerate(rng.choice(40, size=6, replace=False))
    ]
    params = SignalParams(side_weight=50.0, ease_prune_above=10_000)
    # When the rebuild builds the version
    built = build.build_version(_items(300), events, tmp_path, encoder_id="e", now=NOW, signal_params=params)
    index, saved = build.load_version(tmp_path)
    # Then its signals are the solve over the index's own (normalised) vectors, in item id order
    expected = compute_signals(events, ids, params, now=NOW, item_vectors=index.vectors_for(ids))
    assert built.details["signals"]["params"]["side_information_used"] is True
    assert saved.params["input_sha256"] == expected.params["input_sha256"]
    np.testing.assert_array_equal(saved.cf_neighbours, expected.cf_neighbours)
    np.testing.assert_allclose(saved.cf_scores, expected.cf_scores, rtol=1e-5)
    without = compute_signals(events, ids, replace(params, side_weight=0.0), now=NOW)
    assert not np.array_equal(saved.cf_scores, without.cf_scores)
