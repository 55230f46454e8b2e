"""The item index: hnswlib (chroma-hnswlib 0.7.6) for approximate search, plus what hnswlib does not keep.

A :class:`VectorIndex` holds, per *position* (hnswlib label == position, never reused):

- the L2-normalised float32 vector, in the HNSW graph **and** in a float32 matrix beside it (exact search over
  a filtered subset, MMR, user vectors and score re-computation all need fast row access; hnswlib's
  ``get_items`` returns Python lists). After :meth:`VectorIndex.load` that matrix is usually a read-only
  strided view on the graph file's memory map (see :func:`read_graph_vectors`), replaced by an in-memory
  copy at the first upsert;
- the item id (utf-8 blob + offsets) and a tombstone flag;
- metadata for filters and responses as numpy columns (:mod:`embrec.engine._index_meta`).

Space is inner product on unit vectors, so scores are cosine similarities in [-1, 1].

Filtered search keeps recall when a filter is selective: the allowed set is computed as a vectorised mask
first, then the cheapest search that keeps recall is chosen (thresholds measured, see the class attributes):

- small allowed set (<= ``exact_max_items`` or <= ``exact_max_fraction`` of the positions): exact search over
  the subset (``vectors[allowed] @ q``), whose cost grows with the subset, not the index;
- most items allowed (>= ``overfetch_min_selectivity``, typically only seen items excluded): an unfiltered
  hnswlib query for ``k / selectivity`` (plus margin) neighbours, post-filtered by the mask;
- otherwise hnswlib's filtered search with the mask as its filter callable (each visited node costs a call).

Whenever the graph returns fewer than ``k`` allowed items, the search falls back to exact. Tombstones and
excluded (seen) items are part of the same mask. Final scores are recomputed from the stored vectors in
float64 and sorted by (-score, item_id), so results are deterministic and identical on every path.

On disk (``save``): ``graph.hnsw`` (hnswlib's own file), ``metadata.npz`` (ids, tombstones and metadata
columns; plain arrays), ``manifest.json``. The vectors are stored **once**, inside the graph file: the loader
reads them back out of hnswlib's level-0 block (a fixed, header-described layout, checked against the manifest
and pinned by library name and version) instead of shipping a second float32 copy. That keeps the artifact at
about 1.1x the raw vector bytes instead of 2.1x.

Not thread-safe: one index per Lambda container, used by one request at a time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from embrec.domain.fusion import fuse_rows, index_fusion
from embrec.domain.model import Filters
from embrec.engine._index_meta import MetadataColumns, StringColumn, parse_metadata
from embrec.errors import CompatibilityError, IntegrityError, InvalidInputError, NotFoundError
from embrec.manifest import (
    MANIFEST_FILE,
    VerifiedDirectory,
    describe_files,
    directory_of,
    read_json,
    require_verified,
    verify_files,
    write_json,
)

__all__ = [
    "DEFAULT_EF_CONSTRUCTION",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_M",
    "GRAPH_FILE",
    "LIBRARY",
    "SPACE",
    "IndexDelta",
    "VectorIndex",
    "check_memory_budget",
    "fuse_delta",
    "index_memory_bytes",
    "library_version",
    "read_graph_vectors",
    "write_index",
]

# Chosen on real MiniLM embeddings of PyPI summaries (never uniform random vectors). 100k items: M=16,
# ef_construction=200 gives recall@10 0.955 at ef=64 and 0.980 at ef=128 (0.59 ms); M=32 adds only +0.006 at
# ef=128 for +128 bytes/item of links. 5k fixture: ef=64 0.989, ef=128 0.998. At 2M items recall at a fixed
# ef drops further, so ef_search is the knob to raise (it is in the manifest), not M.
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 128
SPACE = "ip"
LIBRARY = "chroma-hnswlib"
FORMAT = "embrec-index/1"
DELTA_FORMAT = "embrec-index-delta/1"
GRAPH_FILE = "graph.hnsw"
METADATA_FILE = "metadata.npz"
DELTA_FILE = "delta.npz"
_RANDOM_SEED = 100
_HNSW_HEADER_BYTES = 96  # hnswalg.h saveIndex: 6 size_t, int, uint32, 3 size_t, double, size_t


def library_version() -> str:
    """Installed chroma-hnswlib version (index files do not cross-load between hnswlib builds)."""
    return importlib.metadata.version(LIBRARY)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_ids(item_ids: Sequence[str], field_name: str = "item_ids") -> list[str]:
    ids = list(item_ids)
    for item_id in ids:
        if not isinstance(item_id, str) or not item_id:
            raise InvalidInputError(field_name, "every id must be a non-empty string")
    if len(set(ids)) != len(ids):
        raise InvalidInputError(field_name, "duplicate ids in one batch")
    return ids


def _unit_rows(vectors: Any, dim: int | None, field_name: str = "vectors") -> np.ndarray:
    """(n, dim) float32, each row L2-normalised. Rejects wrong shape, NaN/inf and zero rows."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim) or array.shape[1] == 0:
        raise InvalidInputError(field_name, f"expected shape (n, {dim or 'dim'}), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(field_name, "contains NaN or infinity")
    norms = np.linalg.norm(array.astype(np.float64), axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InvalidInputError(field_name, "contains a zero vector")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _check_k(k: Any) -> None:
    """``k`` is a positive integer (a bool is not), or :class:`InvalidInputError`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidInputError("k", "must be a positive integer")


def _unit_query(vector: Any, dim: int) -> np.ndarray:
    """(dim,) float32 unit vector from any array of ``dim`` values: :func:`_unit_rows` for one row, without
    its per-call reductions (one float64 dot product covers NaN, infinity and zero)."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.shape[0] != dim or dim == 0:
        raise InvalidInputError("vector", f"expected shape (1, {dim}), got {(1, array.shape[0])}")
    wide = array.astype(np.float64)
    norm = math.sqrt(float(wide @ wide))  # inf/NaN if any value is; float32 squares fit in float64
    if not math.isfinite(norm):
        raise InvalidInputError("vector", "contains NaN or infinity")
    if norm == 0.0:
        raise InvalidInputError("vector", "contains a zero vector")
    return (wide / norm).astype(np.float32)


def _parse_rows(metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    if metadata is None:
        return [parse_metadata(None) for _ in range(n)]
    rows = list(metadata)
    if len(rows) != n:
        raise InvalidInputError("metadata", f"expected {n} rows, got {len(rows)}")
    return [parse_metadata(row, f"metadata[{i}]") for i, row in enumerate(rows)]


class VectorIndex:
    """Approximate nearest-neighbour index over item vectors with metadata filters and tombstones.

    Build with :meth:`build` or :meth:`load`; never call the constructor directly.
    """

    # Routing thresholds, from 50k real-derived MiniLM vectors (2 loaded cores): exact search over n allowed
    # rows costs ~ n; hnswlib's filtered search costs ~ 1 / selectivity (0.5%: 40x exact, 20%: 0.6x exact).
    #: Exact search when the allowed set has at most this many items ...
    exact_max_items: int = 8192
    #: ... or at most this fraction of all positions.
    exact_max_fraction: float = 0.01
    #: Over-fetch and post-filter (no per-node callback) when at least this fraction is allowed.
    overfetch_min_selectivity: float = 0.5

    def __init__(
        self,
        *,
        graph: hnswlib.Index,
        vectors: np.ndarray,
        ids: StringColumn,
        deleted: np.ndarray,
        meta: MetadataColumns,
        encoder_id: str,
        M: int,
        ef_construction: int,
        ef_search: int,
        fusion: Mapping[str, Any] | None = None,
    ) -> None:
        self._graph = graph
        self._vectors = vectors  # (capacity, dim) float32; rows [0, n) are positions
        self._ids = ids
        self._n = len(ids)
        self._deleted = deleted  # (capacity,) bool
        self._meta = meta
        self._position: dict[str, int] = {}
        # Decoded ids per position (tombstones included): the dict above already holds these strings, so
        # the list costs a pointer per item and spares a utf-8 decode per id on the request path.
        self._id_list: list[str] = ids.tolist()
        for position, item_id in enumerate(self._id_list):
            if not deleted[position]:
                self._position[item_id] = position
        self.encoder_id = encoder_id
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        # The multi-modal layout (embrec.domain.fusion.FusionSpec.to_dict()); None = plain text vectors.
        self.fusion = None if fusion is None else dict(fusion)
        # search_among's block: (positions, their rows gathered into one array). A position's row never
        # changes (an upsert appends), so the block is valid for as long as the positions are the same.
        self._block: tuple[np.ndarray, np.ndarray] | None = None

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        *,
        encoder_id: str = "",
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        num_threads: int = -1,
        fusion: Mapping[str, Any] | None = None,
    ) -> VectorIndex:
        """Index ``vectors`` (n, dim) float-like (normalised here) under ``item_ids`` (unique, non-empty).

        ``metadata`` rows are dicts as ``Item.to_dict`` gives them (title, category, tags, price, available,
        created_at; other keys ignored). ``num_threads`` -1 = all cores (graph construction only).
        ``fusion`` is the vectors' multi-modal layout (:mod:`embrec.domain.fusion`), recorded in the manifest.
        """
        ids = _check_ids(item_ids)
        unit = _unit_rows(vectors, None)
        if unit.shape[0] != len(ids):
            raise InvalidInputError("vectors", f"{unit.shape[0]} rows for {len(ids)} ids")
        for name, value in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise InvalidInputError(name, "must be an integer >= 2")
        rows = _parse_rows(metadata, len(ids))
        n, dim = unit.shape
        graph = hnswlib.Index(space=SPACE, dim=dim)
        graph.init_index(
            max_elements=max(n, 16), M=M, ef_construction=ef_construction, random_seed=_RANDOM_SEED
        )
        if n:
            graph.add_items(unit, np.arange(n, dtype=np.int64), num_threads=num_threads)
        meta = MetadataColumns()
        meta.append(rows)
        return cls(
            graph=graph,
            vectors=unit,
            ids=StringColumn.from_strings(ids),
            deleted=np.zeros(n, dtype=bool),
            meta=meta,
            encoder_id=encoder_id,
            M=M,
            ef_construction=ef_construction,
            ef_search=ef_search,
            fusion=fusion,
        )

    # -- introspection --------------------------------------------------------------------------------------
    @property
    def graph(self) -> hnswlib.Index:
        """The hnswlib graph this index searches (read-only use: benchmarks of the library call it makes)."""
        return self._graph

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        """Live (not tombstoned) items."""
        return len(self._position)

    @property
    def positions(self) -> int:
        """Positions used, tombstones included (what the graph and the arrays hold)."""
        return self._n

    def contains(self, item_id: str) -> bool:
        return item_id in self._position

    def live_ids(self) -> list[str]:
        """Live item ids in position (insertion) order."""
        return list(self._position)

    def _require(self, item_id: str) -> int:
        position = self._position.get(item_id)
        if position is None:
            raise NotFoundError(f"item {item_id!r} is not in the index")
        return position

    def metadata(self, item_id: str) -> dict[str, Any]:
        """``{title, category, tags (list), price, available, created_at}``; NotFoundError if unknown."""
        return self._meta.row(self._require(item_id))

    def vectors_for(self, item_ids: Sequence[str]) -> np.ndarray:
        """(len(item_ids), dim) float32 unit vectors (a copy). NotFoundError for unknown or deleted ids."""
        positions = np.array([self._require(item_id) for item_id in item_ids], dtype=np.int64)
        return self._vectors[positions].reshape(len(positions), self.dim)

    # -- positions (the request path's vectorised view: arrays over positions instead of per-id calls) ------
    @property
    def generation(self) -> tuple[int, int]:
        """Changes whenever the live set does: (positions used, live items). Upserts always grow the first,
        deletes only shrink the second, so a value never repeats: a cache keyed on it cannot go stale."""
        return (self._n, len(self._position))

    def positions_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """int64 (len(item_ids),): each live id's position, -1 for unknown or deleted ids."""
        get = self._position.get
        return np.fromiter((get(item_id, -1) for item_id in item_ids), dtype=np.int64, count=len(item_ids))

    def ids_at(self, positions: np.ndarray) -> list[str]:
        """Item ids at ``positions`` (int, any shape flattened)."""
        id_list = self._id_list
        return [id_list[p] for p in np.asarray(positions, dtype=np.int64).reshape(-1).tolist()]

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """(len(positions), dim) float32 unit vectors at ``positions`` (a copy)."""
        return self._vectors[np.asarray(positions, dtype=np.int64).reshape(-1)]

    def created_at_of(self, positions: np.ndarray) -> np.ndarray:
        """float64 (len(positions),): ``created_at`` epoch seconds at ``positions``, NaN where missing."""
        return self._meta.created_at(np.asarray(positions, dtype=np.int64).reshape(-1))

    def allowed_mask(
        self, filters: Filters | None, exclude_positions: np.ndarray | None = None
    ) -> np.ndarray:
        """bool (positions,): live, passing ``filters``, and not in ``exclude_positions`` (-1 ignored)."""
        mask = ~self._deleted[: self._n]
        if filters is not None and not filters.is_empty():
            mask &= self._meta.mask(filters)
        if exclude_positions is not None and exclude_positions.size:
            mask[exclude_positions[exclude_positions >= 0]] = False
        return mask

    def matches(self, item_ids: Sequence[str], filters: Filters | None) -> np.ndarray:
        """bool (len(item_ids),): live and passing ``filters``. Unknown or deleted ids are False."""
        positions = self.positions_of(item_ids)
        known = positions >= 0
        result = known.copy()
        if filters is not None and not filters.is_empty() and known.any():
            result[known] = self._meta.mask(filters, positions[known])
        return result

    # -- search ---------------------------------------------------------------------------------------------
    def search(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters | None = None,
        exclude: Collection[str] = (),
    ) -> list[tuple[str, float]]:
        """Top ``k`` live items by cosine similarity to ``vector`` (dim,), passing ``filters``, not excluded.

        Returns ``[(item_id, score)]``, score descending, ties by item_id; fewer than ``k`` when fewer items
        qualify. ``vector`` need not be normalised (it is here). Unknown ids in ``exclude`` are ignored.
        """
        positions, scores = self._search(vector, k, self._allowed(filters, exclude))
        id_list = self._id_list
        return list(zip([id_list[p] for p in positions.tolist()], scores.tolist(), strict=True))

    def search_positions(
        self, vector: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for a caller that already holds the :meth:`allowed_mask` (bool over positions): the
        request path builds it once for every interest vector and keeps working on positions. Returns
        ``(positions int64, scores float64)``, in :meth:`search`'s order."""
        return self._search(vector, k, allowed)

    def search_among(
        self, vector: np.ndarray, k: int, positions: np.ndarray, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_positions` over the ``allowed`` items among ``positions`` (int, distinct), for a
        caller that asks among the same few positions request after request (the request path's new items).
        Up to ``exact_max_items`` positions, their rows are gathered once into one block, kept until another
        set is asked for, and each call scores the block instead of gathering rows from across the matrix
        (BENCHMARKS.md §1). The same results as ``search_positions`` with the mask of those items."""
        _check_k(k)
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size > self.exact_max_items:
            mask = np.zeros(self._n, dtype=bool)
            mask[positions] = allowed[positions]
            return self._search(vector, k, mask)
        query = _unit_query(vector, self.dim)
        ok = allowed[positions]
        candidates = positions[ok]
        if candidates.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        block = self._block
        if block is None or not np.array_equal(block[0], positions):
            block = (positions.copy(), self._vectors[positions])
            self._block = block
        return self._top(query, min(int(k), int(candidates.size)), candidates, (block[1] @ query)[ok])

    def _search(self, vector: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        query = _unit_query(vector, self.dim)
        allowed = len(self) if mask is None else int(np.count_nonzero(mask))
        if allowed == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        k = min(int(k), allowed)
        if mask is not None and (
            allowed <= self.exact_max_items or allowed <= self.exact_max_fraction * self._n
        ):
            return self._exact(query, k, mask)
        positions = None
        if mask is not None and allowed >= self.overfetch_min_selectivity * len(self):
            positions = self._overfetch(query, k, mask, allowed)
        if positions is None:
            positions = self._graph_search(query, k, mask)
        if positions is None:
            return self._exact(query, k, mask)
        return self._ranked(query, positions, k)

    def _allowed(self, filters: Filters | None, exclude: Collection[str]) -> np.ndarray | None:
        """:meth:`allowed_mask` for ``exclude`` ids; None when only tombstones restrict (hnswlib has them)."""
        excluded = self.positions_of(list(exclude))
        excluded = excluded[excluded >= 0]
        if (filters is None or filters.is_empty()) and not excluded.size:
            return None
        return self.allowed_mask(filters, excluded)

    def _overfetch(self, query: np.ndarray, k: int, mask: np.ndarray, allowed: int) -> np.ndarray | None:
        """Top ``k`` allowed positions from an unfiltered query for more; None if too few survive the mask."""
        fetch = min(len(self), math.ceil(k * len(self) / allowed * 1.2) + 8)
        # ef scaled like the fetch, so the allowed part of the beam is as wide as an unfiltered search's
        found = self._graph_search(query, fetch, None, ef=math.ceil(self.ef_search * len(self) / allowed))
        if found is None:
            return None
        kept = found[mask[found]]
        return kept[:k] if kept.shape[0] >= k else None

    def _graph_search(
        self, query: np.ndarray, k: int, mask: np.ndarray | None, ef: int | None = None
    ) -> np.ndarray | None:
        """Positions of hnswlib's top ``k`` (int64); None when it cannot return ``k`` (caller goes exact)."""
        self._graph.set_ef(max(ef or self.ef_search, k))
        # bytes.__getitem__ is a C-level callable returning 0/1: the cheapest filter hnswlib can call back.
        allowed = None if mask is None else mask.tobytes().__getitem__
        try:
            labels, _ = self._graph.knn_query(query.reshape(1, -1), k=k, num_threads=1, filter=allowed)
        except RuntimeError:  # hnswlib found fewer than k allowed items
            return None
        return np.asarray(labels[0], dtype=np.int64)

    def _exact(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if mask is None:
            mask = ~self._deleted[: self._n]
        candidates = np.flatnonzero(mask)
        if candidates.shape[0] * 4 > self._n:
            scores = (self._vectors[: self._n] @ query)[candidates]
        else:
            scores = self._vectors[candidates] @ query
        return self._top(query, k, candidates, scores)

    def _top(
        self, query: np.ndarray, k: int, candidates: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The exact top ``k`` of ``candidates`` given their float32 ``scores``: those near the k-th,
        re-ranked by :meth:`_ranked`."""
        if candidates.shape[0] > k:
            kth = np.partition(scores, candidates.shape[0] - k)[candidates.shape[0] - k]
            # Small slack so float32/float64 rounding at the boundary cannot drop a tie before re-ranking.
            keep = scores >= kth - 1e-6
            candidates = candidates[keep]
        return self._ranked(query, candidates, k)

    def _ranked(self, query: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of ``positions`` by float64 score, ties by item id (the ordering every path returns):
        ``(positions int64, scores float64)``."""
        scores = self._vectors[positions].astype(np.float64) @ query.astype(np.float64)
        order = np.argsort(-scores, kind="stable")
        head = scores[order[: k + 1]]
        if head.size > 1 and bool(np.any(head[1:] == head[:-1])):
            # Equal scores inside the top k or at its edge (duplicate vectors): ties go by item id, in Python.
            id_list = self._id_list
            pairs = zip(scores.tolist(), positions.tolist(), strict=True)
            keys = [(-score, id_list[p]) for score, p in pairs]
            order = np.asarray(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
        order = order[:k]
        return positions[order].astype(np.int64, copy=False), scores[order]

    # -- incremental updates --------------------------------------------------------------------------------
    def upsert(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add or replace items. A replaced item gets a new position; its old one becomes a tombstone."""
        ids = _check_ids(item_ids)
        unit = _unit_rows(vectors, self.dim)
        if unit.shape[0] != len(ids):
            raise InvalidInputError("vectors", f"{unit.shape[0]} rows for {len(ids)} ids")
        rows = _parse_rows(metadata, len(ids))
        if not ids:
            return
        start, end = self._n, self._n + len(ids)
        if end > self._graph.get_max_elements():
            self._graph.resize_index(max(end, 2 * self._graph.get_max_elements()))
        self._graph.add_items(unit, np.arange(start, end, dtype=np.int64), num_threads=1)
        self._tombstone([self._position[item_id] for item_id in ids if item_id in self._position])
        self._vectors = _grow_rows(self._vectors, end)
        self._vectors[start:end] = unit
        self._deleted = _grow_rows(self._deleted, end)
        self._deleted[start:end] = False
        self._ids.extend(ids)
        self._id_list.extend(ids)
        self._meta.append(rows)
        self._n = end
        for offset, item_id in enumerate(ids):
            self._position[item_id] = start + offset

    def delete(self, item_ids: Sequence[str]) -> int:
        """Tombstone items (idempotent; unknown ids ignored). Returns how many were live."""
        positions = [self._position.pop(item_id) for item_id in set(item_ids) if item_id in self._position]
        self._tombstone(positions)
        return len(positions)

    def _tombstone(self, positions: Sequence[int]) -> None:
        for position in positions:
            self._graph.mark_deleted(int(position))
            self._deleted[position] = True

    def apply(self, delta: IndexDelta) -> None:
        """Apply a published :class:`IndexDelta` (upserts, then deletes); refuses another encoder's delta."""
        if delta.dim != self.dim:
            raise CompatibilityError(f"delta dim {delta.dim} does not match the index dim {self.dim}")
        if delta.encoder_id and self.encoder_id and delta.encoder_id != self.encoder_id:
            raise CompatibilityError(
                f"delta encoder {delta.encoder_id!r} does not match the index encoder {self.encoder_id!r}"
            )
        self.upsert(list(delta.item_ids), delta.vectors, list(delta.metadata))
        self.delete(list(delta.deletes))

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write graph, metadata and manifest (last) into ``directory``; returns the manifest document."""
        arrays = _saved_arrays(self._ids, self._deleted[: self._n], self._meta)
        head = _manifest_head(
            dim=self.dim, M=self.M, ef_construction=self.ef_construction, ef_search=self.ef_search,
            count=len(self), positions=self._n, encoder_id=self.encoder_id, fusion=self.fusion,
        )
        digest = _input_digest(head, arrays, self._n)
        digest.update(np.ascontiguousarray(self._vectors[: self._n]).reshape(-1).view(np.uint8).data)
        return _write(Path(directory), self._graph, arrays, head, digest)

    @classmethod
    def load(
        cls,
        directory: Path | VerifiedDirectory,
        expected_encoder_id: str | None = None,
        expected_dim: int | None = None,
        memory_budget: int | None = None,
    ) -> VectorIndex:
        """Load a saved index after verifying every file's sha256 and size, then its compatibility.

        ``directory``: a plain path is hashed here; a :class:`~embrec.manifest.VerifiedDirectory` that lists
        these files with the manifest's digests (just downloaded and hashed in flight) is not hashed again.
        Raises :class:`IntegrityError` (hash/size/layout) or :class:`CompatibilityError` (dim, encoder id,
        space, format, library or library version differ, or the index would not fit ``memory_budget``
        bytes: checked from the manifest before a byte is hashed or loaded).
        """
        source, directory = directory, directory_of(directory)
        manifest = read_json(directory / MANIFEST_FILE)
        files = manifest.get("files")
        if not isinstance(files, dict) or {GRAPH_FILE, METADATA_FILE} - set(files):
            raise IntegrityError("manifest does not list the graph and metadata files")
        try:
            dim, positions, links = int(manifest["dim"]), int(manifest["positions"]), int(manifest["M"])
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("manifest lacks dim, positions or M") from None
        check_memory_budget(positions, dim, memory_budget, links)
        require_verified(source, files)
        _check_compatible(manifest, expected_encoder_id, expected_dim)
        with np.load(directory / METADATA_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        for name in ("ids_blob", "ids_offsets", "deleted"):
            if name not in arrays:
                raise IntegrityError(f"metadata arrays missing: {name}")
        ids = StringColumn.from_arrays(arrays["ids_blob"], arrays["ids_offsets"], "ids")
        deleted = np.array(arrays["deleted"], dtype=bool)
        if len(ids) != positions or deleted.shape != (positions,):
            raise IntegrityError("ids or tombstones do not match the manifest's position count")
        meta = MetadataColumns.from_arrays(arrays, positions)
        vectors = read_graph_vectors(directory / GRAPH_FILE, dim, positions)
        graph = hnswlib.Index(space=SPACE, dim=dim)
        graph.load_index(str(directory / GRAPH_FILE), max_elements=max(positions, 16))
        index = cls(
            graph=graph,
            vectors=vectors,
            ids=ids,
            deleted=deleted,
            meta=meta,
            encoder_id=str(manifest.get("encoder_id", "")),
            M=int(manifest["M"]),
            ef_construction=int(manifest["ef_construction"]),
            ef_search=int(manifest["ef_search"]),
            fusion=manifest.get("fusion"),
        )
        if len(index) != int(manifest["count"]):
            raise IntegrityError("live count does not match the manifest")
        return index

    def nbytes(self) -> dict[str, int]:
        """In-memory bytes by part (vectors matrix, metadata, ids), for capacity planning."""
        return {
            "vectors": self._n * self.dim * 4,
            "metadata": self._meta.nbytes(),
            "ids": self._ids.nbytes() + self._n,
        }


# Per item, beside hnswlib's level-0 record: ids (blob, list, lookup dict), tombstone, metadata columns, the
# request path's aligned arrays (BENCHMARKS.md §4: 1,867 bytes/item on disk at 384-d, 1.22x the vector).
_PER_ITEM_OVERHEAD = 400


def index_memory_bytes(positions: int, dim: int, M: int = DEFAULT_M) -> int:
    """Estimated resident bytes of a loaded index of ``positions`` x ``dim``.

    hnswlib's level-0 record (vector, 2M links, label) counts twice: once in the graph hnswlib loads, once
    in the file mapping the vectors are read from (exact search and user vectors touch every page), plus
    :data:`_PER_ITEM_OVERHEAD`. The rebuild checks it before publishing, each container before loading.
    """
    record = 4 * dim + 4 * (2 * M + 1) + 8
    return positions * (2 * record + _PER_ITEM_OVERHEAD)


def check_memory_budget(positions: int, dim: int, budget_bytes: int | None, M: int = DEFAULT_M) -> None:
    """:class:`CompatibilityError` when an index of ``positions`` x ``dim`` would not fit ``budget_bytes``
    (None: no limit), so it is refused whole instead of running the container out of memory."""
    needed = index_memory_bytes(positions, dim, M)
    if budget_bytes is not None and needed > budget_bytes:
        raise CompatibilityError(
            f"an index of {positions:,} x {dim} needs ~{needed / 2**20:,.0f} MB, over the "
            f"{budget_bytes / 2**20:,.0f} MB index memory budget (EMBREC_INDEX_MEMORY_MB)"
        )


def _saved_arrays(ids: StringColumn, deleted: np.ndarray, meta: MetadataColumns) -> dict[str, np.ndarray]:
    """The arrays of ``metadata.npz`` (ids, tombstones, metadata columns)."""
    ids_blob, ids_offsets = ids.arrays()
    arrays = dict(meta.arrays())
    arrays.update(ids_blob=ids_blob, ids_offsets=ids_offsets, deleted=deleted)
    return arrays


def _manifest_head(
    *, dim: int, M: int, ef_construction: int, ef_search: int, count: int, positions: int, encoder_id: str,
    fusion: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The manifest's parameters: everything but ``created_at``, ``files`` and ``input_sha256``."""
    head: dict[str, Any] = {
        "format": FORMAT,
        "dim": dim,
        "space": SPACE,
        "M": M,
        "ef_construction": ef_construction,
        "ef_search": ef_search,
        "count": count,
        "positions": positions,
        "encoder_id": encoder_id,
        "library": LIBRARY,
        "library_version": library_version(),
    }
    if fusion is not None:
        head["fusion"] = dict(fusion)
    return head


def _input_digest(head: Mapping[str, Any], arrays: Mapping[str, np.ndarray], positions: int) -> Any:
    """sha256 of everything the saved index is a function of, up to the vectors' bytes, which the caller
    feeds next (positions x dim float32 unit rows, in position order; possibly block by block): the manifest
    ``head``, the ids, tombstones and metadata ``arrays`` (as saved), then the vectors.

    The graph file's bytes are not a function of these (hnswlib leaves unused link slots uninitialised
    and a multi-threaded build inserts in a racy order), so two builds of the same input have different
    ``files`` hashes but the same ``input_sha256``: the rebuild compares this to skip a no-op publish.
    Columns are hashed in name order and ``vectors`` sorts last, which is what lets it be streamed.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(head), sort_keys=True, separators=(",", ":")).encode())
    assert all(name < "vectors" for name in arrays)
    for name in sorted(arrays):
        column = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}\0{column.dtype.str}\0{column.shape}\0".encode())
        digest.update(column.reshape(-1).view(np.uint8).data)
    digest.update(f"\0vectors\0{np.dtype(np.float32).str}\0{(positions, int(head['dim']))}\0".encode())
    return digest


def _write(
    directory: Path,
    graph: hnswlib.Index,
    arrays: Mapping[str, np.ndarray],
    head: Mapping[str, Any],
    digest: Any,
) -> dict[str, Any]:
    """Write graph, metadata and manifest (last) into ``directory``; returns the manifest document."""
    directory.mkdir(parents=True, exist_ok=True)
    graph.save_index(str(directory / GRAPH_FILE))
    with open(directory / METADATA_FILE, "wb") as stream:
        np.savez(stream, allow_pickle=False, **arrays)
    manifest = dict(head)
    manifest.update(
        created_at=_now_iso(),
        files=describe_files(directory, [GRAPH_FILE, METADATA_FILE]),
        input_sha256=digest.hexdigest(),
    )
    write_json(directory / MANIFEST_FILE, manifest)
    return manifest


_WRITE_SLICE_ROWS = 4096


def write_index(
    directory: Path,
    item_ids: Sequence[str],
    blocks: Iterable[np.ndarray],
    meta: MetadataColumns,
    *,
    dim: int,
    encoder_id: str = "",
    fusion: Mapping[str, Any] | None = None,
    M: int = DEFAULT_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    num_threads: int = -1,
) -> dict[str, Any]:
    """Build an index and save it into ``directory`` without ever holding its vectors twice: the same files
    (and ``input_sha256``) as ``VectorIndex.build(...).save(directory)``, for the rebuild.

    ``blocks`` yields consecutive float-like (rows, dim) blocks in position order (``item_ids`` order); each
    is normalised, hashed and added to the graph, then dropped by the caller's generator before the next, so
    the peak is hnswlib's copy plus one block. ``meta`` holds one row per id, in the same order. An empty
    index keeps ``dim`` (the encoder's), so a query against it answers an empty list, not an error.
    """
    ids = _check_ids(item_ids)
    n = len(ids)
    for name, value in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise InvalidInputError(name, "must be an integer >= 2")
    if dim < 1 or meta.n != n:
        raise InvalidInputError("vectors", f"dim {dim} and {meta.n} metadata rows for {n} ids")
    graph = hnswlib.Index(space=SPACE, dim=dim)
    graph.init_index(max_elements=max(n, 16), M=M, ef_construction=ef_construction, random_seed=_RANDOM_SEED)
    arrays = _saved_arrays(StringColumn.from_strings(ids), np.zeros(n, dtype=bool), meta)
    head = _manifest_head(
        dim=dim, M=M, ef_construction=ef_construction, ef_search=ef_search, count=n, positions=n,
        encoder_id=encoder_id, fusion=fusion,
    )
    digest = _input_digest(head, arrays, n)
    start = 0
    for block in blocks:
        # normalised a slice at a time: _unit_rows works in float64, ~3 copies of what it is given
        for offset in range(0, len(block), _WRITE_SLICE_ROWS):
            unit = _unit_rows(block[offset : offset + _WRITE_SLICE_ROWS], dim)
            if start + unit.shape[0] > n:
                raise InvalidInputError("vectors", f"more rows than the {n} ids")
            digest.update(unit.reshape(-1).view(np.uint8).data)
            labels = np.arange(start, start + unit.shape[0], dtype=np.int64)
            graph.add_items(unit, labels, num_threads=num_threads)
            start += unit.shape[0]
    if start != n:
        raise InvalidInputError("vectors", f"{start} rows for {n} ids")
    return _write(Path(directory), graph, arrays, head, digest)


def _grow_rows(array: np.ndarray, needed: int) -> np.ndarray:
    if needed <= array.shape[0]:
        return array
    grown = np.empty((max(needed, 2 * array.shape[0], 16), *array.shape[1:]), dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


def _check_compatible(
    manifest: Mapping[str, Any], expected_encoder_id: str | None, expected_dim: int | None
) -> None:
    if manifest.get("format") != FORMAT:
        raise CompatibilityError(f"index format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("space") != SPACE:
        raise CompatibilityError(f"index space {manifest.get('space')!r} is not {SPACE!r}")
    if manifest.get("library") != LIBRARY or manifest.get("library_version") != library_version():
        raise CompatibilityError(
            f"index written by {manifest.get('library')} {manifest.get('library_version')}, "
            f"this runtime has {LIBRARY} {library_version()}"
        )
    fusion = manifest.get("fusion")
    if fusion is not None and (not isinstance(fusion, dict) or fusion.get("dim") != manifest.get("dim")):
        raise CompatibilityError("the index's fusion layout does not declare the index dim")
    if expected_dim is not None and int(manifest.get("dim", -1)) != expected_dim:
        raise CompatibilityError(f"index dim {manifest.get('dim')} is not the expected {expected_dim}")
    if expected_encoder_id is not None and manifest.get("encoder_id") != expected_encoder_id:
        raise CompatibilityError(
            f"index encoder {manifest.get('encoder_id')!r} is not the expected {expected_encoder_id!r}"
        )


def read_graph_vectors(path: Path, dim: int, positions: int) -> np.ndarray:
    """(positions, dim) float32: the vectors stored in an hnswlib index file, ordered by label.

    hnswlib's file is a 96-byte header (offsetLevel0, max_elements, cur_element_count, size_data_per_element,
    label_offset, offsetData, ...) followed by ``cur_element_count`` fixed-size level-0 records
    ``[links][vector dim*4][label u64]``. Every header field we rely on is checked; a layout we do not
    understand is an :class:`IntegrityError`, never a silent misread.

    The result is a read-only strided view on a copy-on-write memory map of the file: no copy and no fresh
    memory at cold start (the file was just written, so its pages are in the page cache; first-touching a
    new 150 MB matrix cost 0.2-1 s on this VM), and numpy's BLAS products read it in place (row stride =
    record size). hnswlib stores records in insertion order; a multi-threaded build inserts positions
    0..n-1 in order but for a few races (36 of 100k in one build), so the few misplaced rows are moved into
    label order in the private mapping (their pages become private copies; the file is never written).
    The file must not be rewritten in place while the view lives (the artifact store never does: a
    re-download goes to a new directory, renamed into place).
    """
    path = Path(path)
    size = path.stat().st_size
    if size < _HNSW_HEADER_BYTES:
        raise IntegrityError(f"{path.name}: too short for an hnswlib header")
    raw = np.memmap(path, dtype=np.uint8, mode="c")
    offset_level0, _, count, record, label_offset, data_offset = (
        int(x) for x in np.frombuffer(raw[:48].tobytes(), dtype="<u8")
    )
    if (
        offset_level0 != 0
        or count != positions
        or label_offset != data_offset + 4 * dim
        or record != label_offset + 8
        or data_offset % 4
        or record % 4
        or size < _HNSW_HEADER_BYTES + count * record
    ):
        raise IntegrityError(f"{path.name}: hnswlib layout does not match the manifest ({dim}, {positions})")
    if count == 0:
        return np.zeros((0, dim), dtype=np.float32)
    records = raw[_HNSW_HEADER_BYTES : _HNSW_HEADER_BYTES + count * record].reshape(count, record)
    labels = records[:, label_offset:record].view("<u8").reshape(count)
    vectors = records[:, data_offset:label_offset].view("<f4")
    misplaced = np.flatnonzero(labels != np.arange(count, dtype=np.uint64))
    if misplaced.size:
        targets = labels[misplaced]
        # labels are the positions 0..n-1 iff the misplaced records' labels are the misplaced positions
        if targets.max() >= count or not np.array_equal(np.sort(targets.astype(np.int64)), misplaced):
            raise IntegrityError(f"{path.name}: labels are not the positions 0..{count - 1}")
        vectors[targets.astype(np.int64)] = vectors[misplaced]  # the right side is a copy: cycles are safe
    vectors.flags.writeable = False
    return vectors.view(np.ndarray)  # same memory; a plain ndarray indexes without np.memmap's Python layer


@dataclass(frozen=True)
class IndexDelta:
    """A batch of index changes published by ingestion and applied by warm containers.

    ``item_ids`` (n,) with ``vectors`` (n, dim) float32 and ``metadata`` (n dicts) are upserts; ``deletes``
    are tombstones. An id may not be both upserted and deleted in one delta. ``images`` (n entries, or empty
    for none) are the items' raw image embeddings (any length, None = no image) for
    :mod:`embrec.domain.fusion`.
    """

    item_ids: tuple[str, ...]
    vectors: np.ndarray
    metadata: tuple[Mapping[str, Any], ...] = ()
    deletes: tuple[str, ...] = ()
    encoder_id: str = ""
    images: tuple[tuple[float, ...] | None, ...] = ()

    def __post_init__(self) -> None:
        ids = tuple(_check_ids(self.item_ids))
        deletes = tuple(dict.fromkeys(self.deletes))
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise InvalidInputError("vectors", f"expected ({len(ids)}, dim), got {vectors.shape}")
        if len(ids) and not np.all(np.isfinite(vectors)):
            raise InvalidInputError("vectors", "contains NaN or infinity")
        metadata = tuple(self.metadata) if self.metadata else tuple({} for _ in ids)
        if len(metadata) != len(ids):
            raise InvalidInputError("metadata", f"expected {len(ids)} rows, got {len(metadata)}")
        overlap = set(ids) & set(deletes)
        if overlap:
            raise InvalidInputError("deletes", f"ids both upserted and deleted: {sorted(overlap)[:3]}")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "deletes", deletes)
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "metadata", tuple(parse_metadata(row) for row in metadata))
        images = tuple(None if image is None else tuple(float(v) for v in image) for image in self.images)
        if images and len(images) != len(ids):
            raise InvalidInputError("images", f"expected {len(ids)} rows, got {len(images)}")
        object.__setattr__(self, "images", images if any(image is not None for image in images) else ())

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``delta.npz`` and ``manifest.json`` (last); returns the manifest."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = MetadataColumns()
        meta.append(list(self.metadata))
        ids_blob, ids_offsets = StringColumn.from_strings(self.item_ids).arrays()
        deletes_blob, deletes_offsets = StringColumn.from_strings(self.deletes).arrays()
        arrays = dict(meta.arrays())
        arrays.update(
            ids_blob=ids_blob,
            ids_offsets=ids_offsets,
            deletes_blob=deletes_blob,
            deletes_offsets=deletes_offsets,
            vectors=self.vectors,
        )
        if self.images:
            # Ragged rows: values concatenated, offsets (n + 1,); an empty row is an item without an image.
            lengths = [0 if image is None else len(image) for image in self.images]
            arrays["image_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            arrays["image_values"] = np.array(
                [v for image in self.images if image is not None for v in image], dtype=np.float32
            )
        with open(directory / DELTA_FILE, "wb") as stream:
            np.savez(stream, allow_pickle=False, **arrays)
        manifest = {
            "format": DELTA_FORMAT,
            "dim": self.dim,
            "encoder_id": self.encoder_id,
            "upserts": len(self.item_ids),
            "deletes": len(self.deletes),
            "created_at": _now_iso(),
            "files": describe_files(directory, [DELTA_FILE]),
        }
        write_json(directory / MANIFEST_FILE, manifest)
        return manifest

    @classmethod
    def load(
        cls, directory: Path, expected_encoder_id: str | None = None, expected_dim: int | None = None
    ) -> IndexDelta:
        """Verify hashes (IntegrityError) and compatibility (CompatibilityError), then load."""
        directory = Path(directory)
        manifest = read_json(directory / MANIFEST_FILE)
        files = manifest.get("files")
        if not isinstance(files, dict) or DELTA_FILE not in files:
            raise IntegrityError("delta manifest does not list delta.npz")
        verify_files(directory, files)
        if manifest.get("format") != DELTA_FORMAT:
            raise CompatibilityError(f"delta format {manifest.get('format')!r} is not {DELTA_FORMAT!r}")
        if expected_dim is not None and manifest.get("dim") != expected_dim:
            raise CompatibilityError(f"delta dim {manifest.get('dim')} is not the expected {expected_dim}")
        if expected_encoder_id is not None and manifest.get("encoder_id") != expected_encoder_id:
            raise CompatibilityError(f"delta encoder {manifest.get('encoder_id')!r} is not the expected one")
        with np.load(directory / DELTA_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        try:
            ids = StringColumn.from_arrays(arrays["ids_blob"], arrays["ids_offsets"], "ids").tolist()
            deletes_column = StringColumn.from_arrays(
                arrays["deletes_blob"], arrays["deletes_offsets"], "deletes"
            )
            deletes = deletes_column.tolist()
            vectors = arrays["vectors"]
        except KeyError as missing:
            raise IntegrityError(f"delta arrays missing: {missing}") from None
        meta = MetadataColumns.from_arrays(arrays, len(ids))
        rows = tuple(meta.row(i) for i in range(len(ids)))
        images: tuple[tuple[float, ...] | None, ...] = ()
        if "image_offsets" in arrays:
            offsets, values = arrays["image_offsets"].astype(np.int64), arrays["image_values"]
            if offsets.shape != (len(ids) + 1,) or offsets[-1] != values.shape[0]:
                raise IntegrityError("delta image offsets do not match the image values")
            images = tuple(
                tuple(values[start:stop].tolist()) if stop > start else None
                for start, stop in itertools.pairwise(offsets.tolist())
            )
        return cls(
            item_ids=tuple(ids),
            vectors=vectors.reshape(len(ids), int(manifest["dim"])),
            metadata=rows,
            deletes=tuple(deletes),
            encoder_id=str(manifest.get("encoder_id", "")),
            images=images,
        )


def fuse_delta(index: VectorIndex, delta: IndexDelta) -> IndexDelta:
    """An ingestion delta (text vectors + images) mapped into ``index``'s space (unchanged when plain)."""
    spec = index_fusion(index)
    if spec is None or not delta.item_ids:
        return delta
    images = delta.images if delta.images else None
    vectors, _ = fuse_rows(spec, delta.vectors, list(delta.metadata), images)
    return replace(delta, vectors=vectors, images=())
