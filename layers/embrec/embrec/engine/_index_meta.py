"""Item metadata for filtered search, held as compact numpy columns (private to :mod:`embrec.engine.index`).

One row per index *position* (tombstoned positions keep their row). Columns, all indexed by position:

- ``category_codes`` int32 into ``category_vocab`` (the empty category is a vocabulary entry like any other)
- ``price`` float64 (bounds compare exactly), NaN when missing; ``available`` bool
- ``created_at`` float64 epoch seconds, NaN when missing
- tags as CSR: ``tag_indptr`` int64 (n + 1), ``tag_codes`` int32 into ``tag_vocab``
- titles and vocabularies as :class:`StringColumn` (utf-8 blob + int64 offsets)

Every column grows with doubling capacity, so appending a small batch to a large index is amortised O(batch).
Everything serialises to plain arrays (``np.savez`` / ``np.load(allow_pickle=False)``): no pickle anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from embrec.domain.model import Filters, optional_number
from embrec.errors import IntegrityError, InvalidInputError

__all__ = ["Filters", "MetadataColumns", "StringColumn", "parse_metadata"]


def _grow(array: np.ndarray, needed: int) -> np.ndarray:
    """Return ``array`` or a copy with capacity (first axis) >= ``needed``, doubling to amortise appends."""
    if needed <= array.shape[0]:
        return array
    capacity = max(needed, 2 * array.shape[0], 16)
    grown = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


class StringColumn:
    """Append-only list of strings stored as one utf-8 blob (uint8) plus int64 offsets (n + 1)."""

    def __init__(self, blob: np.ndarray | None = None, offsets: np.ndarray | None = None) -> None:
        self._blob = np.zeros(0, dtype=np.uint8) if blob is None else blob
        self._offsets = np.zeros(1, dtype=np.int64) if offsets is None else offsets
        self._n = self._offsets.shape[0] - 1 if offsets is not None else 0
        self._used = int(self._offsets[self._n])

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        column = cls()
        column.extend(list(strings))
        return column

    @classmethod
    def from_arrays(cls, blob: np.ndarray, offsets: np.ndarray, name: str) -> StringColumn:
        blob = np.ascontiguousarray(blob, dtype=np.uint8)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise IntegrityError(f"{name}: malformed string offsets")
        if int(offsets[-1]) != blob.shape[0]:
            raise IntegrityError(f"{name}: string offsets do not match the blob")
        return cls(blob, offsets)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> str:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return bytes(self._blob[start:end]).decode("utf-8")

    def tolist(self) -> list[str]:
        data = bytes(self._blob[: self._used])
        offsets = self._offsets[: self._n + 1].tolist()
        return [data[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(self._n)]

    def extend(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        total = int(lengths.sum())
        self._blob = _grow(self._blob, self._used + total)
        self._offsets = _grow(self._offsets, self._n + 1 + len(encoded))
        self._blob[self._used : self._used + total] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._offsets[self._n + 1 : self._n + 1 + len(encoded)] = self._used + np.cumsum(lengths)
        self._n += len(encoded)
        self._used += total

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(blob uint8, offsets int64), trimmed to the used length."""
        return self._blob[: self._used], self._offsets[: self._n + 1]

    def nbytes(self) -> int:
        return self._used + 8 * (self._n + 1)


class _Vocabulary:
    """Strings ↔ int32 codes; codes are stable (append-only)."""

    def __init__(self, column: StringColumn) -> None:
        self.column = column
        self.codes: dict[str, int] = {s: i for i, s in enumerate(column.tolist())}

    def code(self, value: str) -> int:
        found = self.codes.get(value)
        if found is None:
            found = len(self.codes)
            self.codes[value] = found
            self.column.extend([value])
        return found

    def known(self, values: Iterable[str]) -> np.ndarray:
        return np.array(sorted(self.codes[v] for v in values if v in self.codes), dtype=np.int32)


def _gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 flat indices of the ranges ``[starts[k], starts[k] + lengths[k])``, concatenated in order."""
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)


def _recode(vocabulary: _Vocabulary, codes: np.ndarray) -> tuple[_Vocabulary, np.ndarray]:
    """``codes`` renumbered by first appearance, with the vocabulary of the strings they use in that order."""
    codes = np.asarray(codes, dtype=np.int32)
    used, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(used.shape[0], dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(used.shape[0], dtype=np.int32)
    names = vocabulary.column.tolist()
    ordered = [names[int(code)] for code in used[np.argsort(first, kind="stable")]]
    return _Vocabulary(StringColumn.from_strings(ordered)), rank[inverse.reshape(-1)].astype(np.int32)


def parse_metadata(row: Mapping[str, Any] | None, field: str = "metadata") -> dict[str, Any]:
    """Normalise one metadata mapping (as ``Item.to_dict`` gives it) to stored fields; unknown keys ignored.

    Returns ``{title: str, category: str, tags: tuple[str, ...], price: float | None, available: bool,
    created_at: float | None}``. Raises :class:`InvalidInputError` naming the bad field.
    """
    row = row or {}
    title = row.get("title") or ""
    category = row.get("category") or ""
    if not isinstance(title, str):
        raise InvalidInputError(f"{field}.title", "must be a string")
    if not isinstance(category, str):
        raise InvalidInputError(f"{field}.category", "must be a string")
    raw_tags = row.get("tags") or ()
    if isinstance(raw_tags, str | bytes) or not all(isinstance(t, str) for t in raw_tags):
        raise InvalidInputError(f"{field}.tags", "must be a list of strings")
    available = row.get("available", True)
    if available is None:
        available = True
    if not isinstance(available, bool | np.bool_):
        raise InvalidInputError(f"{field}.available", "must be a boolean")
    return {
        "title": title,
        "category": category,
        "tags": tuple(dict.fromkeys(raw_tags)),
        "price": optional_number(row.get("price"), f"{field}.price"),
        "available": bool(available),
        "created_at": optional_number(row.get("created_at"), f"{field}.created_at"),
    }


_ARRAY_NAMES = (
    "category_codes",
    "category_vocab_blob",
    "category_vocab_offsets",
    "price",
    "available",
    "created_at",
    "tag_indptr",
    "tag_codes",
    "tag_vocab_blob",
    "tag_vocab_offsets",
    "title_blob",
    "title_offsets",
)


class MetadataColumns:
    """The metadata of every index position, as numpy columns (see the module docstring)."""

    def __init__(self) -> None:
        self.n = 0
        self._category_codes = np.zeros(0, dtype=np.int32)
        self._price = np.zeros(0, dtype=np.float64)
        self._available = np.zeros(0, dtype=bool)
        self._created_at = np.zeros(0, dtype=np.float64)
        self._tag_indptr = np.zeros(1, dtype=np.int64)
        self._tag_codes = np.zeros(0, dtype=np.int32)
        self._categories = _Vocabulary(StringColumn())
        self._tags = _Vocabulary(StringColumn())
        self._titles = StringColumn()
        self._tag_rows: np.ndarray | None = None  # row of each tag entry, built lazily for tags_any

    # -- building -------------------------------------------------------------------------------------------
    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append already-parsed rows (:func:`parse_metadata` output)."""
        m, start = len(rows), self.n
        end = start + m
        self._category_codes = _grow(self._category_codes, end)
        self._price = _grow(self._price, end)
        self._available = _grow(self._available, end)
        self._created_at = _grow(self._created_at, end)
        self._tag_indptr = _grow(self._tag_indptr, end + 1)
        tag_codes = [self._tags.code(t) for row in rows for t in row["tags"]]
        used = int(self._tag_indptr[start])
        self._tag_codes = _grow(self._tag_codes, used + len(tag_codes))
        self._tag_codes[used : used + len(tag_codes)] = tag_codes
        counts = np.fromiter((len(row["tags"]) for row in rows), dtype=np.int64, count=m)
        self._tag_indptr[start + 1 : end + 1] = used + np.cumsum(counts)
        self._category_codes[start:end] = [self._categories.code(row["category"]) for row in rows]
        self._price[start:end] = [np.nan if row["price"] is None else row["price"] for row in rows]
        self._available[start:end] = [row["available"] for row in rows]
        self._created_at[start:end] = [np.nan if r["created_at"] is None else r["created_at"] for r in rows]
        self._titles.extend([row["title"] for row in rows])
        self.n = end
        self._tag_rows = None

    def take(self, order: np.ndarray) -> MetadataColumns:
        """A new MetadataColumns whose row ``k`` is row ``order[k]`` of this one (a permutation, vectorised).

        Vocabulary codes are renumbered by first use in the new order, so the result equals the columns
        :meth:`append` builds from the rows given in that order: a build that streams rows in scan order and
        sorts them afterwards saves the same arrays as one that appended them sorted.
        """
        order = np.asarray(order, dtype=np.int64)
        n = self.n
        if order.shape != (n,):
            raise InvalidInputError("order", f"expected a permutation of {n} rows")
        out = MetadataColumns()
        out.n = n
        out._price = self._price[:n][order]
        out._available = self._available[:n][order]
        out._created_at = self._created_at[:n][order]
        out._categories, out._category_codes = _recode(self._categories, self._category_codes[:n][order])
        lengths = np.diff(self._tag_indptr[: n + 1])[order]
        out._tag_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=out._tag_indptr[1:])
        tags = self._tag_codes[_gather_ranges(self._tag_indptr[:n][order], lengths)]
        out._tags, out._tag_codes = _recode(self._tags, tags)
        blob, offsets = self._titles.arrays()
        title_lengths = np.diff(offsets)[order]
        new_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(title_lengths, out=new_offsets[1:])
        out._titles = StringColumn(blob[_gather_ranges(offsets[:n][order], title_lengths)], new_offsets)
        return out

    # -- reading --------------------------------------------------------------------------------------------
    def row(self, i: int) -> dict[str, Any]:
        """The metadata of position ``i`` as a JSON-safe dict (tags as a list)."""
        price = float(self._price[i])
        created_at = float(self._created_at[i])
        start, end = int(self._tag_indptr[i]), int(self._tag_indptr[i + 1])
        return {
            "title": self._titles[i],
            "category": self._categories.column[int(self._category_codes[i])],
            "tags": [self._tags.column[int(c)] for c in self._tag_codes[start:end]],
            "price": None if math.isnan(price) else price,
            "available": bool(self._available[i]),
            "created_at": None if math.isnan(created_at) else created_at,
        }

    def created_at(self, rows: np.ndarray) -> np.ndarray:
        """float64 (len(rows),): ``created_at`` at positions ``rows``, NaN where missing."""
        return self._created_at[rows]

    def mask(self, filters: Filters, rows: np.ndarray | None = None) -> np.ndarray:
        """bool: which positions pass ``filters`` (tombstones are the caller's business). Vectorised.

        ``rows`` (m,) int64 positions evaluates only those (cost O(m), for a few candidates of a big index);
        ``None`` evaluates every position (n,).
        """
        n = self.n
        every = rows is None
        at = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        keep = np.ones(at.shape[0], dtype=bool)
        codes = self._category_codes[:n] if every else self._category_codes[at]
        if filters.categories is not None:
            keep &= np.isin(codes, self._categories.known(filters.categories))
        if filters.exclude_categories is not None:
            keep &= ~np.isin(codes, self._categories.known(filters.exclude_categories))
        if filters.tags_any is not None:
            keep &= self._any_tag(self._tags.known(filters.tags_any), None if every else at)
        price = self._price[:n] if every else self._price[at]
        created_at = self._created_at[:n] if every else self._created_at[at]
        with np.errstate(invalid="ignore"):  # NaN (missing) compares False: fails any bound, as documented
            if filters.min_price is not None:
                keep &= price >= filters.min_price
            if filters.max_price is not None:
                keep &= price <= filters.max_price
            if filters.created_after is not None:
                keep &= created_at > filters.created_after
        if filters.available is not None:
            available = self._available[:n] if every else self._available[at]
            keep &= available == bool(filters.available)
        return keep

    def _any_tag(self, wanted: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """bool: has at least one tag code in ``wanted``, for every position (rows None) or for ``rows``."""
        n = self.n
        if rows is None:
            used = int(self._tag_indptr[n])
            hit = np.isin(self._tag_codes[:used], wanted)
            if self._tag_rows is None:
                self._tag_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(self._tag_indptr[: n + 1]))
            result = np.zeros(n, dtype=bool)
            result[self._tag_rows[hit]] = True
            return result
        starts, ends = self._tag_indptr[rows], self._tag_indptr[rows + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(rows.shape[0], dtype=np.int64), lengths)
        # flat index of every tag of the selected rows: its row's start plus its rank inside the row
        flat = np.repeat(starts, lengths) + (
            np.arange(owner.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        result = np.zeros(rows.shape[0], dtype=bool)
        result[owner[np.isin(self._tag_codes[flat], wanted)]] = True
        return result

    # -- serialisation --------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (trimmed) for ``np.savez``."""
        n = self.n
        used = int(self._tag_indptr[n])
        category_blob, category_offsets = self._categories.column.arrays()
        tag_blob, tag_offsets = self._tags.column.arrays()
        title_blob, title_offsets = self._titles.arrays()
        return {
            "category_codes": self._category_codes[:n],
            "category_vocab_blob": category_blob,
            "category_vocab_offsets": category_offsets,
            "price": self._price[:n],
            "available": self._available[:n],
            "created_at": self._created_at[:n],
            "tag_indptr": self._tag_indptr[: n + 1],
            "tag_codes": self._tag_codes[:used],
            "tag_vocab_blob": tag_blob,
            "tag_vocab_offsets": tag_offsets,
            "title_blob": title_blob,
            "title_offsets": title_offsets,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n: int) -> MetadataColumns:
        """Inverse of :meth:`arrays`; checks shapes and code ranges (:class:`IntegrityError` otherwise)."""
        missing = [name for name in _ARRAY_NAMES if name not in arrays]
        if missing:
            raise IntegrityError(f"metadata arrays missing: {', '.join(missing)}")
        columns = cls()
        categories = StringColumn.from_arrays(
            arrays["category_vocab_blob"], arrays["category_vocab_offsets"], "categories"
        )
        columns._categories = _Vocabulary(categories)
        columns._tags = _Vocabulary(
            StringColumn.from_arrays(arrays["tag_vocab_blob"], arrays["tag_vocab_offsets"], "tags")
        )
        columns._titles = StringColumn.from_arrays(arrays["title_blob"], arrays["title_offsets"], "titles")
        columns._category_codes = np.array(arrays["category_codes"], dtype=np.int32)
        columns._price = np.array(arrays["price"], dtype=np.float64)
        columns._available = np.array(arrays["available"], dtype=bool)
        columns._created_at = np.array(arrays["created_at"], dtype=np.float64)
        columns._tag_indptr = np.array(arrays["tag_indptr"], dtype=np.int64)
        columns._tag_codes = np.array(arrays["tag_codes"], dtype=np.int32)
        columns.n = n
        sizes = {
            columns._category_codes.shape,
            columns._price.shape,
            columns._available.shape,
            columns._created_at.shape,
            (len(columns._titles),),
        }
        indptr = columns._tag_indptr
        if (
            sizes != {(n,)}
            or indptr.shape != (n + 1,)
            or indptr[0] != 0
            or np.any(np.diff(indptr) < 0)
            or int(indptr[-1]) != columns._tag_codes.shape[0]
        ):
            raise IntegrityError("metadata arrays have inconsistent lengths")
        for codes, vocabulary, name in (
            (columns._category_codes, columns._categories, "category"),
            (columns._tag_codes, columns._tags, "tag"),
        ):
            if codes.size and (codes.min() < 0 or codes.max() >= len(vocabulary.codes)):
                raise IntegrityError(f"{name} codes out of vocabulary range")
        return columns

    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays().values())
