"""The rebuild: scan items and recent interactions, build the index and signals, lay out one version.

:func:`build_version` is the use case with its inputs injected (iterables of stored items and interactions);
:mod:`embrec.app.service` wires it to DynamoDB and publishes the directory with :mod:`embrec.aws.artifacts`. A
version directory holds ``index/`` (the :class:`~embrec.engine.index.VectorIndex`, with its own manifest) and
``signals/`` (CF neighbours and trending); the publisher adds the version manifest that names every file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embrec.domain.fusion import FusionConfig, fuse_rows, index_fusion, plan_fusion
from embrec.domain.model import Interaction, StoredItem
from embrec.domain.signals import SignalParams, Signals, compute_signals
from embrec.engine.index import VectorIndex
from embrec.errors import CompatibilityError
from embrec.manifest import VerifiedDirectory, subdirectory

__all__ = ["INDEX_DIR", "SIGNALS_DIR", "BuiltVersion", "build_version", "load_version"]

INDEX_DIR = "index"
SIGNALS_DIR = "signals"


@dataclass(frozen=True)
class BuiltVersion:
    directory: Path
    items: int
    interactions: int
    skipped_items: int
    encoder_id: str
    dim: int
    details: dict[str, Any]


def build_version(
    items: Iterable[StoredItem],
    interactions: Iterable[tuple[str, Interaction]],
    directory: Path,
    *,
    encoder_id: str,
    now: float,
    signal_params: SignalParams | None = None,
    fusion: FusionConfig | None = None,
) -> BuiltVersion:
    """Build index + signals into ``directory`` from every live item and the given interactions.

    Items without a vector and deleted items are left out (counted in ``skipped_items``). Items carrying
    vectors of several dimensions, or vectors another encoder than ``encoder_id`` made (as recorded with each
    item; items stored before it was recorded are taken as the current encoder's), raise
    :class:`CompatibilityError` (re-upload the catalog: ingest re-encodes them), so an index never labels one
    model's vectors with another's id.

    ``fusion`` (default ``FusionConfig()``: auto) decides the index layout from the whole catalog: the plain
    text vector unless some item has an ``image_embedding`` or the metadata weight is > 0 (see
    :mod:`embrec.domain.fusion`). ``dim`` in the result is the text vectors' dimension (the encoder's); the
    index manifest's ``dim`` and ``fusion`` give the fused layout.
    """
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    metadata: list[dict[str, Any]] = []
    skipped = 0
    foreign: dict[str, int] = {}
    for item in items:
        if item.deleted or item.vector is None:
            skipped += 1
            continue
        if item.encoder_id and item.encoder_id != encoder_id:
            foreign[item.encoder_id] = foreign.get(item.encoder_id, 0) + 1
            continue
        ids.append(item.item_id)
        vectors.append(item.vector)
        metadata.append(dict(item.fields))
    if foreign:
        raise CompatibilityError(
            f"items carry vectors of other encoders {foreign} than the current {encoder_id}: re-upload the "
            "catalog so ingest re-encodes them"
        )
    # Positions in item_id order, not scan order (a parallel scan's order varies): the same items give the
    # same index input digest, so a re-run with no change is recognised as unchanged (embrec.aws.artifacts).
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ids, vectors = [ids[i] for i in order], [vectors[i] for i in order]
    metadata = [metadata[i] for i in order]
    dims = {vector.shape[0] for vector in vectors}
    if len(dims) > 1:
        raise CompatibilityError(f"items carry vectors of several dimensions {sorted(dims)}: re-ingest them")
    dim = dims.pop() if dims else 0
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, max(dim, 1)), np.float32)
    images = [row.get("image_embedding") for row in metadata]
    spec = plan_fusion(fusion or FusionConfig(), dim, (len(image) for image in images if image))
    matrix, fusion_counts = fuse_rows(spec, matrix, metadata, images)
    index = VectorIndex.build(
        ids, matrix, metadata, encoder_id=encoder_id, fusion=None if spec is None else spec.to_dict()
    )
    events = list(interactions)
    signals = compute_signals(events, ids, signal_params, now=now)
    index_manifest = index.save(Path(directory) / INDEX_DIR)
    signals_manifest = signals.save(Path(directory) / SIGNALS_DIR)
    return BuiltVersion(
        directory=Path(directory),
        items=len(ids),
        interactions=len(events),
        skipped_items=skipped,
        encoder_id=encoder_id,
        dim=dim,
        details={"index": index_manifest, "signals": signals_manifest, "fusion": fusion_counts},
    )


def load_version(
    directory: Path | VerifiedDirectory, expected_encoder_id: str | None = None
) -> tuple[VectorIndex, Signals]:
    """Load the index and signals of a version directory, each file checked against its manifest.

    Pass what :meth:`~embrec.aws.artifacts.ArtifactStore.download_version` returned (a
    :class:`~embrec.manifest.VerifiedDirectory`: its files were hashed as they were downloaded, so they are
    not hashed again); a plain ``Path`` (a cache dir, a local build) is hashed here, file by file.
    """
    index = VectorIndex.load(subdirectory(directory, INDEX_DIR), expected_encoder_id=expected_encoder_id)
    index_fusion(index)  # a layout this code cannot read is refused here, not at the first query
    signals = Signals.load(subdirectory(directory, SIGNALS_DIR))
    return index, signals
