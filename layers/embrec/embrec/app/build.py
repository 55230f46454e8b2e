"""The rebuild: stream items and recent interactions into compact arrays, build the index and signals, lay out
one version.

:func:`build_version` is the use case with its inputs injected (iterables of stored items and interactions);
:mod:`embrec.app.service` wires it to DynamoDB and publishes the directory with :mod:`embrec.aws.artifacts`. A
version directory holds ``index/`` (the :class:`~embrec.engine.index.VectorIndex` files, with their own
manifest), ``signals/`` (CF neighbours and trending) and, when there is enough data, ``ranker/`` (the learned
blend, :mod:`embrec.domain.learned_blend`, trained on the users' own newest events); the publisher adds the
version manifest that names every file.

Memory is bounded by arrays, never by Python objects per row (BENCHMARKS.md §5): item vectors stream into
preallocated float32 blocks (:data:`BLOCK_BYTES` each) and metadata into numpy columns; the blocks are
moved into item-id order, then fed to hnswlib one by one and dropped, so the peak is about hnswlib's own
copy of the vectors. The index is built on a thread of its own (hnswlib releases the GIL on its own
threads) while, on the caller's thread, the interactions are read page by page into
:class:`~embrec.domain.signals.EventColumns` (17 bytes an event) and the signals are computed from them: the
two overlap in time instead of adding up, and their memory adds up instead of taking turns (BENCHMARKS.md
5b: the 1M items + 50M events projection). The learned blend's training shares those columns (its held-out
rows are moved, not copied) and loads the index back once both are done. ``details["seconds"]`` of the result
times each phase (the index on its own thread), ``details["cpu_seconds"]`` the caller's thread's CPU in the
event read and the signals (below their wall time when the index's threads take the cores).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embrec.domain import learned_blend
from embrec.domain.fusion import FusionConfig, FusionSpec, fuse_rows, index_fusion, plan_fusion
from embrec.domain.learned_blend import LearnedBlend
from embrec.domain.model import Interaction, StoredItem
from embrec.domain.profiles import ProfileParams
from embrec.domain.ranking import RankParams, learning_example
from embrec.domain.signals import EventColumns, EventPage, SignalParams, Signals, signals_from_events
from embrec.engine._index_meta import MetadataColumns, parse_metadata
from embrec.engine.index import (
    DEFAULT_M,
    GRAPH_FILE,
    VectorIndex,
    check_memory_budget,
    index_memory_bytes,
    read_graph_vectors,
    write_index,
)
from embrec.errors import CompatibilityError, IntegrityError
from embrec.manifest import VerifiedDirectory, subdirectory
from embrec.observability import logger

__all__ = [
    "BLOCK_BYTES", "INDEX_DIR", "RANKER_DIR", "SIGNALS_DIR", "BuiltVersion", "build_version", "load_ranker",
    "load_version",
]

INDEX_DIR = "index"
SIGNALS_DIR = "signals"
RANKER_DIR = "ranker"
#: Bytes per float32 vector block, the unit in which vectors are read, sorted and indexed (43,690 rows at
#: 384-d). Above glibc's largest dynamic mmap threshold (32 MiB), so every block is its own mapping and a
#: freed block goes back to the OS at once: with 6 MB blocks the heap kept every freed block (measured: 5.2 kB
#: an item at 100k, BENCHMARKS.md §5).
BLOCK_BYTES = 64 * 2**20
_META_BATCH = 1024  # parsed metadata rows appended to the columns at a time


@dataclass(frozen=True)
class BuiltVersion:
    directory: Path
    items: int
    interactions: int
    skipped_items: int
    encoder_id: str
    dim: int
    details: dict[str, Any]


@dataclass
class _Catalog:
    """The live items in scan order: ids, text vectors in float32 blocks, metadata columns, images."""

    dim: int | None
    ids: list[str] = field(default_factory=list)
    blocks: list[np.ndarray] = field(default_factory=list)
    meta: MetadataColumns = field(default_factory=MetadataColumns)
    images: dict[int, np.ndarray] = field(default_factory=dict)  # scan position -> float32 image
    skipped: int = 0


def _read_catalog(
    items: Iterable[StoredItem], dim: int | None, keep_images: bool, encoder_id: str
) -> _Catalog:
    catalog = _Catalog(dim)
    pending: list[dict[str, Any]] = []
    block = np.empty((0, 0), dtype=np.float32)
    rows_per_block = 1
    foreign: dict[str, int] = {}
    for item in items:
        vector = item.vector
        if item.deleted or vector is None:
            catalog.skipped += 1
            continue
        if item.encoder_id and item.encoder_id != encoder_id:
            foreign[item.encoder_id] = foreign.get(item.encoder_id, 0) + 1
            continue
        if catalog.dim is None:
            catalog.dim = int(vector.shape[0])
        if vector.shape != (catalog.dim,):
            raise CompatibilityError(
                f"items carry vectors of several dimensions {sorted({catalog.dim, int(vector.shape[0])})}: "
                "re-ingest them with one encoder"
            )
        rows_per_block = _rows_per_block(catalog.dim)
        row = len(catalog.ids) % rows_per_block
        if row == 0:
            block = np.empty((rows_per_block, catalog.dim), dtype=np.float32)
            catalog.blocks.append(block)
        block[row] = vector
        if keep_images and (image := item.fields.get("image_embedding")):
            catalog.images[len(catalog.ids)] = np.asarray(image, dtype=np.float32)
        catalog.ids.append(item.item_id)
        pending.append(parse_metadata(item.fields, f"items[{item.item_id}]"))
        if len(pending) == _META_BATCH:
            catalog.meta.append(pending)
            pending = []
    if foreign:
        raise CompatibilityError(
            f"items carry vectors of other encoders {foreign} than the current {encoder_id}: re-upload the "
            "catalog so ingest re-encodes them"
        )
    catalog.meta.append(pending)
    if catalog.blocks and len(catalog.ids) % rows_per_block:
        catalog.blocks[-1] = catalog.blocks[-1][: len(catalog.ids) % rows_per_block].copy()
    return catalog


def _rows_per_block(dim: int) -> int:
    return max(1, BLOCK_BYTES // (4 * dim))


def _sorted_blocks(blocks: list[np.ndarray], rank: np.ndarray, dim: int) -> list[np.ndarray]:
    """The rows of ``blocks`` (scan order) moved to row ``rank[scan position]`` of new blocks, each scan block
    released as soon as it is moved (new pages are touched as they fill: ~1.35x one copy at the worst)."""
    n, size = rank.shape[0], _rows_per_block(dim)
    out = [np.empty((min(size, n - start), dim), dtype=np.float32) for start in range(0, n, size)]
    start = 0
    while blocks:
        block = blocks.pop(0)
        target = rank[start : start + block.shape[0]]
        start += block.shape[0]
        by_block = np.argsort(target // size, kind="stable")
        bounds = np.searchsorted(target[by_block] // size, np.arange(len(out) + 1))
        for j in range(len(out)):
            rows = by_block[bounds[j] : bounds[j + 1]]
            if rows.size:
                out[j][target[rows] % size] = block[rows]
        del block
    return out


def _index_blocks(
    blocks: list[np.ndarray], spec: FusionSpec | None, meta: MetadataColumns, images: Sequence[Any],
    counts: dict[str, int],
) -> Iterator[np.ndarray]:
    """The blocks in position order, fused into the index layout; each released once handed over."""
    start = 0
    while blocks:
        block = blocks.pop(0)
        rows = block.shape[0]
        if spec is None:
            yield block
        else:
            fused_rows = [meta.row(p) for p in range(start, start + rows)] if spec.meta_dim else [{}] * rows
            fused, part = fuse_rows(spec, block, fused_rows, images[start : start + rows])
            for key, value in part.items():
                counts[key] = counts.get(key, 0) + value
            yield fused
        start += rows
        del block


def _timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``function(*args, **kwargs)`` and its wall time in seconds."""
    started = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - started


def build_version(
    items: Iterable[StoredItem],
    interactions: Iterable[tuple[str, Interaction] | EventPage],
    directory: Path,
    *,
    encoder_id: str,
    now: float,
    text_dim: int | None = None,
    signal_params: SignalParams | None = None,
    fusion: FusionConfig | None = None,
    memory_budget: int | None = None,
    train_ranker: bool = True,
) -> BuiltVersion:
    """Build index + signals into ``directory`` from every live item and the given interactions.

    Items without a vector and deleted items are left out (counted in ``skipped_items``). ``text_dim`` (the
    encoder's) is the dimension every item vector must have — an empty catalog still gives an index of that
    dimension, which answers empty lists; None takes the first item's. Items carrying vectors of another
    dimension, or vectors another encoder than ``encoder_id`` made (as recorded with each item; items stored
    before it was recorded are taken as the current encoder's), raise :class:`CompatibilityError` (re-upload
    the catalog: ingest re-encodes them), so an index never labels one model's vectors with another's id.
    ``interactions`` (pairs or :class:`~embrec.domain.signals.EventPage` s) is consumed, and the signals
    computed, while the index is being built on a thread of its own (joined before this returns or raises;
    before the signals when ``side_weight`` needs the index's vectors).

    ``fusion`` (default ``FusionConfig()``: auto) decides the index layout from the whole catalog (see
    :mod:`embrec.domain.fusion`). ``memory_budget`` (bytes, None: no limit) is what the serving containers
    may spend on the index: a fused layout over it falls back to the plain text vectors (logged, and
    ``details["fusion"]["over_budget"]``), and a plain index over it raises :class:`CompatibilityError`
    before anything is written. ``dim`` in the result is the text vectors' dimension; the index
    manifest's ``dim`` and ``fusion`` give the fused layout. ``train_ranker``: train the learned blend
    (:func:`_training_signals`, :func:`_fit_ranker`) into ``ranker/`` when there is enough data.
    """
    config = fusion or FusionConfig()
    keep_images = config.mode != "off" and config.image_weight > 0
    started = time.perf_counter()
    catalog = _read_catalog(items, text_dim, keep_images, encoder_id)
    dim = catalog.dim if catalog.dim is not None else 1
    n = len(catalog.ids)
    # Positions in item_id order, not scan order (a parallel scan's order varies): the same items give the
    # same index input digest, so a re-run with no change is recognised as unchanged (embrec.aws.artifacts).
    order = np.argsort(np.asarray(catalog.ids, dtype=object), kind="stable") if n else np.zeros(0, np.int64)
    ids = [catalog.ids[i] for i in order.tolist()]
    catalog.ids.clear()
    meta = catalog.meta.take(order)
    images = [catalog.images.get(i) for i in order.tolist()] if catalog.images else [None] * n
    catalog.images.clear()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    del order
    blocks = _sorted_blocks(catalog.blocks, rank, dim)
    del rank
    items_seconds = time.perf_counter() - started
    spec = plan_fusion(config, dim, (image.shape[0] for image in images if image is not None), items=n)
    counts: dict[str, int] = {"with_image": 0, "image_dim_mismatch": 0}
    if spec is not None and memory_budget is not None and index_memory_bytes(n, spec.dim) > memory_budget:
        logger.warning(
            "fused index over the memory budget: publishing plain text vectors",
            extra={"items": n, "fused_dim": spec.dim, "budget_mb": memory_budget // 2**20},
        )
        counts["over_budget"] = 1
        spec = None
    check_memory_budget(n, dim if spec is None else spec.dim, memory_budget, DEFAULT_M)
    signal_params = signal_params or SignalParams()
    # The index is built on a thread of its own beside the window read and the signals: hnswlib releases the
    # GIL while it inserts (on its own threads), the read and the signals are one Python thread (numpy
    # releases it too), so the two overlap instead of adding up (BENCHMARKS.md 5b: the 1M items + 50M events
    # projection). Leaving the ``with`` block waits for it, so a failure on this side never leaves it writing
    # into a directory being removed.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild-index") as pool:
        index_build = pool.submit(
            _timed,
            write_index,
            Path(directory) / INDEX_DIR,
            ids,
            _index_blocks(blocks, spec, meta, images, counts),
            meta,
            dim=dim if spec is None else spec.dim,
            encoder_id=encoder_id,
            fusion=None if spec is None else spec.to_dict(),
        )
        del blocks, meta, images
        started, cpu = time.perf_counter(), time.thread_time()
        events = EventColumns(ids, signal_params.type_weights).extend(interactions)
        seconds = {"items": items_seconds, "events": time.perf_counter() - started}
        cpu_seconds = {"events": time.thread_time() - cpu}
        n_events = events.seen
        started = time.perf_counter()
        training = _training_signals(events, signal_params, now) if train_ranker else None
        ranker_seconds = time.perf_counter() - started
        side = None
        if signal_params.side_weight > 0:
            # Side information for the CF solve: the vectors just written, read back from the graph file's
            # memory map (no copy; the solve reads only the rows of the items it solves over).
            written, _ = index_build.result()
            side = read_graph_vectors(Path(directory) / INDEX_DIR / GRAPH_FILE, int(written["dim"]), n)
        started, cpu = time.perf_counter(), time.thread_time()
        signals = signals_from_events(events, signal_params, now=now, item_vectors=side)
        del side
        signals_manifest = signals.save(Path(directory) / SIGNALS_DIR)
        seconds["signals"] = time.perf_counter() - started
        cpu_seconds["signals"] = time.thread_time() - cpu
        index_manifest, seconds["index"] = index_build.result()
    details: dict[str, Any] = {
        "index": index_manifest, "signals": signals_manifest, "fusion": counts, "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    started = time.perf_counter()
    ranker = _fit_ranker(Path(directory), signal_params, *training) if training is not None else None
    details["learned_blend_seconds"] = ranker_seconds + time.perf_counter() - started
    if ranker is not None:
        digest = learned_blend.input_digest(str(signals.params.get("input_sha256", "")), ranker.info)
        details["ranker"] = ranker.save(Path(directory) / RANKER_DIR, digest)
    return BuiltVersion(
        directory=Path(directory),
        items=n,
        interactions=n_events,
        skipped_items=catalog.skipped,
        encoder_id=encoder_id,
        dim=dim,
        details=details,
    )


def _training_signals(
    events: EventColumns, signal_params: SignalParams, now: float
) -> tuple[learned_blend.Holdout, Signals] | None:
    """The learned blend's training split (:func:`learned_blend.holdout`: each sampled user's newest event
    held out) and the signals built without the held-out events; None with too few users to train on."""
    split = learned_blend.holdout(events)
    if len(split.cases) < learned_blend.MIN_LISTS:
        logger.info("learned blend skipped", extra={"training_users": len(split.cases)})
        return None
    return split, signals_from_events(split.train_events, signal_params, now=now)  # releases its view


def _fit_ranker(
    directory: Path, signal_params: SignalParams, split: learned_blend.Holdout, held_signals: Signals
) -> LearnedBlend | None:
    """The learned blend: each sampled user's request just before their held-out event, replayed over the
    index just written with ``held_signals``, one training list each; None with too few lists (the weighted
    blend serves). Runs after the events are released, so the index is loaded beside the signals only."""
    index = VectorIndex.load(directory / INDEX_DIR)
    params = RankParams(profile=ProfileParams(type_weights=signal_params.type_weights))
    examples = [
        example
        for history, target, at in split.cases
        if (example := learning_example(index, held_signals, split.stats_train, history, target, params, at))
        is not None
    ]
    model = learned_blend.fit(examples, split.stats_full)
    logger.info(
        "learned blend trained" if model is not None else "learned blend skipped",
        extra={"training_users": len(split.cases), "lists": len(examples)},
    )
    return model


def load_version(
    directory: Path | VerifiedDirectory,
    expected_encoder_id: str | None = None,
    memory_budget: int | None = None,
) -> tuple[VectorIndex, Signals]:
    """Load the index and signals of a version directory, each file checked against its manifest.

    Pass what :meth:`~embrec.aws.artifacts.ArtifactStore.download_version` returned (a
    :class:`~embrec.manifest.VerifiedDirectory`: its files were hashed as they were downloaded, so they are
    not hashed again); a plain ``Path`` (a cache dir, a local build) is hashed here, file by file. An index
    over ``memory_budget`` bytes is refused (:class:`CompatibilityError`) before it is loaded.
    """
    index = VectorIndex.load(
        subdirectory(directory, INDEX_DIR),
        expected_encoder_id=expected_encoder_id,
        memory_budget=memory_budget,
    )
    index_fusion(index)  # a layout this code cannot read is refused here, not at the first query
    signals = Signals.load(subdirectory(directory, SIGNALS_DIR))
    return index, signals


def load_ranker(directory: Path | VerifiedDirectory, signals: Signals) -> LearnedBlend | None:
    """The version's learned blend (checked against its manifest), None when it has none (too little data,
    or built before the learned blend). One whose item statistics do not cover ``signals``' items is
    refused (:class:`IntegrityError`)."""
    ranker = LearnedBlend.load(subdirectory(directory, RANKER_DIR))
    if ranker is not None and len(ranker.stats) != len(signals):
        raise IntegrityError(f"{RANKER_DIR}: {len(ranker.stats)} items, the signals have {len(signals)}")
    return ranker
