"""The catalog item: schema, validation, the text we encode, and streaming readers for catalog files.

Everything here is pure except the readers, which only read the stream they are given.

Row rules (what ``validate_row`` accepts; a row breaking several rules gets one ``FieldError`` per field):

- ``item_id`` (required): a string, stripped, that follows the one id rule of the API
  (:data:`embrec.domain.model.ID_PATTERN`: 1..128 ASCII letters, digits and ``_-.:@+=|``), so that every
  item the catalog accepts can be sent in an event and asked for its similar items. An ``int`` (not a
  ``bool``) is accepted and converted with ``str()``, because CSV exports and JSON dumps of integer keys are
  common; floats are rejected (``1.0`` vs ``"1"`` would silently make two items). A tombstone may also name
  an id stored before the rule (<= 256 characters, no control characters), so such items can be removed.
- ``title`` (required unless ``deleted``): a string, whitespace runs collapsed, 1..500 characters.
- ``description``: a string, stripped, at most ``MAX_DESCRIPTION_CHARS`` (100,000) characters and 200,000
  bytes of UTF-8; stored whole, and only truncated for encoding inside :func:`item_text`.
- ``category``: a string, whitespace collapsed, at most 200 characters.
- ``tags``: a list of strings, or one comma-separated string. Each tag is trimmed, empty tags dropped,
  duplicates dropped case-insensitively (first spelling kept); at most 50 tags of at most 100 characters.
- ``price``: a finite number >= 0, or a numeric string. NaN, infinity, negatives and booleans are rejected,
  and so is every number DynamoDB cannot store (magnitude outside 1e-130..1e126, e.g. a 400-digit integer),
  here and in ``image_embedding`` and ``extra``.
- ``available``: a bool, 0/1, or one of "true"/"false"/"1"/"0"/"yes"/"no" (any case). Default true.
- ``created_at``: ISO 8601 (naive means UTC) or epoch seconds; numbers above 1e11 are taken as epoch
  milliseconds. Stored as epoch seconds (float, UTC).
- ``image_embedding``: a list of 1..4096 finite numbers (a JSON array string is accepted from CSV).
- ``deleted``: a bool-like tombstone flag. A row with ``deleted`` true needs only ``item_id``; its other
  fields are ignored.
- Anything else is kept in ``extra`` (the keys of a nested ``extra`` object are merged in too): values must be
  JSON-safe (no NaN/inf), at most 64 keys and 16 KiB of JSON altogether. Values nested
  deeper than ``MAX_EXTRA_DEPTH`` (16) levels are rejected, key by key (DynamoDB would refuse the item).

``None`` and strings that are empty after stripping mean "absent" for every optional field. Text that cannot
be encoded as UTF-8 (undecodable bytes, lone surrogate escapes such as ``"\\ud800"``) is rejected in every
field, so an accepted item can always be hashed, stored and encoded. ``Item.to_dict`` gives every field
(absent ones as None or their default) with the unknown fields nested under ``"extra"``.

Readers (``read_catalog``) yield one :class:`RowResult` per row, good or bad, so every row is accounted for
(JSON nested too deeply to parse is one rejected row, not a crash):
JSON Lines (one object per line), JSON arrays (parsed incrementally, never loaded whole) and CSV (header row,
empty cells mean absent). Bytes that are not UTF-8 reject the row they fall in, not the file. A row larger
than ``max_row_bytes`` is rejected without being parsed. An ``item_id`` seen in an earlier *accepted* row of
the same file rejects the later row. ``.gz`` files are handled by :func:`read_catalog_named` (or
``gzipped=True``). CSV quoting is strict: an unterminated quote rejects that row rather than swallowing the
rows after it. In a JSON array a broken element is skipped by bracket matching and parsing resumes at the
next element; an element over ``max_row_bytes`` ends the file (there is no safe place to resume).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any, BinaryIO

from embrec.domain.model import ID_RULE, is_valid_id
from embrec.errors import InvalidInputError

__all__ = [
    "FORMATS",
    "ITEM_TEXT_VERSION",
    "MAX_DESCRIPTION_CHARS",
    "MAX_ROW_BYTES",
    "TEXT_DESCRIPTION_CHARS",
    "FieldError",
    "Item",
    "ResumePoint",
    "RowError",
    "RowResult",
    "content_hash",
    "detect_format",
    "item_text",
    "read_catalog",
    "read_catalog_named",
    "resumable",
    "validate_row",
]

# The longest id the catalog took before the id rule: a tombstone may still name one (see _tombstone_id).
MAX_LEGACY_ITEM_ID_CHARS = 256
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 100_000
MAX_DESCRIPTION_BYTES = 200_000
MAX_CATEGORY_CHARS = 200
MAX_TAGS = 50
MAX_TAG_CHARS = 100
MAX_EMBEDDING_DIM = 4096
MAX_EXTRA_KEYS = 64
MAX_EXTRA_BYTES = 16_384
# Nesting levels of an unknown field's value: DynamoDB refuses documents nested deeper than 32 levels (the
# item is one, ``extra`` another), and a refused item would fail the whole batch write, not its row.
MAX_EXTRA_DEPTH = 16
_DYNAMODB_MIN, _DYNAMODB_MAX = 1e-130, 1e126
_DYNAMODB_DIGITS = 38
_OUT_OF_RANGE = "out of the range a number can be stored in (magnitude 1e-130 to 1e126, 38 digits)"
# A row (one JSON line, one array element, one CSV record) larger than this is rejected unparsed.
MAX_ROW_BYTES = 16 * 1024 * 1024
# RowResult.raw keeps at most this many characters, so a rejected-rows report stays small.
RAW_MAX_CHARS = 65_536
# Epoch values above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_EPOCH_MS_THRESHOLD = 1e11
_MAX_EPOCH_SECONDS = 32_503_680_000.0  # year 3000

# item_text: MiniLM sees 256 word pieces; English runs ~4-5 characters per piece, so ~1000 characters of
# description plus title, category and tags fill the window without wasting tokenisation on text it drops.
TEXT_DESCRIPTION_CHARS = 1000
TEXT_MAX_TAGS = 20
# Bump when item_text changes: it is part of content_hash, so every item is re-encoded once.
ITEM_TEXT_VERSION = 1

FORMATS = ("jsonl", "json", "csv")
KNOWN_FIELDS = frozenset(
    {"item_id", "title", "description", "category", "tags", "price", "available", "created_at",
     "image_embedding", "deleted", "extra"}
)
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})
_WS = re.compile(r"\s+")
# Lone surrogates: undecodable bytes (surrogateescape) or "\\udXXX" escapes in JSON; neither encodes to UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UTF8 = "contains invalid UTF-8 (undecodable bytes or a lone surrogate escape)"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_CONTROL_NOT_WS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # Cc except \t \n \r


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a row. ``field`` is the row key ("row" for the row as a whole)."""

    field: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class RowError(InvalidInputError):
    """A catalog row is invalid. ``errors`` lists every bad field; ``field``/``reason`` are the first one."""

    def __init__(self, errors: list[FieldError]) -> None:
        if not errors:
            raise ValueError("RowError needs at least one FieldError")
        first = errors[0]
        super().__init__(first.field, first.reason)
        self.errors = list(errors)
        self.message = "; ".join(f"{e.field}: {e.reason}" for e in errors)
        self.args = (self.message,)

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out["errors"] = [e.to_dict() for e in self.errors]
        return out


@dataclass(frozen=True)
class Item:
    """A validated catalog item. Build one with :func:`validate_row` / :meth:`from_dict`, not by hand.

    ``created_at`` is epoch seconds (UTC); ``image_embedding`` is an optional vector of floats; ``extra``
    holds the row's unknown fields (JSON-safe). ``extra`` is excluded from ``hash()`` (dicts are not
    hashable).
    """

    item_id: str
    title: str
    description: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    price: float | None = None
    available: bool = True
    created_at: float | None = None
    image_embedding: tuple[float, ...] | None = None
    deleted: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict with every field (absent ones as None/defaults); ``Item.from_dict`` inverts it."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "tags": list(self.tags),
            "price": self.price,
            "available": self.available,
            "created_at": self.created_at,
            "image_embedding": None if self.image_embedding is None else list(self.image_embedding),
            "deleted": self.deleted,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Item:
        """Inverse of :meth:`to_dict` (runs the full validation; raises :class:`RowError`)."""
        return validate_row(data)


@dataclass(frozen=True)
class RowResult:
    """The outcome of one row of a catalog file.

    ``line`` is 1-based: the physical line where the row starts (JSON Lines line, CSV record start, JSON array
    element start). ``item`` is set iff ``errors`` is empty. ``raw`` is the row's text (at most
    ``RAW_MAX_CHARS`` characters; undecodable bytes shown as U+FFFD).
    """

    line: int
    item: Item | None
    errors: list[FieldError]
    raw: str
    end: int | None = None  # see the docstring

    @property
    def ok(self) -> bool:
        return self.item is not None


# ---------------------------------------------------------------------------------------------------------
# Field validators: each returns the clean value or raises _Bad(reason).


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _type_name(value: Any) -> str:
    return type(value).__name__


def _text(value: Any, limit: int, *, collapse: bool) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, got {_type_name(value)}")
    if len(value) > limit * 4:
        raise _Bad(f"longer than {limit} characters ({len(value)})")
    text = _WS.sub(" ", value).strip() if collapse else value.strip()
    if len(text) > limit:
        raise _Bad(f"longer than {limit} characters ({len(text)})")
    if _SURROGATE.search(text):
        raise _Bad(_NOT_UTF8)
    if collapse and _has_control(text):
        raise _Bad("contains control characters")
    return text


def _id_text(value: Any) -> str:
    """An id cell as text: an int converted, surrounding whitespace stripped, not empty."""
    if isinstance(value, bool):
        raise _Bad("must be a string, got bool")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(f"must be a string, got {_type_name(value)}")
    text = value.strip()
    if not text:
        raise _Bad("must not be empty")
    return text


def _item_id(value: Any) -> str:
    text = _id_text(value)
    if not is_valid_id(text):
        raise _Bad(ID_RULE)
    return text


def _tombstone_id(value: Any) -> str:
    """The id of a ``deleted`` row: the id rule, or an id the catalog accepted before the rule existed."""
    text = _id_text(value)
    if is_valid_id(text):
        return text
    if len(text) > MAX_LEGACY_ITEM_ID_CHARS or _has_control(text) or _SURROGATE.search(text):
        raise _Bad(ID_RULE)
    return text


def _description(value: Any) -> str:
    text = _text(value, MAX_DESCRIPTION_CHARS, collapse=False)
    # Keep newlines and tabs (paragraphs), refuse other control characters (NUL, escape codes).
    if _CONTROL_NOT_WS.search(text):
        raise _Bad("contains control characters")
    # A byte cap too, so one stored item (description + vector + extra) stays under DynamoDB's 400 KB.
    size = len(text.encode("utf-8"))
    if size > MAX_DESCRIPTION_BYTES:
        raise _Bad(f"larger than {MAX_DESCRIPTION_BYTES} bytes of UTF-8 ({size})")
    return text


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise _Bad(f"must be a list of strings or a comma-separated string, got {_type_name(value)}")
    out: list[str] = []
    seen: set[str] = set()
    for part in parts:
        if not isinstance(part, str):
            raise _Bad(f"every tag must be a string, got {_type_name(part)}")
        tag = _WS.sub(" ", part).strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS:
            raise _Bad(f"tag longer than {MAX_TAG_CHARS} characters ({len(tag)})")
        if _has_control(tag):
            raise _Bad("tag contains control characters")
        if _SURROGATE.search(tag):
            raise _Bad("tag " + _NOT_UTF8)
        key = tag.casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(tag)
    if len(out) > MAX_TAGS:
        raise _Bad(f"more than {MAX_TAGS} tags ({len(out)})")
    return tuple(out)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise _Bad("must be a number, got bool")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise _Bad(_OUT_OF_RANGE) from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Bad(f"must be a number, got {value.strip()[:40]!r}") from None
    else:
        raise _Bad(f"must be a number, got {_type_name(value)}")
    if not math.isfinite(number):
        raise _Bad("must be finite")
    if not _storable(number):
        raise _Bad(_OUT_OF_RANGE)
    return number


def _storable(number: float) -> bool:
    """DynamoDB stores numbers of magnitude 1e-130 .. 1e126 (or 0), at most 38 significant digits."""
    magnitude = abs(number)
    return magnitude == 0 or _DYNAMODB_MIN <= magnitude < _DYNAMODB_MAX


def _price(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise _Bad("must be >= 0")
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Bad(f"must be true or false, got {str(value)[:40]!r}")


def _created_at(value: Any) -> float:
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise _Bad(f"must be ISO 8601 or epoch seconds, got {text[:40]!r}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        try:
            seconds = _number(value)
        except _Bad:
            raise _Bad(f"must be ISO 8601 or epoch seconds, got {_type_name(value)}") from None
    if not math.isfinite(seconds):
        raise _Bad("must be finite")
    if abs(seconds) >= _EPOCH_MS_THRESHOLD:
        seconds /= 1000.0
    if not 0.0 <= seconds <= _MAX_EPOCH_SECONDS:
        raise _Bad("must be between 1970 and 3000")
    return seconds


def _embedding(value: Any) -> tuple[float, ...]:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise _Bad("is not a valid JSON array") from None
    if not isinstance(value, list | tuple):
        raise _Bad(f"must be a list of numbers, got {_type_name(value)}")
    if not 1 <= len(value) <= MAX_EMBEDDING_DIM:
        raise _Bad(f"must have 1..{MAX_EMBEDDING_DIM} values, got {len(value)}")
    out: list[float] = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise _Bad(f"every value must be a number, got {_type_name(x)}")
        try:
            number = float(x)
        except OverflowError:
            raise _Bad("every value must be " + _OUT_OF_RANGE) from None
        if not math.isfinite(number):
            raise _Bad("every value must be finite")
        if not _storable(number):
            raise _Bad("every value must be " + _OUT_OF_RANGE)
        out.append(number)
    return tuple(out)


def _extra(row: Mapping[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    nested = row.get("extra")
    if nested is not None:
        if isinstance(nested, Mapping):
            extra.update(nested)
        else:
            errors.append(FieldError("extra", f"must be an object, got {_type_name(nested)}"))
    for key, value in row.items():
        if key not in KNOWN_FIELDS:
            extra[key] = value
    if not extra:
        return {}
    for key, value in list(extra.items()):
        problem = _unstorable(value)
        if problem is not None:
            errors.append(FieldError(str(key), problem))
            del extra[key]
    try:  # the common case: everything serialises; check key by key only to name the culprit
        blob = json.dumps(extra, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError):
        blob = None
    if blob is not None and all(isinstance(k, str) for k in extra) and not _SURROGATE.search(blob):
        good: dict[str, Any] = extra
    else:
        good = _extra_by_key(extra, errors)
        blob = json.dumps(good, ensure_ascii=False)
    if len(good) > MAX_EXTRA_KEYS:
        errors.append(FieldError("extra", f"more than {MAX_EXTRA_KEYS} unknown fields ({len(good)})"))
    elif len(blob.encode()) > MAX_EXTRA_BYTES:
        errors.append(FieldError("extra", f"unknown fields exceed {MAX_EXTRA_BYTES} bytes of JSON"))
    return good


def _unstorable(value: Any) -> str | None:
    """Why DynamoDB would refuse this JSON value (too deep, a number out of its range), or None. Iterative:
    a value nested thousands deep is judged without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping | list | tuple):
            if depth > MAX_EXTRA_DEPTH:
                return f"nested deeper than {MAX_EXTRA_DEPTH} levels"
            children = node.values() if isinstance(node, Mapping) else node
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(node, int) and not isinstance(node, bool):
            if abs(node) >= 10**_DYNAMODB_DIGITS:
                return _OUT_OF_RANGE
        elif isinstance(node, float) and math.isfinite(node) and not _storable(node):
            return _OUT_OF_RANGE
    return None


def _extra_by_key(extra: dict[Any, Any], errors: list[FieldError]) -> dict[str, Any]:
    good: dict[str, Any] = {}
    for key, value in extra.items():
        if not isinstance(key, str):
            errors.append(FieldError("extra", f"keys must be strings, got {_type_name(key)}"))
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            errors.append(FieldError(key, "is not JSON-safe (NaN, infinity or a non-JSON type)"))
            continue
        if _SURROGATE.search(json.dumps(value, ensure_ascii=False)):
            errors.append(FieldError(key, _NOT_UTF8))
            continue
        good[key] = value
    return good


def _is_tombstone(row: Mapping[str, Any]) -> bool:
    try:
        return not _absent(row.get("deleted")) and bool(_flag(row.get("deleted")))
    except _Bad:
        return False  # reported by check("deleted", ...)


def validate_row(row: Mapping[str, Any]) -> Item:
    """Validate one catalog row (a JSON object or CSV record as a mapping) into an :class:`Item`.

    Raises :class:`RowError` listing every bad field (see the module docstring for the rules).
    """
    if not isinstance(row, Mapping):
        raise RowError([FieldError("row", f"must be an object, got {_type_name(row)}")])
    errors: list[FieldError] = []
    clean: dict[str, Any] = {}

    def check(name: str, fn: Any, *, required: bool = False) -> None:
        value = row.get(name)
        if _absent(value):
            if required:
                errors.append(FieldError(name, "is required"))
            return
        try:
            clean[name] = fn(value)
        except _Bad as bad:
            errors.append(FieldError(name, bad.reason))

    check("item_id", _tombstone_id if _is_tombstone(row) else _item_id, required=True)
    check("deleted", _flag)
    if clean.get("deleted"):
        if errors:
            raise RowError(errors)
        return Item(item_id=clean["item_id"], title="", deleted=True)

    check("title", lambda v: _text(v, MAX_TITLE_CHARS, collapse=True), required=True)
    check("description", _description)
    check("category", lambda v: _text(v, MAX_CATEGORY_CHARS, collapse=True))
    check("tags", _tags)
    check("price", _price)
    check("available", _flag)
    check("created_at", _created_at)
    check("image_embedding", _embedding)
    extra = _extra(row, errors)
    if errors:
        raise RowError(errors)
    return Item(extra=extra, **clean)


# ---------------------------------------------------------------------------------------------------------
# Text and hash


def _truncate_words(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def item_text(item: Item) -> str:
    """THE text an item is encoded from (template version ``ITEM_TEXT_VERSION``)::

        "<title>. Category: <category>. Tags: <t1>, <t2>. <description truncated to ~1000 chars>"

    Empty parts are left out; whitespace in the description is collapsed; at most ``TEXT_MAX_TAGS`` tags.
    """
    parts = [_sentence(item.title.strip())] if item.title.strip() else []
    if item.category:
        parts.append(_sentence(f"Category: {item.category}"))
    if item.tags:
        parts.append(_sentence("Tags: " + ", ".join(item.tags[:TEXT_MAX_TAGS])))
    description = _WS.sub(" ", item.description).strip()
    if description:
        parts.append(_truncate_words(description, TEXT_DESCRIPTION_CHARS))
    return " ".join(parts)


def content_hash(item: Item) -> str:
    """sha256 hex of everything that affects the stored item and its vector (fields + text template version).

    Equal items (after validation) hash equal regardless of input spelling, so re-ingesting an unchanged
    catalog re-encodes nothing.
    """
    doc = {"v": ITEM_TEXT_VERSION, "item": item.to_dict()}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Readers


def detect_format(name: str) -> str:
    """"jsonl" | "json" | "csv" from a file name's extension (a trailing ".gz" is ignored; see
    :func:`read_catalog_named`). Raises InvalidInputError("format", ...) for anything else."""
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    if lower.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if lower.endswith(".json"):
        return "json"
    if lower.endswith(".csv"):
        return "csv"
    reason = f"unsupported catalog file {name!r} (use .jsonl, .ndjson, .json or .csv, optionally .gz)"
    raise InvalidInputError("format", reason)


@dataclass(frozen=True)
class ResumePoint:
    """Where a continuation picks a JSON Lines file up: ``offset`` bytes into the uncompressed file, after
    ``line`` physical lines. A plain file's stream must start there (a ranged GET); a gzipped one starts at
    byte 0 and the reader decompresses and discards ``offset`` bytes first (gzip cannot seek: the earlier
    rows are decompressed again, never parsed or validated again)."""

    offset: int = 0
    line: int = 0


def resumable(name: str) -> bool:
    """True when a file of this name can be resumed at a byte offset (JSON Lines, gzipped or not)."""
    return detect_format(name) == "jsonl"


def read_catalog_named(
    stream: BinaryIO, name: str, *, max_row_bytes: int = MAX_ROW_BYTES, resume: ResumePoint | None = None
) -> Iterator[RowResult]:
    """:func:`read_catalog` with the format taken from ``name`` and gzip applied when it ends in ".gz"."""
    return read_catalog(stream, detect_format(name), gzipped=name.lower().endswith(".gz"),
                        max_row_bytes=max_row_bytes, resume=resume)


def read_catalog(
    stream: BinaryIO,
    fmt: str,
    *,
    gzipped: bool = False,
    max_row_bytes: int = MAX_ROW_BYTES,
    resume: ResumePoint | None = None,
) -> Iterator[RowResult]:
    """Stream rows of a catalog file as :class:`RowResult` (one per row, good or bad), in file order.

    ``stream`` is a binary file-like object (a local file, an S3 body); it is read sequentially, never whole.
    ``fmt`` is "jsonl", "json" or "csv". Raises InvalidInputError("format", ...) for an unknown format, or for
    a ``resume`` point in a format that cannot resume (JSON arrays and CSV are read from their start).
    """
    if fmt not in FORMATS:
        raise InvalidInputError("format", f"unknown catalog format {fmt!r}; expected one of {FORMATS}")
    if resume is not None and resume.offset and fmt != "jsonl":
        raise InvalidInputError("format", f"a {fmt} file cannot resume at a byte offset")
    source: IO[bytes] = stream
    if gzipped:
        source = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        if resume is not None:
            _discard(source, resume.offset)
    if fmt == "jsonl":
        rows = _read_jsonl(source, max_row_bytes, resume or ResumePoint())
    elif fmt == "json":
        rows = _read_json_array(source, max_row_bytes)
    else:
        rows = _read_csv(source, max_row_bytes)
    return _dedupe(rows)


def _discard(stream: IO[bytes], size: int) -> None:
    left = size
    while left > 0:
        got = len(stream.read(min(left, 1 << 20)))
        if not got:
            raise InvalidInputError("resume", f"the file ends before the resume offset {size}")
        left -= got


def _dedupe(rows: Iterator[RowResult]) -> Iterator[RowResult]:
    seen: dict[str, int] = {}
    for result in rows:
        if result.item is not None:
            first = seen.get(result.item.item_id)
            if first is not None:
                reason = f"duplicate item_id {result.item.item_id!r} (first at line {first})"
                yield RowResult(result.line, None, [FieldError("item_id", reason)], result.raw)
                continue
            seen[result.item.item_id] = result.line
        yield result


def _display(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text[:RAW_MAX_CHARS])


def _bad_utf8(text: str) -> FieldError | None:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return FieldError("row", f"invalid UTF-8 at character {match.start() + 1}")


def _from_object(line: int, obj: Any, raw: str) -> RowResult:
    if not isinstance(obj, dict):
        return RowResult(line, None, [FieldError("row", f"must be a JSON object, got {_json_type(obj)}")],
                         _display(raw))
    try:
        return RowResult(line, validate_row(obj), [], _display(raw))
    except RowError as err:
        return RowResult(line, None, err.errors, _display(raw))


def _json_type(obj: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(obj), "null")


def _too_large(line: int, size: int, limit: int, raw: str) -> RowResult:
    reason = f"row is larger than {limit} bytes ({size}+), not parsed"
    return RowResult(line, None, [FieldError("row", reason)], _display(raw[:200]))


def _read_jsonl(stream: IO[bytes], limit: int, resume: ResumePoint) -> Iterator[RowResult]:
    line_no = resume.line
    offset = resume.offset
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        line_no += 1
        offset += len(chunk)
        if len(chunk) > limit and not chunk.endswith(b"\n"):
            size = len(chunk)
            head = chunk[:200].decode("utf-8", "replace")
            while chunk and not chunk.endswith(b"\n"):  # skip the rest of the oversized line
                chunk = stream.readline(1 << 20)
                size += len(chunk)
                offset += len(chunk)
            yield replace(_too_large(line_no, size, limit, head), end=offset)
            continue
        if offset == len(chunk) and chunk.startswith(codecs.BOM_UTF8):  # the file's first line
            chunk = chunk[len(codecs.BOM_UTF8):]
        text = chunk.decode("utf-8", "surrogateescape").rstrip("\r\n")
        if not text.strip():
            continue
        bad = _bad_utf8(text)
        if bad is not None:
            yield RowResult(line_no, None, [bad], _display(text), offset)
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as err:
            yield RowResult(line_no, None, [FieldError("row", f"invalid JSON: {_json_reason(err)}")],
                            _display(text), offset)
            continue
        yield replace(_from_object(line_no, obj, text), end=offset)


def _json_reason(err: ValueError | RecursionError) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} (column {err.colno})"
    return str(err)


_JSON_CHUNK_BYTES = 1 << 16  # read size of the JSON array parser (tests shrink it to hit every edge)
_ARRAY_TOKEN = re.compile(r'["\[\]{},]')
_STRING_END = re.compile(r'["\\]')


def _scan_value_end(buf: str, start: int) -> int | None:
    """End offset (exclusive) of the JSON value starting at ``start``, found by bracket and string matching
    only (content is not validated), or None if the buffer ends first. Scalars end at "," or "]" at depth
    0."""
    stack: list[str] = []
    pos = start
    while True:
        match = _ARRAY_TOKEN.search(buf, pos)
        if match is None:
            return None
        ch = match.group()
        pos = match.end()
        if ch == '"':
            while True:
                end = _STRING_END.search(buf, pos)
                if end is None:
                    return None
                if end.group() == "\\":
                    pos = end.end() + 1
                    continue
                pos = end.end()
                break
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}":
            if not stack:
                return match.start()  # the array's closing bracket ends a scalar
            if stack.pop() != ch:
                return pos  # mismatched bracket: the broken element ends here
            if not stack:
                return pos
        elif ch == "," and not stack:
            return match.start()


def _read_json_array(stream: IO[bytes], limit: int) -> Iterator[RowResult]:
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    chunk_size = _JSON_CHUNK_BYTES
    buf = ""
    pos = 0
    line_base = 1  # line number of buf[0]
    eof = False
    first = True

    def fill(min_new: int) -> bool:
        nonlocal buf, pos, line_base, eof, first
        if eof:
            return False
        if pos:
            line_base += buf.count("\n", 0, pos)
            buf = buf[pos:]
            pos = 0
        data = stream.read(max(chunk_size, min_new))
        if not data:
            eof = True
            buf += utf8.decode(b"", final=True)
            return False
        text = utf8.decode(data)
        if first and text:  # the BOM may arrive over several tiny reads: strip it from the first character
            first = False
            text = text.removeprefix("\ufeff")
        buf += text
        return True

    def skip_ws() -> bool:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return True
            if not fill(0):
                return False

    def line_at(offset: int) -> int:
        return line_base + buf.count("\n", 0, offset)

    if not skip_ws():
        return  # empty file: no rows
    if buf[pos] != "[":
        yield RowResult(line_at(pos), None, [FieldError("row", "file is not a JSON array (expected '[')")],
                        _display(buf[pos:pos + 200]))
        return
    pos += 1
    expect_value = True
    while True:
        if not skip_ws():
            reason = "unexpected end of file inside the array"
            yield RowResult(line_at(pos), None, [FieldError("row", reason)], "")
            return
        ch = buf[pos]
        if ch == "]":
            return
        if not expect_value:
            if ch != ",":
                yield RowResult(line_at(pos), None, [FieldError("row", f"expected ',' or ']', got {ch!r}")],
                                _display(buf[pos:pos + 200]))
                return
            pos += 1
            expect_value = True
            continue
        if ch == ",":  # an empty element (",,"): skip it
            pos += 1
            continue
        start = pos
        line = line_at(start)
        while True:
            try:
                obj, end = decoder.raw_decode(buf, start)
                # A scalar cut at the buffer edge ("12" of "123") decodes; make sure it is really complete.
                if end == len(buf) and not eof and not isinstance(obj, dict | list):
                    raise ValueError("maybe incomplete")
            except (ValueError, RecursionError) as err:
                end_scan = _scan_value_end(buf, start)
                if end_scan is not None:
                    raw = buf[start:end_scan]
                    bad = _bad_utf8(raw)
                    problem = bad or FieldError("row", f"invalid JSON: {_json_reason(err)}")
                    yield RowResult(line, None, [problem], _display(raw))
                    pos = end_scan
                    break
                if len(buf) - start > limit:
                    yield _too_large(line, len(buf) - start, limit, buf[start:start + 200])
                    return  # cannot resynchronise inside an oversized element
                grown = fill(len(buf) - start)
                start = pos  # fill() moved the buffer: the element now starts at pos
                if not grown:
                    reason = "unexpected end of file inside an element"
                    yield RowResult(line, None, [FieldError("row", reason)], _display(buf[start:]))
                    return
                continue
            raw = buf[start:end]
            pos = end
            if len(raw.encode("utf-8", "surrogateescape")) > limit:
                yield _too_large(line, len(raw), limit, raw)
            else:
                bad = _bad_utf8(raw)
                yield (RowResult(line, None, [bad], _display(raw)) if bad is not None
                       else _from_object(line, obj, raw))
            break
        expect_value = False


_LIST_COLUMNS = ("tags", "image_embedding")


def _read_csv(stream: IO[bytes], limit: int) -> Iterator[RowResult]:
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)  # process-wide, raised only: rows are bounded by `limit` anyway
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        # strict: an unterminated quote is reported, not silently merged with the rows after it
        yield from _csv_rows(csv.reader(text, strict=True), limit)
    finally:
        text.detach()  # leave the caller's stream open (a collected wrapper would close it)


def _csv_rows(reader: Any, limit: int) -> Iterator[RowResult]:
    header: list[str] | None = None
    last_line = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            start = last_line + 1
            last_line = reader.line_num
            yield RowResult(start, None, [FieldError("row", f"invalid CSV: {err}")], "")
            if header is None:
                return
            continue
        start = last_line + 1
        last_line = reader.line_num
        if not record or all(cell.strip() == "" for cell in record):
            continue
        raw = ",".join(record)
        if len(raw) > limit:  # characters >= bytes / 4; csv.field_size_limit bounds each field while reading
            yield _too_large(start, len(raw), limit, raw)
            continue
        if header is None:
            header = [name.strip() for name in record]
            duplicates = sorted({n for n in header if n and header.count(n) > 1})
            if duplicates:
                yield RowResult(start, None, [FieldError("header", f"duplicate columns {duplicates}")],
                                _display(raw))
                return
            continue
        bad = _bad_utf8(raw)
        if bad is not None:
            yield RowResult(start, None, [bad], _display(raw))
            continue
        if len(record) > len(header):
            reason = f"has {len(record)} fields, the header has {len(header)}"
            yield RowResult(start, None, [FieldError("row", reason)], _display(raw))
            continue
        row: dict[str, Any] = {}
        for name, cell in zip(header, record, strict=False):
            if not name or cell.strip() == "":
                continue  # unnamed column or empty cell: absent
            value: Any = cell
            if name in _LIST_COLUMNS and cell.lstrip().startswith("["):
                try:
                    value = json.loads(cell)
                except (ValueError, RecursionError):
                    value = cell  # validation reports it (tags fall back to comma-splitting)
            row[name] = value
        try:
            yield RowResult(start, validate_row(row), [], _display(raw))
        except RowError as err:
            yield RowResult(start, None, err.errors, _display(raw))
