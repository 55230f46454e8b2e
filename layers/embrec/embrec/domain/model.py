"""The value types every floor passes around, in one place: events, served lists, stored items, filters.

Plain frozen dataclasses with numpy at most: the adapters (``embrec.aws.store``) store and load them, the
engine (``embrec.engine.index``) applies :class:`Filters`, the use cases and the pure domain compute on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import numpy as np

from embrec.errors import InvalidInputError, UnprocessableError

__all__ = [
    "ID_MAX_CHARS",
    "ID_PATTERN",
    "ID_RULE",
    "Filters",
    "Impression",
    "Interaction",
    "ItemIndex",
    "ItemState",
    "StoredItem",
    "check_id",
    "is_valid_id",
    "optional_number",
]

#: The one id rule, for users, items, events and recommendation lists alike, enforced at every door: catalog
#: rows, ``POST /events``, path parameters and JWT subjects. An id the catalog accepts can be sent in an
#: event and addressed in a path; a user id an event carries can be erased by ``DELETE /users/{id}``.
#: ``|`` is in (identity providers issue subjects like ``auth0|123``); ``/`` is out: API Gateway's HTTP API
#: decodes ``%2F`` before it matches a route, so such an id could never be one path segment. No spaces,
#: ``#``, ``%``, ``?`` or non-ASCII either: each means something in a URL, or has several spellings (NFC vs
#: NFD) that would make two ids of one. A leading ``.`` is out so that ``.`` and ``..`` (path segments that
#: clients and proxies normalise away) are never ids.
ID_MAX_CHARS = 128
#: The rule as a JSON Schema / ECMA-262 pattern (the OpenAPI document publishes it as it is).
ID_PATTERN = r"^[A-Za-z0-9_:@+=|-][A-Za-z0-9_.:@+=|-]{0,127}$"
#: The reason a client or a catalog report gets for an id that breaks the rule.
ID_RULE = "must be 1-128 characters of ASCII letters, digits and _ - . : @ + = | (not starting with .)"
_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))  # used with fullmatch: no "\n" before $


def is_valid_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that follows the id rule (:data:`ID_PATTERN`)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, field: str) -> str:
    """``value`` if it is a valid id, else :class:`InvalidInputError` on ``field`` with :data:`ID_RULE`."""
    if not is_valid_id(value):
        raise InvalidInputError(field, ID_RULE)
    return value


@dataclass(frozen=True)
class Interaction:
    """One user event. ``timestamp`` is epoch seconds UTC; ``value`` is optional (e.g. a rating)."""

    item_id: str
    type: str
    timestamp: float
    value: float | None = None
    event_id: str = ""
    recommendation_id: str | None = None


@dataclass(frozen=True)
class Impression:
    """One served recommendation list: ``ts`` epoch s, ``items`` how many items it showed."""

    recommendation_id: str
    user_id: str
    experiment: str | None
    variant: str
    ts: float
    items: int


@dataclass(frozen=True)
class StoredItem:
    """One row of the items table.

    ``fields`` is ``Item.to_dict()`` (JSON-safe); ``vector`` is (dim,) float32 or None (a tombstone or an
    item whose encoding failed); ``updated_at`` is epoch seconds. ``encoder_id`` names the encoder that made
    ``vector`` ("" for rows written before it was recorded); ``source`` is the catalog row that wrote it,
    ``"<file id>:<line>"`` (see :class:`ItemState`).
    """

    item_id: str
    fields: Mapping[str, Any]
    content_hash: str
    vector: np.ndarray | None = None
    updated_at: float = 0.0
    encoder_id: str = ""
    source: str = ""

    @property
    def deleted(self) -> bool:
        return bool(self.fields.get("deleted", False))


@dataclass(frozen=True)
class ItemState:
    """What ingest needs to know of a stored item to decide about a new row for it (no vector, no text).

    ``source`` is ``"<file id>:<line>"`` of the catalog row that last wrote the item: a row finding its own
    source there was written by an earlier attempt at the same file (whose delta may never have been
    published); one finding an earlier line of the same file is a duplicate of that row.
    """

    content_hash: str
    encoder_id: str = ""
    source: str = ""


def _frozen(value: Any, field: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise InvalidInputError(field, "must be a collection of strings, not a single string")
    items = frozenset(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidInputError(field, "must contain only strings")
    return items


def optional_number(value: Any, field: str) -> float | None:
    """``value`` as a finite float, None for None; InvalidInputError on ``field`` otherwise (bools too)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInputError(field, "must be a number")
    if not math.isfinite(float(value)):
        raise InvalidInputError(field, "must be finite")
    return float(value)


@dataclass(frozen=True)
class Filters:
    """Request filters; ``Filters()`` filters nothing. All given conditions must hold (AND).

    ``categories``: category in the set. ``exclude_categories``: category not in the set. ``tags_any``: at
    least one tag in the set. ``min_price`` / ``max_price``: inclusive bounds; an item without a price never
    passes a price bound. ``available``: equals. ``created_after``: strictly after (epoch seconds); an item
    without ``created_at`` never passes.
    """

    categories: frozenset[str] | None = None
    exclude_categories: frozenset[str] | None = None
    tags_any: frozenset[str] | None = None
    min_price: float | None = None
    max_price: float | None = None
    available: bool | None = None
    created_after: float | None = None

    def __post_init__(self) -> None:
        # Accept any collection of strings (lists from a query parser) and store it frozen.
        for name in ("categories", "exclude_categories", "tags_any"):
            object.__setattr__(self, name, _frozen(getattr(self, name), name))
        for name in ("min_price", "max_price", "created_after"):
            object.__setattr__(self, name, optional_number(getattr(self, name), name))
        if self.available is not None and not isinstance(self.available, bool | np.bool_):
            raise InvalidInputError("available", "must be a boolean")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise UnprocessableError("min_price", "must not exceed max_price")

    def is_empty(self) -> bool:
        return all(
            getattr(self, name) is None
            for name in (
                "categories",
                "exclude_categories",
                "tags_any",
                "min_price",
                "max_price",
                "available",
                "created_after",
            )
        )


class ItemIndex(Protocol):
    """What ranking and fusion need of an item index: the domain's port, implemented by
    :class:`embrec.engine.index.VectorIndex` (hnswlib). Positions are ints 0..``positions``; arrays are
    numpy. Shapes and semantics are documented on the implementation."""

    @property
    def fusion(self) -> Mapping[str, Any] | None: ...

    @property
    def dim(self) -> int: ...

    @property
    def positions(self) -> int: ...

    @property
    def generation(self) -> tuple[int, int]: ...

    def contains(self, item_id: str) -> bool: ...

    def metadata(self, item_id: str) -> dict[str, Any]: ...

    def vectors_for(self, item_ids: Sequence[str]) -> np.ndarray: ...

    def positions_of(self, item_ids: Sequence[str]) -> np.ndarray: ...

    def ids_at(self, positions: np.ndarray) -> list[str]: ...

    def vectors_at(self, positions: np.ndarray) -> np.ndarray: ...

    def created_at_of(self, positions: np.ndarray) -> np.ndarray: ...

    def allowed_mask(
        self, filters: Filters | None, exclude_positions: np.ndarray | None = None
    ) -> np.ndarray: ...

    def search(
        self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]: ...

    def search_positions(
        self, vector: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def search_among(
        self, vector: np.ndarray, k: int, positions: np.ndarray, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...
