"""Signals computed at rebuild time: item-item collaborative neighbours and trending scores.

Three collaborative models sit behind :func:`compute_signals` (``SignalParams.cf_model``):

- ``"cooccurrence"`` (scales to large catalogs; used above the EASE cap):
  ``sim(i, j) = S_ij / sqrt(S_ii S_jj) x c_ij / (c_ij + shrinkage)`` where ``S = X^T X`` over users'
  (weighted, positive) item rows and ``c_ij`` the number of users who have both. The cosine keeps popular
  items from dominating, the shrinkage damps pairs seen by very few users. Computed blockwise over source
  items with sort-and-reduce in numpy (no n x n matrix, no scipy), memory bounded by ``pair_budget``; an item
  whose users alone hold more pairs than that (a head item) is walked along the item -> user lists instead.
- ``"ease"`` (Steck 2019, closed form; the default until session 12): ``P = (X^T X + lambda I)^-1``,
  ``B = I - P / diag(P)`` (diag 0). Better than co-occurrence on MovieLens leave-last-out (CF alone HR@10
  0.092 vs 0.072; EVALUATION.md). Dense (two float64 m x m matrices, O(m^3) time: ~10 s on 2 cores for
  m = 6.3k, ~39 s at 8.7k). When more than
  ``ease_prune_above`` (2,000) items have events, the solve keeps only the items at least ``ease_min_users``
  (2) users touched: an item one user touched is known only through that user's other items, the weakest
  evidence, at full cost (MovieLens: 9.7k -> 6.3k items, EASE alone HR@10 0.0902 -> 0.0918; the 100k bench:
  8.7k -> 2.2k, 53 s -> 2 s). A small catalog keeps every item: its solve is cheap and one user's
  co-occurrences may be all the evidence there is. EASE runs only when m <= ``ease_max_items`` (10k) and at
  least ``ease_min_total_users`` (100) users have events: its λ (150 over engagement rows since session 16;
  before, 1,000 over typed rows, chosen on pooled MovieLens validation splits over 500; session 10's 500 did
  the same to the demo) is sized for hundreds of users, and
  on a handful its weights are nearly raw co-occurrence counts, so the most popular items top every list (the
  replay of 18 demo users: Schindler's List first for sci-fi and thriller fans alike). Otherwise the
  co-occurrence model (cosine, shrunk) is used and ``params["cf_model_used"]`` says so.
- ``"slist"`` (default; Choi et al., WWW 2021; :func:`slist_neighbours`): EASE's objective plus a transition
  term that maps each prefix of a user's history (its last items, weighted by distance) to the items that came
  next, one closed-form solve with the same zero diagonal, the same λ, items and fall-backs as EASE
  (``slist_alpha = 1`` is EASE). It learns direction (what follows what), which EASE's symmetric Gram
  cannot. About 1.5x EASE's time and one more m x m matrix at peak (BENCHMARKS.md).

Engagement, not type (session 16; ``SignalParams.cf_type_weights``): EASE and SLIST read a user's row as
engagement, 1 for every item with a positive event, as both papers define their models over binary matrices;
until session 16 each entry was its event type's weight, so a liked pair counted nine times a viewed one in
the Gram matrix. The request weighs its CF sources the same way (:meth:`Signals.cf_reads_engagement`): by
recency only. With λ re-chosen for binary rows (1,000 -> 150) the pooled MovieLens validation's hybrid went
from NDCG@10 0.0743 to 0.0824 (EVALUATION.md, "CF reads engagement"). Co-occurrence keeps the type weights:
its cosine has no λ to re-choose and it was not measured.

Side information (``SignalParams.side_weight`` > 0, EASE and SLIST; Jeunen et al., RecSys 2020;
:func:`_add_side`): the items' vectors join the solve as extra rows under the user-item matrix, so a thinly
used item borrows from items its text resembles. Off by default: on the pooled MovieLens validation splits it
left the hybrid level (beta 100) or lower (beta 1000; beta 30, 100 and 300 with the re-tuned blend;
EVALUATION.md).

Trending: per item, the sum over users of the (positive) type weight x ``0.5 ** (age / half_life)`` of
their most recent qualifying event inside the window before ``now`` (one user counts once per item, so a
single user replaying events cannot make an item trend).

:class:`Signals` is compact (int32 / float32 arrays keyed by its own ``item_ids``) and saved as one
``signals.npz`` without pickle. On disk (format 2) the CF neighbours are ragged: a per-item count and only the
real (neighbour, score) pairs, so an item without co-engagement costs a count instead of a padded row of -1
(on the 100k-item bench 91% of the rows were padding: the file went from 423 to 37 bytes per item); ids and
counts are stored in the narrowest unsigned type that fits. Format 1 (dense padded rows) still loads; a format
newer than this code knows is a :class:`~embrec.errors.CompatibilityError`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from embrec.domain.model import Interaction
from embrec.domain.profiles import DEFAULT_TYPE_WEIGHTS, SECONDS_PER_DAY
from embrec.errors import CompatibilityError, IntegrityError, InvalidInputError
from embrec.manifest import (
    MANIFEST_FILE,
    VerifiedDirectory,
    describe_files,
    directory_of,
    read_json,
    require_verified,
    write_json,
)

__all__ = [
    "CF_MODELS",
    "SIGNALS_FILE",
    "CFMatrix",
    "EventColumns",
    "EventPage",
    "SignalParams",
    "Signals",
    "compute_signals",
    "cooccurrence_neighbours",
    "ease_neighbours",
    "signals_from_events",
    "slist_neighbours",
    "trending_scores",
]

CF_MODELS = ("cooccurrence", "ease", "slist")
SIGNALS_FILE = "signals.npz"
_FORMAT_VERSION = 2  # 1: dense (n, N) padded rows; 2: ragged rows (cf_counts + flat pairs)
_READABLE_FORMATS = (1, 2)
_EASE_BLOCK_CELLS = 2_000_000  # users x items cells per dense block when building the Gram matrix


@dataclass(frozen=True)
class SignalParams:
    """Rebuild-time parameters (recorded in the saved artifact).

    ``neighbours``: top-N CF neighbours kept per item. ``max_items_per_user``: only a user's most recent
    items feed CF (bounds the O(L^2) pairs of heavy users). ``trending_half_life_days`` /
    ``trending_window_days``: decay and horizon of trending, relative to ``now``. ``side_weight``: beta
    of the items' content rows in the EASE / SLIST solve (:func:`_add_side`; 0 = none).
    ``cf_type_weights``: the EASE / SLIST solve weighs each (user, item) by its best event type's weight
    (True, the behaviour until session 16, for which λ 1,000 was chosen) or reads it as engagement, 1
    (False, the default). ``keep_cf_matrix``: EASE and SLIST also keep their whole weight matrix
    (:class:`CFMatrix`, float16, 2 m^2 bytes: 50 MB for MovieLens' 5k items, 200 MB at the 10k cap), so a
    request scores its candidates against every source instead of through the top-N rows.
    """

    # SLIST over EASE, alpha 0.8 over 0.5 and 0.2: chosen on the pooled MovieLens validation splits (hybrid
    # NDCG@10 0.0654 with EASE -> 0.0718; EVALUATION.md, "Sequence-aware CF"); λ shared with EASE. The
    # distance half-life is the request's position half-life (``ProfileParams.half_life_events``): both
    # 3 -> 4 events together, chosen on the same splits (pooled NDCG@10 0.0728 -> 0.0743; EVALUATION.md).
    # Engagement rows (cf_type_weights False) with λ 150 over typed rows with λ 1,000: the same splits,
    # NDCG@10 0.0743 -> 0.0824 (λ 100 0.0814, 250 0.0799; EVALUATION.md, "CF reads engagement").
    cf_model: str = "slist"
    neighbours: int = 50
    shrinkage: float = 10.0
    ease_lambda: float = 150.0
    cf_type_weights: bool = False
    # The whole matrix over its top-50 rows: pooled validation NDCG@10 0.0824 -> 0.0863 (EVALUATION.md, "The
    # whole CF matrix scores the pool").
    keep_cf_matrix: bool = True
    ease_max_items: int = 10_000
    ease_min_users: int = 2
    ease_prune_above: int = 2_000
    ease_min_total_users: int = 100
    slist_alpha: float = 0.8
    slist_half_life_events: float = 4.0
    slist_window: int = 10
    side_weight: float = 0.0
    max_items_per_user: int = 500
    min_support: int = 1
    pair_budget: int = 4_000_000
    trending_half_life_days: float = 3.0
    trending_window_days: float = 14.0
    type_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TYPE_WEIGHTS)

    def __post_init__(self) -> None:
        if self.cf_model not in CF_MODELS:
            allowed = ", ".join(CF_MODELS)
            raise InvalidInputError("cf_model", f"must be one of {allowed}, got {self.cf_model!r}")
        if self.neighbours < 1:
            raise InvalidInputError("neighbours", f"must be >= 1, got {self.neighbours}")
        for name in ("shrinkage", "ease_lambda"):
            if not getattr(self, name) >= 0:
                raise InvalidInputError(name, "must be >= 0")
        if not (self.trending_half_life_days > 0 and self.trending_window_days > 0):
            raise InvalidInputError("trending_half_life_days", "half-life and window must be > 0")
        if self.max_items_per_user < 2 or self.pair_budget < 1 or self.ease_max_items < 1:
            raise InvalidInputError("max_items_per_user", "must be >= 2 (and budgets >= 1)")
        if self.ease_min_users < 1 or self.ease_prune_above < 0 or self.ease_min_total_users < 0:
            raise InvalidInputError("ease_min_users", "must be >= 1 (and ease_prune_above >= 0)")
        if not 0.0 <= self.slist_alpha <= 1.0:
            raise InvalidInputError("slist_alpha", f"must be in [0, 1], got {self.slist_alpha}")
        if not (self.slist_half_life_events > 0 and math.isfinite(self.slist_half_life_events)):
            raise InvalidInputError("slist_half_life_events", "must be a finite number > 0")
        if self.slist_window < 1:
            raise InvalidInputError("slist_window", f"must be >= 1, got {self.slist_window}")
        if not (math.isfinite(self.side_weight) and self.side_weight >= 0):
            raise InvalidInputError("side_weight", f"must be a finite number >= 0, got {self.side_weight}")

    def to_dict(self) -> dict[str, Any]:
        document = {f.name: getattr(self, f.name) for f in fields(self)}
        return document | {"type_weights": dict(self.type_weights)}


def _narrowest_unsigned(largest: int) -> type[np.unsignedinteger[Any]]:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def _encode_ids(item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 blob + offsets (n + 1, narrowest unsigned type): compact, loadable without pickle."""
    encoded = [item_id.encode("utf-8") for item_id in item_ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return blob, offsets.astype(_narrowest_unsigned(int(offsets[-1])))


def _decode_ids(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    bounds = offsets.astype(np.int64).tolist()
    if raw.isascii():  # the common case: one decode, then str slices (byte offsets == char offsets)
        text = raw.decode("ascii")
        return [text[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
    return [raw[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(len(bounds) - 1)]


def _ragged(neighbours: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Format 2 arrays of dense (n, N) rows: each row's real neighbours (>= 0) in order, padding dropped."""
    n, width = neighbours.shape
    real = neighbours >= 0
    counts = real.sum(axis=1)
    return {
        "cf_width": np.asarray(width, dtype=np.int64),
        "cf_counts": counts.astype(_narrowest_unsigned(width)),
        "cf_neighbour_ids": neighbours[real].astype(_narrowest_unsigned(max(n - 1, 0))),
        "cf_neighbour_scores": scores[real].astype(np.float32),
    }


def _dense(data: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_ragged`: int32 (n, N) padded with -1 and float32 (n, N) padded with 0."""
    width = int(data["cf_width"])
    counts = data["cf_counts"].astype(np.int64)
    ids, scores = data["cf_neighbour_ids"], data["cf_neighbour_scores"]
    if (
        width < 0
        or counts.shape != (n,)
        or (n and (counts.min() < 0 or counts.max() > width))
        or int(counts.sum()) != ids.shape[0]
        or ids.shape != scores.shape
        or (ids.size and int(ids.max()) >= n)
    ):
        raise IntegrityError(f"{SIGNALS_FILE}: CF rows do not match the item count")
    out_ids = np.full((n, width), -1, dtype=np.int32)
    out_scores = np.zeros((n, width), dtype=np.float32)
    filled = np.arange(width)[None, :] < counts[:, None]  # row-major: the flat pairs fill rows in order
    out_ids[filled] = ids
    out_scores[filled] = scores
    return out_ids, out_scores


@dataclass(frozen=True, eq=False)
class CFMatrix:
    """The CF model's whole item-item weight matrix ``B`` (EASE or SLIST) over the items it solved for.

    ``items``: int (m,), the signals positions of those items, ascending. ``weights``: float16 (m, m), row
    ``r`` = what item ``items[r]`` adds to each item's score (``B[i, j]``, negative entries included, the
    diagonal 0). ``n``: the signals' item count. ``rows``: int64 (n,), the row of each signals position, -1
    where the model did not solve for the item.

    The neighbour rows keep each item's top-N positive entries, which is what candidates are found from; a
    score read through them misses the rest of the row: the many small weights, positive and negative,
    that every other history item adds to a candidate. float16: half of float32's bytes, and its relative
    precision (~1e-3) is finer than any difference the ranking acts on.
    """

    items: np.ndarray
    weights: np.ndarray
    n: int
    rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        m = self.items.shape[0]
        if self.items.ndim != 1 or self.weights.shape != (m, m) or self.weights.dtype != np.float16:
            raise InvalidInputError("cf_matrix", "must be float16 (m, m) with one item position per row")
        inside = not m or (int(self.items.min()) >= 0 and int(self.items.max()) < self.n)
        if not inside or np.any(np.diff(self.items) <= 0):
            raise InvalidInputError("cf_matrix", "item positions must be ascending and inside the signals")
        rows = np.full(self.n, -1, dtype=np.int64)
        rows[self.items] = np.arange(m)
        object.__setattr__(self, "rows", rows)


@dataclass(frozen=True, eq=False)
class Signals:
    """CF neighbours and trending scores keyed by ``item_ids`` (positions, not index ids).

    ``cf_neighbours``: int32 (n, N), positions into ``item_ids``, padded with -1, best first.
    ``cf_scores``: float32 (n, N), descending per row, 0 where padded. ``trending``: float32 (n,) >= 0.
    ``interacted``: bool (n,), the item had at least one event of any type (dislikes included) in the data
    the signals were built from; ``None`` (signals saved before it existed) falls back to "has a CF row or
    trending > 0" in :meth:`interacted_mask`. Ranking uses it to tell a new item (no evidence) from one
    the users saw and did not co-engage with. ``cf_matrix``: the model's whole weight matrix
    (:class:`CFMatrix`, ``SignalParams.keep_cf_matrix``); ``None`` for co-occurrence and for signals saved
    without it, whose requests score through the neighbour rows.
    """

    item_ids: tuple[str, ...]
    cf_neighbours: np.ndarray
    cf_scores: np.ndarray
    trending: np.ndarray
    params: Mapping[str, Any] = field(default_factory=dict)
    interacted: np.ndarray | None = None
    cf_matrix: CFMatrix | None = None
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)
    _trending_order: list[np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.cf_neighbours.shape[0] != n or self.cf_scores.shape != self.cf_neighbours.shape:
            raise InvalidInputError("cf_neighbours", "shapes do not match item_ids")
        if self.trending.shape != (n,):
            raise InvalidInputError("trending", "shape does not match item_ids")
        if self.interacted is not None and self.interacted.shape != (n,):
            raise InvalidInputError("interacted", "shape does not match item_ids")
        if self.cf_matrix is not None and self.cf_matrix.n != n:
            raise InvalidInputError("cf_matrix", "item count does not match item_ids")
        object.__setattr__(self, "_positions", {item_id: i for i, item_id in enumerate(self.item_ids)})
        object.__setattr__(self, "_trending_order", [])

    @classmethod
    def empty(cls, item_ids: Sequence[str] = (), neighbours: int = 1) -> Signals:
        n = len(item_ids)
        return cls(
            item_ids=tuple(item_ids),
            cf_neighbours=np.full((n, neighbours), -1, dtype=np.int32),
            cf_scores=np.zeros((n, neighbours), dtype=np.float32),
            trending=np.zeros(n, dtype=np.float32),
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def position(self, item_id: str) -> int | None:
        return self._positions.get(item_id)

    def neighbours(self, item_id: str) -> list[tuple[str, float]]:
        """CF neighbours of ``item_id`` as ``(item_id, score)``, best first; [] for an unknown item."""
        pos = self._positions.get(item_id)
        if pos is None:
            return []
        row, scores = self.cf_neighbours[pos], self.cf_scores[pos]
        return [(self.item_ids[j], float(s)) for j, s in zip(row, scores, strict=True) if j >= 0]

    def interacted_mask(self) -> np.ndarray:
        """bool (n,): items the signals saw any event on (see the class docstring for the fallback)."""
        if self.interacted is not None:
            return self.interacted
        has_row = self.cf_neighbours[:, 0] >= 0 if self.cf_neighbours.shape[1] else np.zeros(len(self), bool)
        return has_row | (self.trending > 0)

    @property
    def cf_reads_engagement(self) -> bool:
        """True when the CF model was solved over engagement rows (EASE or SLIST with ``cf_type_weights``
        False): a request then weighs its CF sources by recency alone, as the model weighed its rows. Signals
        saved before the option existed (no ``cf_type_weights`` recorded) were typed."""
        typed = self.params.get("cf_type_weights", True)
        return typed is False and self.params.get("cf_model_used") in ("ease", "slist")

    def trending_score(self, item_id: str) -> float:
        pos = self._positions.get(item_id)
        return 0.0 if pos is None else float(self.trending[pos])

    def trending_order(self) -> np.ndarray:
        """Positions of items with trending > 0, by score descending then item id (cached)."""
        if not self._trending_order:
            positive = np.flatnonzero(self.trending > 0)
            ids = np.asarray([self.item_ids[i] for i in positive], dtype=object)
            order = np.lexsort((ids, -self.trending[positive])) if positive.size else positive
            self._trending_order.append(positive[order].astype(np.int64))
        return self._trending_order[0]

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``signals.npz`` then ``manifest.json`` under ``directory``; returns the manifest
        ``{"files", "params", "count", ..., "input_sha256"}`` (the last only for computed signals)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        blob, offsets = _encode_ids(self.item_ids)
        optional: dict[str, Any] = {}
        if self.interacted is not None:
            optional["interacted"] = self.interacted.astype(np.bool_)
        if self.cf_matrix is not None:
            items = self.cf_matrix.items
            optional["cf_matrix_items"] = items.astype(_narrowest_unsigned(max(int(items.max(initial=0)), 0)))
            optional["cf_matrix"] = self.cf_matrix.weights
        arrays: dict[str, np.ndarray] = {
            "format_version": np.asarray(_FORMAT_VERSION, dtype=np.int64),
            "item_id_blob": blob,
            "item_id_offsets": offsets,
            **_ragged(self.cf_neighbours, self.cf_scores),
            "trending": self.trending.astype(np.float32, copy=False),
            "params_json": np.frombuffer(json.dumps(dict(self.params), sort_keys=True).encode(), np.uint8),
            **optional,
        }
        np.savez(directory / SIGNALS_FILE, allow_pickle=False, **arrays)
        manifest: dict[str, Any] = {
            "files": describe_files(directory, [SIGNALS_FILE]),
            "params": dict(self.params),
            "count": len(self),
            "neighbours": int(self.cf_neighbours.shape[1]),
            "format_version": _FORMAT_VERSION,
        }
        if isinstance(self.params.get("input_sha256"), str):
            manifest["input_sha256"] = self.params["input_sha256"]
        write_json(directory / MANIFEST_FILE, manifest)
        return manifest

    @classmethod
    def load(
        cls, directory: Path | VerifiedDirectory, files: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Signals:
        """Load ``signals.npz`` (no pickle) after checking its sha256 and size.

        ``files``: the manifest's entries (default: read ``manifest.json`` beside it). A plain path is
        hashed here; a :class:`~embrec.manifest.VerifiedDirectory` listing the file with the same digest
        (just downloaded) is not hashed again. :class:`IntegrityError` for a missing, tampered or malformed
        file; :class:`CompatibilityError` for a format newer than this code reads.
        """
        source, directory = directory, directory_of(directory)
        if files is None:
            listed = read_json(directory / MANIFEST_FILE).get("files")
            files = listed if isinstance(listed, dict) else {}
        if SIGNALS_FILE not in files:
            raise IntegrityError(f"the signals manifest does not list {SIGNALS_FILE}")
        require_verified(source, {SIGNALS_FILE: files[SIGNALS_FILE]})
        try:
            with np.load(directory / SIGNALS_FILE, allow_pickle=False) as data:
                version = int(data["format_version"])
                if version not in _READABLE_FORMATS:
                    raise CompatibilityError(
                        f"{SIGNALS_FILE}: format version {version} is newer than this code reads "
                        f"({', '.join(map(str, _READABLE_FORMATS))}): rebuild, or deploy newer code"
                    )
                item_ids = _decode_ids(data["item_id_blob"], data["item_id_offsets"])
                params = json.loads(data["params_json"].tobytes().decode("utf-8"))
                if version == 1:
                    neighbours = data["cf_neighbours"].astype(np.int32, copy=False)
                    scores = data["cf_scores"].astype(np.float32, copy=False)
                else:
                    neighbours, scores = _dense(data, len(item_ids))
                return cls(
                    item_ids=tuple(item_ids),
                    cf_neighbours=neighbours,
                    cf_scores=scores,
                    trending=data["trending"].astype(np.float32, copy=False),
                    params=params,
                    # optional key (added without a format bump): older files fall back in interacted_mask
                    interacted=data["interacted"].astype(np.bool_) if "interacted" in data.files else None,
                    # optional too: signals saved without it score through the neighbour rows
                    cf_matrix=CFMatrix(
                        data["cf_matrix_items"].astype(np.int64), data["cf_matrix"], len(item_ids)
                    ) if "cf_matrix" in data.files else None,
                )
        except (OSError, KeyError, ValueError, InvalidInputError) as error:
            raise IntegrityError(f"{SIGNALS_FILE}: unreadable ({error})") from None


# --------------------------------------------------------------------------- user-item matrix


@dataclass(frozen=True)
class _UserRows:
    """CSR user x item matrix: ``indptr`` int64 (u + 1), ``indices`` int32 item positions, ``data`` float64
    weights > 0."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_items: int


def _top_n_per_row(rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, top_n: int,
                   out_idx: np.ndarray, out_score: np.ndarray, row_offset: int) -> None:
    """Write the top ``top_n`` (score desc, col asc) of each row into ``out_*[row_offset + row]``."""
    if rows.size == 0:
        return
    order = np.lexsort((cols, -scores, rows))
    rows, cols, scores = rows[order], cols[order], scores[order]
    starts = np.flatnonzero(np.r_[True, np.diff(rows) != 0])
    rank = np.arange(rows.size) - np.repeat(starts, np.diff(np.r_[starts, rows.size]))
    keep = rank < top_n
    out_idx[row_offset + rows[keep], rank[keep]] = cols[keep]
    out_score[row_offset + rows[keep], rank[keep]] = scores[keep]


def cooccurrence_neighbours(
    rows: _UserRows, top_n: int, shrinkage: float = 10.0, min_support: int = 1, pair_budget: int = 4_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N neighbours per item by shrunk cosine of co-occurrence. Returns (int32 (n, N), float32 (n, N)).

    Source items are taken in blocks whose users' rows hold at most ``pair_budget`` (user, item) pairs,
    expanded and reduced by sort; an item that alone exceeds it (a head item most users touched) is walked
    along the item -> user lists instead (:func:`_heavy_row`), so no temporary grows past the budget.
    Memory besides: the item -> user transpose of the rows (12 bytes a pair; 32 with the rows and the sort
    order while it is built).
    """
    n_items = rows.n_items
    out_idx = np.full((n_items, top_n), -1, dtype=np.int32)
    out_score = np.zeros((n_items, top_n), dtype=np.float32)
    if rows.indices.size == 0:
        return out_idx, out_score
    # Memory per (user, item) entry is what bounds a big window: int32 user numbers, one stable argsort (the
    # entries are already in user order, so sorting by item alone gives item-then-user order), freed early.
    row_len = np.diff(rows.indptr)
    user_of_entry = np.repeat(np.arange(row_len.size, dtype=np.int32), row_len)
    self_sq = np.bincount(rows.indices, weights=rows.data**2, minlength=n_items)  # S_ii
    cost = np.bincount(rows.indices, weights=row_len.astype(np.float64)[user_of_entry], minlength=n_items)
    # Item -> (user, weight) CSR, users ascending within an item.
    by_item = np.argsort(rows.indices, kind="stable")
    item_users = user_of_entry[by_item]
    del user_of_entry
    item_weights = rows.data[by_item]
    del by_item
    item_indptr = np.zeros(n_items + 1, dtype=np.int64)
    item_indptr[1:] = np.cumsum(np.bincount(rows.indices, minlength=n_items))
    cum_cost = np.cumsum(cost)
    start = 0
    while start < n_items:
        if cost[start] > pair_budget:
            cols, sims = _heavy_row(
                start, (item_indptr, item_users, item_weights), row_len.size, self_sq, shrinkage, min_support,
                pair_budget,
            )
            _top_n_per_row(np.zeros(cols.size, np.int64), cols, sims, top_n, out_idx, out_score, start)
            start += 1
            continue
        # Block of source items whose expansion stays within the budget (at least one item).
        done = cum_cost[start - 1] if start else 0.0
        stop = max(start + 1, int(np.searchsorted(cum_cost, done + pair_budget, side="right")))
        entry_lo, entry_hi = item_indptr[start], item_indptr[stop]
        if entry_hi > entry_lo:
            src_items = np.repeat(np.arange(start, stop), np.diff(item_indptr[start : stop + 1]))
            users = item_users[entry_lo:entry_hi]
            w_src = item_weights[entry_lo:entry_hi]
            lengths = row_len[users]
            total = int(lengths.sum())
            rep = np.repeat(np.arange(users.size), lengths)
            offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            pos = rows.indptr[users][rep] + offset
            dst = rows.indices[pos]
            src = src_items[rep]
            value = w_src[rep] * rows.data[pos]
            not_self = dst != src
            src, dst, value = src[not_self], dst[not_self], value[not_self]
            if src.size:
                key = (src - start) * n_items + dst
                order = np.argsort(key, kind="stable")
                key, value = key[order], value[order]
                starts = np.flatnonzero(np.r_[True, np.diff(key) != 0])
                s_ij = np.add.reduceat(value, starts)
                c_ij = np.diff(np.r_[starts, key.size]).astype(np.float64)
                uniq = key[starts]
                src_local, dst_u = uniq // n_items, uniq % n_items
                src_u = src_local + start
                sim = s_ij / np.sqrt(self_sq[src_u] * self_sq[dst_u]) * (c_ij / (c_ij + shrinkage))
                ok = c_ij >= min_support
                _top_n_per_row(src_local[ok], dst_u[ok], sim[ok], top_n, out_idx, out_score, start)
        start = stop
    return out_idx, out_score


def _heavy_row(
    src: int, by_item: tuple[np.ndarray, np.ndarray, np.ndarray], n_users: int, self_sq: np.ndarray,
    shrinkage: float, min_support: int, pair_budget: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour, shrunk cosine) of one source item, every co-occurring item once, ascending.

    ``by_item``: the item -> user transpose of the rows, (indptr (n + 1), int32 users ascending within an
    item, float64 weights). Walked in runs of destination items of about ``pair_budget`` entries, each masked
    to the source's users: memory is the budget plus one float64 per user, whatever the source's popularity.
    A pair's terms come in user order, as the block path's stable sort puts them, so ``S_ij`` is the same
    sum, bit for bit.
    """
    indptr, users, weights = by_item
    src_weight = np.zeros(n_users, dtype=np.float64)  # 0: the user does not have the source item
    src_weight[users[indptr[src] : indptr[src + 1]]] = weights[indptr[src] : indptr[src + 1]]
    cols: list[np.ndarray] = []
    sims: list[np.ndarray] = []
    n_items = indptr.size - 1
    lo = 0
    while lo < n_items:
        hi = max(lo + 1, int(np.searchsorted(indptr, indptr[lo] + pair_budget, side="right")) - 1)
        a, b = indptr[lo], indptr[hi]
        w_src = src_weight[users[a:b]]
        both = w_src > 0
        dst = np.repeat(np.arange(lo, hi), np.diff(indptr[lo : hi + 1]))[both]
        value = w_src[both] * weights[a:b][both]
        not_self = dst != src
        dst, value = dst[not_self], value[not_self]
        if dst.size:
            starts = np.flatnonzero(np.r_[True, np.diff(dst) != 0])
            s_ij = np.add.reduceat(value, starts)
            c_ij = np.diff(np.r_[starts, dst.size]).astype(np.float64)
            dst_u = dst[starts]
            sim = s_ij / np.sqrt(self_sq[src] * self_sq[dst_u]) * (c_ij / (c_ij + shrinkage))
            ok = c_ij >= min_support
            cols.append(dst_u[ok])
            sims.append(sim[ok])
        lo = hi
    if not cols:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(cols), np.concatenate(sims)


@dataclass(frozen=True)
class _Active:
    """The items a closed-form model solves over: ``items`` (m,) catalog positions with >= ``min_users``
    users, and per CSR entry of the user rows its ``local`` position (int32, 0..m-1) and whether it is
    ``kept``."""

    items: np.ndarray
    local: np.ndarray
    kept: np.ndarray


def _active(rows: _UserRows, min_users: int) -> _Active:
    users_per_item = np.bincount(rows.indices, minlength=rows.n_items)  # a user's row holds an item once
    items = np.flatnonzero(users_per_item >= max(1, min_users))
    m = int(items.size)
    local = np.searchsorted(items, rows.indices)
    kept = (local < m) & (items[np.minimum(local, max(m - 1, 0))] == rows.indices) if m else local < 0
    return _Active(items, local.astype(np.int32), kept)  # m <= ease_max_items


def _gram(rows: _UserRows, active: _Active) -> np.ndarray:
    """float64 (m, m) ``X^T X`` over the active items, users streamed in dense blocks of ~16 MB."""
    m = int(active.items.size)
    n_users = rows.indptr.size - 1
    gram = np.zeros((m, m), dtype=np.float64)
    block = max(1, min(n_users, _EASE_BLOCK_CELLS // m))
    for lo in range(0, n_users, block):
        hi = min(n_users, lo + block)
        a, b = rows.indptr[lo], rows.indptr[hi]
        x = np.zeros((hi - lo, m), dtype=np.float64)
        user = np.repeat(np.arange(hi - lo), np.diff(rows.indptr[lo : hi + 1]))
        keep = active.kept[a:b]
        x[user[keep], active.local[a:b][keep]] = rows.data[a:b][keep]
        gram += x.T @ x
    return gram


def _top_positive(
    weights: Callable[[int, int], np.ndarray], active: _Active, top_n: int, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N positive off-diagonal entries of each row of an (m, m) item-item matrix, read in row chunks
    (``weights(lo, hi)`` returns rows lo..hi-1, diagonal already 0): (m, N) rows by local position whose
    neighbour ids are catalog positions, -1 / 0 padded (:func:`_scatter` moves the rows). ``keep`` (float16
    (m, m)): every chunk is also written there."""
    m = int(active.items.size)
    out_idx = np.full((m, top_n), -1, dtype=np.int32)
    out_score = np.zeros((m, top_n), dtype=np.float32)
    k = min(top_n, m - 1)
    rows_per_chunk = max(1, 4_000_000 // m)
    for lo in range(0, m, rows_per_chunk):
        chunk = weights(lo, min(m, lo + rows_per_chunk))
        if keep is not None:
            keep[lo : lo + chunk.shape[0]] = chunk
        part = np.argpartition(chunk, m - k, axis=1)[:, m - k :]
        vals = np.take_along_axis(chunk, part, axis=1)
        src = np.repeat(np.arange(chunk.shape[0]), k)
        cols, flat = part.reshape(-1), vals.reshape(-1)
        pos = flat > 0
        _top_n_per_row(src[pos] + lo, active.items[cols[pos]], flat[pos], top_n, out_idx, out_score, 0)
    return out_idx, out_score


def _scatter(
    active: _Active, n_items: int, local: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows written by local position (m, N) moved to catalog positions (n, N), -1 / 0 elsewhere."""
    local_idx, local_score = local
    out_idx = np.full((n_items, local_idx.shape[1]), -1, dtype=np.int32)
    out_score = np.zeros((n_items, local_idx.shape[1]), dtype=np.float32)
    out_idx[active.items], out_score[active.items] = local_idx, local_score
    return out_idx, out_score


def _add_side(gram: np.ndarray, side: np.ndarray, active: _Active, weight: float) -> None:
    """Add ``weight x V V^T`` to ``gram`` ((m, m) float64, in place), V = the active items' rows of ``side``.

    Side information as in Jeunen, Van Balen and Goethals, "Closed-Form Models for Collaborative Filtering
    with Side-Information" (RecSys 2020), collective EASE: the content is stacked under the user-item matrix
    as extra rows, ``[X; sqrt(weight) V^T]``, each of the d content dimensions read as one more "user" whose
    row is every item's value on it; the paper stacks binary tag rows, ours are the item vectors the index
    holds (unit rows, so ``V V^T`` is the items' cosine matrix). Its Gram is ``X^T X + weight V V^T``: an
    item with few events borrows the co-occurrences of the items its text resembles. Row blocks, so no
    second (m, m) temporary.
    """
    vectors = np.asarray(side[active.items], dtype=np.float64)
    m = int(active.items.size)
    step = max(1, 4_000_000 // max(m, 1))
    for lo in range(0, m, step):
        gram[lo : lo + step] += weight * (vectors[lo : lo + step] @ vectors.T)


def ease_neighbours(
    rows: _UserRows, top_n: int, lam: float = 1000.0, min_users: int = 1, *,
    side: np.ndarray | None = None, side_weight: float = 0.0, keep_matrix: bool = False,
) -> tuple[np.ndarray, np.ndarray, CFMatrix | None]:
    """EASE item-item weights restricted to items with >= ``min_users`` users; top-N positive ``B[i, :]``
    per item. An item one user touched is known only through that user's other items, the weakest evidence
    there is, yet it costs the O(m^3) solve as much as any other item (a third of MovieLens' rated items).

    ``B[i, j]`` is how much having ``i`` adds to ``j``'s score, so row ``i`` is "people who liked i".
    Memory: two dense float64 (m, m) matrices at peak, m = items with interactions (users are streamed
    in blocks, so the user count does not matter); time O(m^3).

    ``side`` (float (n_items, d), rows by catalog position) with ``side_weight`` > 0: the collective model
    of :func:`_add_side`, ``P = (X^T X + side_weight V V^T + lam I)^-1``, ``B`` as above.

    ``keep_matrix``: ``B`` itself is returned too (:class:`CFMatrix`, float16; None otherwise).
    """
    active = _active(rows, min_users)
    m = int(active.items.size)
    if m < 2:
        return (*_scatter(active, rows.n_items, _empty_rows(m, top_n)), None)
    gram = _gram(rows, active)
    if side is not None and side_weight > 0:
        _add_side(gram, side, active, side_weight)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    del gram
    p /= -np.diag(p)[None, :]  # B = -P / diag(P) column-wise, in place
    np.fill_diagonal(p, 0.0)
    keep = np.empty((m, m), dtype=np.float16) if keep_matrix else None
    top = _top_positive(lambda lo, hi: p[lo:hi], active, top_n, keep)
    return (*_scatter(active, rows.n_items, top), _matrix(active, rows.n_items, keep))


def _matrix(active: _Active, n_items: int, weights: np.ndarray | None) -> CFMatrix | None:
    return None if weights is None else CFMatrix(active.items.astype(np.int64), weights, n_items)


def _empty_rows(m: int, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, top_n), -1, dtype=np.int32), np.zeros((m, top_n), dtype=np.float32)


def _transition_grams(
    rows: _UserRows, active: _Active, half_life: float, window: int, gram: np.ndarray, cross: np.ndarray,
    scale: float,
) -> None:
    """Add ``scale x S^T S`` to ``gram`` and ``scale x S^T T`` to ``cross`` (both (m, m) float64, in place).

    Each user's row, read oldest first, is a sequence; every position t with a next item is one partial
    session: source ``S_t`` = the items at t, t-1, ... (at most ``window``) weighted
    ``0.5 ** (d / half_life)`` by their distance d from t, target ``T_t`` = the items at t+1, t+2, ...
    (at most ``window``) weighted ``0.5 ** ((k - 1) / half_life)``; both times the event's type weight. The
    pairs are summed without forming S or T (O(events x window^2) work, in chunks of ~2M pairs).
    """
    m = int(active.items.size)
    n_users = rows.indptr.size - 1
    user = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(rows.indptr))[active.kept]
    lengths = np.bincount(user, minlength=n_users)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    # Rows are newest first: entry j of a user's run moves to 2 start + length - 1 - j (oldest first), a
    # permutation that is its own inverse. Built in place: these arrays are per (user, item) pair.
    order = starts[user]
    order *= 2
    order += lengths[user] - 1
    order -= np.arange(user.size)
    seq = active.local[active.kept][order]
    seq_value = rows.data[active.kept][order]
    seq_user = user[order]
    del user, order
    origins = np.ones(seq.size, dtype=np.bool_)  # every position but a user's last has a next item
    origins[(starts + lengths - 1)[lengths > 0]] = False
    origins = np.flatnonzero(origins)
    decay = np.exp2(-np.arange(window, dtype=np.float64) / half_life)  # index d (source) or k - 1 (target)
    offsets = np.arange(window)
    flat_gram, flat_cross = gram.reshape(-1), cross.reshape(-1)
    per_chunk = max(1, 2_000_000 // (window * window))
    for lo in range(0, origins.size, per_chunk):
        g = origins[lo : lo + per_chunk]
        t = g - starts[seq_user[g]]  # position in the user's sequence
        last = lengths[seq_user[g]] - 1
        src_ok = offsets[None, :] <= t[:, None]  # (c, w): d <= t
        src_pos = np.where(src_ok, g[:, None] - offsets[None, :], 0)
        src_w = np.where(src_ok, decay[None, :] * seq_value[src_pos], 0.0)
        tgt_ok = offsets[None, :] + 1 <= (last - t)[:, None]  # k = offset + 1 <= L - 1 - t
        tgt_pos = np.where(tgt_ok, g[:, None] + offsets[None, :] + 1, 0)
        tgt_w = np.where(tgt_ok, decay[None, :] * seq_value[tgt_pos], 0.0)
        src_item, tgt_item = seq[src_pos], seq[tgt_pos]
        for flat, left, left_w, right, right_w in (
            (flat_gram, src_item, src_w, src_item, src_w),
            (flat_cross, src_item, src_w, tgt_item, tgt_w),
        ):
            weight = (left_w[:, :, None] * right_w[:, None, :]).reshape(-1)
            key = (left[:, :, None].astype(np.int64) * m + right[:, None, :]).reshape(-1)
            nonzero = weight > 0
            keys, inverse = np.unique(key[nonzero], return_inverse=True)
            flat[keys] += scale * np.bincount(inverse, weights=weight[nonzero], minlength=keys.size)


def slist_neighbours(
    rows: _UserRows, top_n: int, lam: float = 1000.0, min_users: int = 1, *, alpha: float = 0.5,
    half_life: float = 3.0, window: int = 10, side: np.ndarray | None = None, side_weight: float = 0.0,
    keep_matrix: bool = False,
) -> tuple[np.ndarray, np.ndarray, CFMatrix | None]:
    """SLIST (Choi et al., WWW 2021) over users' histories read as sequences; top-N positive ``B[i, :]``.

    ``B`` minimises ``alpha ||X - X B||^2 + (1 - alpha) ||T - S B||^2 + lam ||B||^2`` subject to
    ``diag(B) = 0``: the first term is EASE's item-item reconstruction of each user's row (SLIS), the second
    maps each partial history ``S_t`` (the items up to position t, weighted by their distance from t) to what
    came next ``T_t`` (SLIT; :func:`_transition_grams`). Closed form, with ``G = alpha X^T X + (1 - alpha)
    S^T S + lam I``, ``C = alpha X^T X + (1 - alpha) S^T T``, ``P = G^-1``:
    ``B = P C - P diag(mu)``, ``mu_j = (P C)_jj / P_jj`` (the Lagrange multipliers of the zero diagonal).
    ``alpha = 1`` is exactly :func:`ease_neighbours`. Items as in EASE (>= ``min_users`` users). Memory: three
    float64 (m, m) matrices at peak (G, C, P), one more than EASE; time O(m^3), about twice EASE's (the
    inverse, then ``P C`` in row chunks).

    Side information (``side``, float (n_items, d) by catalog position, ``side_weight`` > 0; Jeunen et
    al., RecSys 2020, :func:`_add_side`): one more reconstruction term ``side_weight ||V^T - V^T B||^2``,
    the items' content rebuilt from the other items' content under the same ``B``, so ``G`` and ``C`` both
    gain ``side_weight V V^T`` (``alpha = 1`` is the paper's collective EASE).

    ``keep_matrix``: ``B`` itself is returned too (:class:`CFMatrix`, float16, one more (m, m) matrix at a
    quarter of a float64 one's bytes; None otherwise).
    """
    active = _active(rows, min_users)
    m = int(active.items.size)
    if m < 2:
        return (*_scatter(active, rows.n_items, _empty_rows(m, top_n)), None)
    gram = _gram(rows, active)
    gram *= alpha
    if side is not None and side_weight > 0:
        _add_side(gram, side, active, side_weight)
    cross = gram.copy()
    if alpha < 1:
        _transition_grams(rows, active, half_life, window, gram, cross, 1.0 - alpha)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    del gram
    mu = np.einsum("jk,kj->j", p, cross) / np.diag(p)

    def weights(lo: int, hi: int) -> np.ndarray:
        chunk = p[lo:hi] @ cross
        chunk -= p[lo:hi] * mu[None, :]
        chunk[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        return chunk

    keep = np.empty((m, m), dtype=np.float16) if keep_matrix else None
    top = _top_positive(weights, active, top_n, keep)
    return (*_scatter(active, rows.n_items, top), _matrix(active, rows.n_items, keep))


@dataclass(frozen=True)
class EventPage:
    """Events as parallel columns, one page of a window read: no object per event.

    ``timestamps`` (float64 epoch s) has one entry per user id, item id and type. What
    :meth:`EventColumns.extend` keeps of a page is what it keeps of the same events one by one.
    """

    users: Sequence[str]
    items: Sequence[str]
    types: Sequence[str]
    timestamps: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.users) == len(self.items) == len(self.types) == self.timestamps.shape[0]:
            raise InvalidInputError("timestamps", "an event page's columns must have one length")

    def __len__(self) -> int:
        return len(self.users)

    def rows(self) -> Iterator[tuple[str, str, str, float]]:
        """The page's events as ``(user_id, item_id, type, timestamp)`` tuples."""
        return zip(self.users, self.items, self.types, self.timestamps.tolist(), strict=True)


class EventColumns:
    """The rebuild's interactions as compact columns, filled a page at a time, never a list of objects.

    Per kept event (a known item, a positive type weight, a finite timestamp): user code int32, item position
    int32, type code uint8, timestamp float64 = 17 bytes, in fixed chunks of :data:`CHUNK_EVENTS` (no doubling
    copies). Users are a dict id -> code; items touched by any event (dislikes included) are marked in
    ``interacted``; ``seen`` counts every event offered. :func:`signals_from_events` consumes them.

    A chunk's four columns are views of one buffer of 34 MiB, above glibc's largest dynamic mmap threshold
    (32 MiB): every chunk is its own mapping, so releasing the columns gives their memory back to the OS at
    once (with one array per column, freed columns stayed in the heap and counted through the CF model:
    BENCHMARKS.md 5b). Pages of a chunk not yet filled are never touched, so they cost no memory.
    """

    CHUNK_EVENTS = 1 << 21
    PAIRS_PER_PAGE = 4096

    def __init__(self, item_ids: Sequence[str], type_weights: Mapping[str, float]) -> None:
        self.item_ids = list(dict.fromkeys(item_ids))
        self._positions = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self._type_weights = type_weights
        self._type_codes: dict[str, int] = {}
        self.type_table: list[float] = []
        self.users: dict[str, int] = {}
        self.interacted = np.zeros(len(self.item_ids), dtype=np.bool_)
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.seen = 0  # every event offered, kept or not
        self._fill = self.CHUNK_EVENTS  # a full (virtual) chunk: the first add opens one

    def extend(self, interactions: Iterable[tuple[str, Interaction] | EventPage]) -> EventColumns:
        """Add ``(user_id, Interaction)`` pairs and :class:`EventPage` s, in order. Pairs are gathered into
        pages of :data:`PAIRS_PER_PAGE` (the rebuild's window read gives pages already): a page costs a few
        list lookups an event instead of a loop step that writes four array cells."""
        users: list[str] = []
        items: list[str] = []
        types: list[str] = []
        times: list[float] = []

        def flush() -> None:
            if users:
                self._extend_page(EventPage(users[:], items[:], types[:], np.array(times, dtype=np.float64)))
                for column in (users, items, types, times):
                    column.clear()

        for entry in interactions:
            if isinstance(entry, EventPage):
                flush()
                self._extend_page(entry)
                continue
            user_id, event = entry
            users.append(user_id)
            items.append(event.item_id)
            types.append(event.type)
            times.append(event.timestamp)
            if len(users) == self.PAIRS_PER_PAGE:
                flush()
        flush()
        return self

    def _type_code(self, name: str) -> int:
        """The code of event type ``name``, given at its first sight: the next slot of ``type_table`` for a
        positive weight, -1 (not kept) otherwise."""
        weight = float(self._type_weights.get(name, 0.0))
        code = self._type_codes[name] = len(self.type_table) if weight > 0 else -1
        if weight > 0:
            self.type_table.append(weight)
        return code

    def _extend_page(self, page: EventPage) -> None:
        n = len(page)
        self.seen += n
        if not n:
            return
        positions, codes = self._positions, self._type_codes
        pos = np.array([positions.get(item_id, -1) for item_id in page.items], dtype=np.int64)
        known = pos >= 0
        self.interacted[pos[known]] = True
        # Types get their codes in the order of first sight on a known item, as one by one.
        for name in dict.fromkeys(itertools.compress(page.types, known.tolist())):
            if name not in codes:
                self._type_code(name)
        type_code = np.array([codes.get(name, -1) for name in page.types], dtype=np.int16)
        timestamps = np.asarray(page.timestamps, dtype=np.float64)
        kept = np.flatnonzero(known & (type_code >= 0) & np.isfinite(timestamps))
        users, page_users = self.users, page.users
        user_code = np.array(
            [users.setdefault(page_users[k], len(users)) for k in kept.tolist()], dtype=np.int32
        )
        done = 0
        while done < kept.shape[0]:
            if self._fill == self.CHUNK_EVENTS:
                self._open_chunk()
            u, i, t, ts = self.chunks[-1]
            fill = self._fill
            take = min(kept.shape[0] - done, self.CHUNK_EVENTS - fill)
            rows = kept[done : done + take]
            u[fill : fill + take] = user_code[done : done + take]
            i[fill : fill + take] = pos[rows]
            t[fill : fill + take] = type_code[rows]
            ts[fill : fill + take] = timestamps[rows]
            self._fill = fill + take
            done += take

    @property
    def type_names(self) -> list[str]:
        """The event type of each code of the kept events' type column (``type_table`` order)."""
        return [name for name, code in sorted(self._type_codes.items(), key=lambda kv: kv[1]) if code >= 0]

    def _open_chunk(self) -> None:
        size = self.CHUNK_EVENTS
        buffer = np.empty(17 * size, dtype=np.uint8)
        self.chunks.append((
            buffer[: 4 * size].view(np.int32),
            buffer[4 * size : 8 * size].view(np.int32),
            buffer[16 * size :],
            buffer[8 * size : 16 * size].view(np.float64),
        ))
        self._fill = 0

    def finish(self) -> list[str]:
        """Cut the last chunk to its events (views: the unfilled pages were never touched) and renumber users
        by their sorted id (scan order no longer matters: the signals and their digest are the same for any
        order the events arrived in). The sorted user ids."""
        if self.chunks and self._fill < self.CHUNK_EVENTS:
            self.chunks[-1] = tuple(column[: self._fill] for column in self.chunks[-1])  # type: ignore[assignment]
            self._fill = self.CHUNK_EVENTS
        names = sorted(self.users)
        rank = np.empty(len(names), dtype=np.int32)
        rank[np.fromiter((self.users[name] for name in names), dtype=np.int64, count=len(names))] = np.arange(
            len(names), dtype=np.int32
        )
        for u, *_ in self.chunks:
            u[:] = rank[u]
        self.users = {name: code for code, name in enumerate(names)}
        return names


# Users are processed in ranges of about this many events: temporaries scale with the range, not the window.
_RANGE_EVENTS = 1 << 21


def _ranges(events: EventColumns, n_users: int) -> Iterable[tuple[np.ndarray, ...]]:
    """(user, item, type code, ts) of the events of consecutive user-code ranges, in user order."""
    per_user = np.zeros(n_users, dtype=np.int64)
    for u, *_ in events.chunks:
        per_user += np.bincount(u, minlength=n_users)
    cumulative = np.cumsum(per_user)
    lo = 0
    while lo < n_users:
        done = int(cumulative[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(cumulative, done + _RANGE_EVENTS, side="right")))
        parts = []
        for u, i, t, ts in events.chunks:
            rows = np.flatnonzero((u >= lo) & (u < hi))
            parts.append((u[rows], i[rows], t[rows], ts[rows]))
        yield tuple(np.concatenate([part[k] for part in parts]) for k in range(4))
        lo = hi


def _pairs(
    user_idx: np.ndarray, item_idx: np.ndarray, weight: np.ndarray, ts: np.ndarray, max_items_per_user: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One entry per (user, item) with weight = max event weight; each user keeps the ``max_items_per_user``
    items with the most recent events. (users, items, weights) sorted by user, then recency."""
    order = np.lexsort((item_idx, user_idx))
    user_idx, item_idx, weight, ts = user_idx[order], item_idx[order], weight[order], ts[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(user_idx) != 0) | (np.diff(item_idx) != 0)])
    users, items = user_idx[starts], item_idx[starts]
    weights = np.maximum.reduceat(weight, starts)
    latest = np.maximum.reduceat(ts, starts)
    # Most recent first inside each user (equal times: the larger item position counts as the newer, as the
    # evaluation's splits read them), then cut at max_items_per_user. SLIST reads the rows as sequences.
    order = np.lexsort((-items, -latest, users))
    users, items, weights = users[order], items[order], weights[order]
    user_starts = np.flatnonzero(np.r_[True, np.diff(users) != 0])
    rank = np.arange(users.size) - np.repeat(user_starts, np.diff(np.r_[user_starts, users.size]))
    keep = rank < max_items_per_user
    return users[keep], items[keep], weights[keep]


def _run_lengths(sorted_values: np.ndarray) -> np.ndarray:
    """int64: the lengths of the runs of equal values of a sorted array (none for an empty one)."""
    if not sorted_values.size:
        return np.zeros(0, np.int64)
    return np.diff(np.flatnonzero(np.r_[True, np.diff(sorted_values) != 0, True]))


def _trending_parts(
    user_idx: np.ndarray, item_idx: np.ndarray, weight: np.ndarray, ts: np.ndarray, now: float,
    half_life_days: float, window_days: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(item, decayed weight) of each user's best qualifying event per item, in (user, item) order: the
    terms the trending score of an item sums (over users, in this order)."""
    age_days = np.maximum(now - ts, 0.0) / SECONDS_PER_DAY
    keep = (weight > 0) & (age_days <= window_days)
    decayed = weight[keep] * np.exp2(-age_days[keep] / half_life_days)
    u, i = user_idx[keep], item_idx[keep]
    order = np.lexsort((-decayed, i, u))
    u, i, decayed = u[order], i[order], decayed[order]
    first = np.r_[True, (np.diff(u) != 0) | (np.diff(i) != 0)] if u.size else np.zeros(0, bool)
    return i[first], decayed[first]


def trending_scores(
    user_idx: np.ndarray, item_idx: np.ndarray, weight: np.ndarray, ts: np.ndarray, n_items: int, now: float,
    half_life_days: float, window_days: float,
) -> np.ndarray:
    """float32 (n_items,): sum over users of weight x 0.5^(age/half_life) of their latest event per item
    with age in [0, window]. Events after ``now`` count as age 0 (clock skew), older than the window not."""
    items, terms = _trending_parts(user_idx, item_idx, weight, ts, now, half_life_days, window_days)
    return np.bincount(items, weights=terms, minlength=n_items).astype(np.float32)


def signals_from_events(
    events: EventColumns, params: SignalParams | None = None, *, now: float | None = None,
    item_vectors: np.ndarray | None = None,
) -> Signals:
    """CF neighbours and trending for ``events.item_ids`` from compact columns (see :func:`compute_signals`).

    Memory: while the columns (17 bytes an event) are read, each collapsed (user, item) pair keeps 5 bytes
    and trending is summed into one float64 per item; the columns are then released (``events.chunks``
    emptied) and the pairs become the CSR rows (int32 item, float64 weight: 12 bytes), which the CF model
    works over (co-occurrence: 32 bytes a pair at most, its expansions bounded by ``pair_budget``). Every
    per-event temporary is bounded by one user range (:data:`_RANGE_EVENTS` events).
    """
    params = params or SignalParams()
    ids = events.item_ids
    n_items = len(ids)
    names = events.finish()
    n_users = len(names)
    table = np.asarray(events.type_table or [0.0], dtype=np.float64)
    newest = max((float(ts.max()) for *_, ts in events.chunks if ts.size), default=0.0)
    anchor = float(now) if now is not None else newest
    window_s = params.trending_window_days * SECONDS_PER_DAY
    # A (user, item) pair keeps its item (int32) and which distinct type weight is its largest (uint8):
    # 5 bytes while the columns are still held, instead of 16 (user, item, float64 weight).
    levels = np.unique(table)
    item_parts: list[np.ndarray] = []
    level_parts: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    trend = np.zeros(n_items, dtype=np.float64)
    hashers = [hashlib.sha256() for _ in range(6)]
    n_events, future_any = 0, False
    for u, i, t, ts in _ranges(events, n_users):
        weight = table[t]
        n_events += ts.size
        pair_users, pair_items, pair_weights = _pairs(u, i, weight, ts, params.max_items_per_user)
        count_parts.append(_run_lengths(pair_users))
        item_parts.append(pair_items)
        level_parts.append(np.searchsorted(levels, pair_weights).astype(np.uint8))
        # In place and in order: the same sums as one bincount over every range's terms.
        np.add.at(trend, *_trending_parts(
            u, i, weight, ts, anchor, params.trending_half_life_days, params.trending_window_days
        ))
        order = np.lexsort((ts, weight, i, u))
        future = ts > anchor
        future_any = future_any or bool(future.any())
        columns = (u.astype(np.int64), i.astype(np.int64), weight, ts, (anchor - ts) <= window_s, future)
        for hasher, column in zip(hashers, columns, strict=True):
            hasher.update(np.ascontiguousarray(column[order]).tobytes())
    events.chunks.clear()  # the window's columns are no longer needed: the pairs carry the rest
    counts = np.concatenate(count_parts) if count_parts else np.zeros(0, np.int64)
    indptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    items = np.concatenate(item_parts) if item_parts else np.zeros(0, np.int32)
    del item_parts
    data = levels[np.concatenate(level_parts)] if level_parts else np.zeros(0)
    del level_parts
    rows = _UserRows(indptr, items, data, n_items)
    del items, data
    model = params.cf_model
    users_per_item = np.bincount(rows.indices, minlength=n_items)
    touched = int(np.count_nonzero(users_per_item))
    min_users = params.ease_min_users if touched > params.ease_prune_above else 1
    n_active = int(np.count_nonzero(users_per_item >= min_users))
    n_users_with_rows = int(np.count_nonzero(np.diff(rows.indptr)))
    too_few_users = n_users_with_rows < params.ease_min_total_users
    if model in ("ease", "slist") and (n_active > params.ease_max_items or too_few_users):
        model = "cooccurrence"
    if model in ("ease", "slist") and not params.cf_type_weights:
        rows.data.fill(1.0)  # engagement; in place: the pairs can number tens of millions
    side = item_vectors if params.side_weight > 0 and model in ("ease", "slist") else None
    if side is not None and side.shape[0] != n_items:
        raise InvalidInputError("item_vectors", f"must have one row per item ({n_items}), not {len(side)}")
    matrix: CFMatrix | None = None
    if model == "ease":
        cf_idx, cf_score, matrix = ease_neighbours(
            rows, params.neighbours, params.ease_lambda, min_users, side=side, side_weight=params.side_weight,
            keep_matrix=params.keep_cf_matrix,
        )
    elif model == "slist":
        cf_idx, cf_score, matrix = slist_neighbours(
            rows, params.neighbours, params.ease_lambda, min_users, alpha=params.slist_alpha,
            half_life=params.slist_half_life_events, window=params.slist_window, side=side,
            side_weight=params.side_weight, keep_matrix=params.keep_cf_matrix,
        )
    else:
        cf_idx, cf_score = cooccurrence_neighbours(
            rows, params.neighbours, params.shrinkage, params.min_support, params.pair_budget
        )
    digest = hashlib.sha256()
    digest.update(json.dumps(params.to_dict(), sort_keys=True, default=str).encode())
    digest.update("\0".join(ids).encode())
    digest.update(b"\1" + "\0".join(names).encode())
    for hasher in hashers:
        digest.update(b"\2" + hasher.digest())
    digest.update(b"\4" + np.packbits(events.interacted).tobytes())
    if side is not None:  # the solve read the active items' content rows: they are an input too
        digest.update(b"\5" + np.ascontiguousarray(side[users_per_item >= min_users], np.float32).tobytes())
    if future_any:  # clock skew (age clamped to 0) breaks the "a later now only rescales trending" argument
        digest.update(f"\3{anchor!r}".encode())
    recorded = params.to_dict() | {
        "input_sha256": digest.hexdigest(),
        "cf_model_used": model,
        "side_information_used": side is not None,
        "now": anchor,
        "n_events": n_events,
        "n_users": n_users,
        "n_items_with_events": n_active,
    }
    return Signals(
        tuple(ids), cf_idx, cf_score, trend.astype(np.float32), recorded, events.interacted, matrix
    )


def compute_signals(
    interactions: Iterable[tuple[str, Interaction]],
    item_ids: Sequence[str],
    params: SignalParams | None = None,
    *,
    now: float | None = None,
    item_vectors: np.ndarray | None = None,
) -> Signals:
    """CF neighbours and trending for ``item_ids`` from ``(user_id, Interaction)`` pairs.

    Events on items not in ``item_ids`` and events with non-positive type weight (dislikes, unknown types)
    are ignored. ``now`` (epoch s) anchors trending; default: the newest event. ``item_vectors``: float
    (len(item_ids), d), the items' content (the index's vectors) in ``item_ids`` order; read only when
    ``params.side_weight`` > 0 and the CF model is EASE or SLIST (only the solved items' rows), otherwise the
    solve has no side information and ``params["side_information_used"]`` says so.

    ``input_sha256`` in the params is the digest of what the signals are a function of, but for the clock:
    the params, the item ids (in order), the user ids, the qualifying events as a set (user, item, weight,
    timestamp: independent of scan order), which of them are inside the trending window or in the future,
    ``interacted`` (items with any event, dislikes included) and, when the solve used them, the solved
    items' vectors. With those equal, a later ``now`` only multiplies every trending score by the same
    ``0.5 ** (delta / half_life)``, which ranking cancels (trending is min-max scaled, ordered by score), so
    two rebuilds with the same digest are interchangeable. Future events (clock skew: age clamped to 0) break
    that, so when there are any, ``now`` itself is part of the digest.
    """
    params = params or SignalParams()
    events = EventColumns(item_ids, params.type_weights).extend(interactions)
    return signals_from_events(events, params, now=now, item_vectors=item_vectors)
