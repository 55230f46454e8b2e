"""Multi-modal item vectors: the text vector fused with the customer's image embedding and item metadata.

The items table and the index deltas keep the *text* vector (the encoder's space, ``text_dim``, 384 for
MiniLM) and the raw ``image_embedding``; the layout of the index is decided at rebuild time, so changing the
fusion weights needs a rebuild, never a re-encode. An index's layout is a :class:`FusionSpec`, recorded in
the index manifest under ``"fusion"`` (absent = the plain text vector, the default when no item has an image
and the metadata weight is 0)::

    item  = normalise([w_text * t,  w_image * normalise(image) or 0,  w_meta * normalise(meta) or 0])
    query = normalise([t,           0,                                0                            ])

``t`` is the unit text vector, ``meta`` the one-hot of the category's hashed bucket next to the one-hot of
the price band. A text query has zeros outside the text part, so its inner product with an item is
``w_text * cos(t_query, t_item) / |item|``: items still rank by text, and an image or a category pulls
items together in item-to-item and user-vector similarity only. Items without an image have zeros in the
image part; since every row is normalised, their text part weighs ``sqrt(1 + w_image^2 / (w_text^2 +
w_meta^2))`` times more (1.12 at the defaults), a constant factor per group that text search shows as
slightly higher scores for items without an image.

:func:`to_index_space` is the one place that maps a text vector (search query, onboarding profile) into an
index's space; :func:`embrec.engine.index.fuse_delta` maps an ingestion delta; both read the spec from the
index and refuse a mismatch with :class:`~embrec.errors.CompatibilityError`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from embrec.domain.model import ItemIndex
from embrec.errors import CompatibilityError, InvalidInputError

if TYPE_CHECKING:
    from embrec.config import Settings

__all__ = [
    "DEFAULT_CATEGORY_BUCKETS",
    "DEFAULT_IMAGE_WEIGHT",
    "DEFAULT_META_WEIGHT",
    "DEFAULT_MIN_IMAGE_SHARE",
    "DEFAULT_PRICE_BAND_EDGES",
    "FUSION_FORMAT",
    "FUSION_MODES",
    "FusionConfig",
    "FusionSpec",
    "fuse_rows",
    "image_part",
    "index_fusion",
    "meta_part",
    "plan_fusion",
    "profile_in_index_space",
    "text_dim",
    "to_index_space",
]

FUSION_FORMAT = "embrec-fusion/1"
#: ``auto``: fuse images when at least ``min_image_share`` of the live items carry one (and always when the
#: metadata weight is > 0); ``on``: fuse images as soon as any live item has one (the operator's explicit
#: choice); ``off``: never. One stray ``image_embedding`` must not turn a catalog into 11.7x the memory.
FUSION_MODES = ("auto", "on", "off")
#: ``auto`` fuses images only when at least this share of the live items has one.
DEFAULT_MIN_IMAGE_SHARE = 0.5
#: Text leads; an image is a secondary signal (no real image data to tune on: see EVALUATION.md).
DEFAULT_IMAGE_WEIGHT = 0.5
#: Off by default: measured on MovieLens it does not help (EVALUATION.md, "Multi-modal fusion").
DEFAULT_META_WEIGHT = 0.0
DEFAULT_CATEGORY_BUCKETS = 64
#: Price band upper edges (currency units); bands are [0, 5), [5, 10), ..., [500, inf).
DEFAULT_PRICE_BAND_EDGES: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
DEFAULT_HASH_SEED = "embrec-category-v1"


@dataclass(frozen=True)
class FusionConfig:
    """What the operator chose (settings); :func:`plan_fusion` makes one index's :class:`FusionSpec` of it."""

    mode: str = "auto"
    text_weight: float = 1.0
    image_weight: float = DEFAULT_IMAGE_WEIGHT
    meta_weight: float = DEFAULT_META_WEIGHT
    category_buckets: int = DEFAULT_CATEGORY_BUCKETS
    price_band_edges: tuple[float, ...] = DEFAULT_PRICE_BAND_EDGES
    hash_seed: str = DEFAULT_HASH_SEED
    min_image_share: float = DEFAULT_MIN_IMAGE_SHARE

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            allowed = ", ".join(FUSION_MODES)
            raise InvalidInputError("fusion.mode", f"must be one of {allowed}, got {self.mode!r}")
        if not 0 <= self.min_image_share <= 1:
            share = self.min_image_share
            raise InvalidInputError("fusion.min_image_share", f"must be in [0, 1], got {share!r}")
        for name in ("text_weight", "image_weight", "meta_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InvalidInputError(f"fusion.{name}", f"must be a finite number >= 0, got {value!r}")
        if self.text_weight <= 0:
            raise InvalidInputError("fusion.text_weight", "must be > 0 (queries live in the text part)")
        if self.category_buckets < 1:
            raise InvalidInputError("fusion.category_buckets", "must be >= 1")
        edges = tuple(float(edge) for edge in self.price_band_edges)
        if list(edges) != sorted(set(edges)):
            raise InvalidInputError("fusion.price_band_edges", "must be strictly increasing")
        object.__setattr__(self, "price_band_edges", edges)

    @classmethod
    def from_settings(cls, settings: Settings) -> FusionConfig:
        return cls(
            mode=settings.fusion_mode,
            image_weight=settings.fusion_image_weight,
            meta_weight=settings.fusion_meta_weight,
            min_image_share=settings.fusion_min_image_share,
        )


@dataclass(frozen=True)
class FusionSpec:
    """The layout of one index's vectors: ``[text (text_dim) | image (image_dim) | meta (meta_dim)]``.

    A part with weight 0 or no data has dimension 0 (it is left out, not stored as zeros).
    """

    text_dim: int
    image_dim: int
    text_weight: float
    image_weight: float
    meta_weight: float
    category_buckets: int
    price_band_edges: tuple[float, ...]
    hash_seed: str

    @property
    def price_bands(self) -> int:
        return len(self.price_band_edges) + 1 if self.meta_weight > 0 else 0

    @property
    def meta_dim(self) -> int:
        return self.category_buckets + self.price_bands if self.meta_weight > 0 else 0

    @property
    def dim(self) -> int:
        return self.text_dim + self.image_dim + self.meta_dim

    @property
    def spec_id(self) -> str:
        """sha256[:16] of the canonical layout: equal ids mean interchangeable vectors."""
        canonical = json.dumps(self._layout(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def _layout(self) -> dict[str, Any]:
        layout = asdict(self)
        layout["price_band_edges"] = list(self.price_band_edges)
        return layout

    def to_dict(self) -> dict[str, Any]:
        """The manifest document (``"fusion"`` in the index manifest)."""
        return {"format": FUSION_FORMAT, **self._layout(), "dim": self.dim, "spec_id": self.spec_id}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> FusionSpec:
        """Parse and check a manifest document; CompatibilityError when it is not one this code can use."""
        if document.get("format") != FUSION_FORMAT:
            raise CompatibilityError(f"fusion format {document.get('format')!r} is not {FUSION_FORMAT!r}")
        try:
            spec = cls(
                text_dim=int(document["text_dim"]),
                image_dim=int(document["image_dim"]),
                text_weight=float(document["text_weight"]),
                image_weight=float(document["image_weight"]),
                meta_weight=float(document["meta_weight"]),
                category_buckets=int(document["category_buckets"]),
                price_band_edges=tuple(float(edge) for edge in document["price_band_edges"]),
                hash_seed=str(document["hash_seed"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CompatibilityError(f"fusion spec is malformed: {error!r}") from None
        if document.get("spec_id") != spec.spec_id or int(document.get("dim", -1)) != spec.dim:
            raise CompatibilityError("fusion spec id or dim does not match its layout")
        return spec


def plan_fusion(
    config: FusionConfig, text_dim: int, image_dims: Iterable[int], items: int | None = None
) -> FusionSpec | None:
    """The layout for a catalog of ``items`` live items whose text vectors are ``text_dim`` and whose items
    carry images of ``image_dims`` (one entry per item with an image). None = the plain text vector.

    The image part takes the most common image dimension (ties: the larger); items whose image has another
    dimension get zeros there (:func:`fuse_rows` counts them). Mode ``auto`` leaves images out unless at least
    ``config.min_image_share`` of the ``items`` have one (``items`` None: every item is in ``image_dims``).
    """
    if config.mode == "off":
        return None
    counts = Counter(int(d) for d in image_dims if d > 0)
    with_image = sum(counts.values())
    share = 1.0 if items is None else with_image / max(items, 1)
    wanted = config.image_weight > 0 and (config.mode == "on" or share >= config.min_image_share)
    image_dim = max(counts, key=lambda d: (counts[d], d)) if counts and wanted else 0
    if image_dim == 0 and config.meta_weight == 0:
        return None
    return FusionSpec(
        text_dim=text_dim,
        image_dim=image_dim,
        text_weight=config.text_weight,
        image_weight=config.image_weight if image_dim else 0.0,
        meta_weight=config.meta_weight,
        category_buckets=config.category_buckets if config.meta_weight > 0 else 0,
        price_band_edges=config.price_band_edges if config.meta_weight > 0 else (),
        hash_seed=config.hash_seed if config.meta_weight > 0 else "",
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and math.isfinite(norm) else np.zeros_like(vector)


def image_part(spec: FusionSpec, image: Sequence[float] | None) -> tuple[np.ndarray, bool]:
    """(image_dim,) float64 unit image vector, or zeros when absent, zero or of another dimension; and
    whether it was used."""
    if image is None or spec.image_dim == 0 or len(image) != spec.image_dim:
        return np.zeros(spec.image_dim), False
    unit = _unit(np.asarray(image, dtype=np.float64))
    return unit, bool(np.any(unit))


def _category_bucket(spec: FusionSpec, category: str) -> int:
    key = f"{spec.hash_seed}\x1f{category.strip().casefold()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % spec.category_buckets


def meta_part(spec: FusionSpec, category: str | None, price: float | None) -> np.ndarray:
    """(meta_dim,) float64 unit vector: one-hot hashed category bucket next to one-hot price band (an
    absent category or price leaves its half zero; both absent gives zeros)."""
    meta = np.zeros(spec.meta_dim)
    if spec.meta_dim == 0:
        return meta
    if category and category.strip():
        meta[_category_bucket(spec, category)] = 1.0
    if price is not None and math.isfinite(price) and price >= 0:
        meta[spec.category_buckets + bisect.bisect_right(spec.price_band_edges, price)] = 1.0
    return _unit(meta)


def fuse_rows(
    spec: FusionSpec | None,
    text_vectors: np.ndarray,
    rows: Sequence[Mapping[str, Any]],
    images: Sequence[Sequence[float] | None] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Item vectors in the index space: (n, spec.dim) float32, unit rows; and counts (``with_image``,
    ``image_dim_mismatch``).

    ``text_vectors`` (n, text_dim); ``rows`` are item dicts (``Item.to_dict``: ``category``, ``price``, and
    ``image_embedding`` unless ``images`` gives them separately). ``spec`` None returns the text vectors.
    The result is built in float32 (norms in float64): the rebuild fuses block by block, so memory is the
    fused float32 block, never an (n, dim) float64 matrix.
    """
    text = np.asarray(text_vectors, dtype=np.float32)
    counts = {"with_image": 0, "image_dim_mismatch": 0}
    if spec is None:
        return text, counts
    if text.ndim != 2 or text.shape[1] != spec.text_dim or text.shape[0] != len(rows):
        raise CompatibilityError(f"text vectors {text.shape} do not fit fusion text_dim {spec.text_dim}")
    out = np.zeros((len(rows), spec.dim), dtype=np.float32)
    out[:, : spec.text_dim] = spec.text_weight * text / np.maximum(
        np.linalg.norm(text.astype(np.float64), axis=1, keepdims=True), 1e-12
    )
    start = spec.text_dim
    for position, row in enumerate(rows):
        image = images[position] if images is not None else row.get("image_embedding")
        if spec.image_dim:
            part, used = image_part(spec, image)
            out[position, start : start + spec.image_dim] = spec.image_weight * part
            counts["with_image"] += used
            counts["image_dim_mismatch"] += image is not None and len(image) != spec.image_dim
        if spec.meta_dim:
            meta = meta_part(spec, row.get("category"), row.get("price"))
            out[position, start + spec.image_dim :] = spec.meta_weight * meta
    out /= np.maximum(np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True), 1e-12).astype(np.float32)
    return out, counts


def index_fusion(index: ItemIndex) -> FusionSpec | None:
    """The index's layout (None = plain text vectors); CompatibilityError when it does not fit the index."""
    if index.fusion is None:
        return None
    spec = FusionSpec.from_dict(index.fusion)
    if spec.dim != index.dim:
        raise CompatibilityError(f"fusion layout has dim {spec.dim} but the index has {index.dim}")
    return spec


def text_dim(index: ItemIndex) -> int:
    """The dimension of the text vectors this index takes in queries and deltas."""
    spec = index_fusion(index)
    return index.dim if spec is None else spec.text_dim


def to_index_space(index: ItemIndex, text_vector: np.ndarray) -> np.ndarray:
    """THE mapping of a text vector (search query, onboarding profile) into ``index``'s space:
    (text_dim,) -> (index.dim,) float32, zeros outside the text part. Identity for a plain index."""
    vector = np.asarray(text_vector, dtype=np.float32)
    wanted = text_dim(index)
    if vector.ndim != 1 or vector.shape[0] != wanted:
        raise CompatibilityError(f"query vector has shape {vector.shape}, the index takes ({wanted},)")
    if index.dim == wanted:
        return vector
    out = np.zeros(index.dim, dtype=np.float32)
    out[:wanted] = vector
    return out


def profile_in_index_space(index: ItemIndex, profile_vector: np.ndarray) -> np.ndarray | None:
    """A stored onboarding profile (a text vector) in ``index``'s space, or None when it was encoded by
    another encoder (wrong dimension): a stale profile is ignored, it must not fail the request."""
    try:
        return to_index_space(index, profile_vector)
    except CompatibilityError:
        return None
