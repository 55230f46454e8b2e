"""History files (bulk import of past interactions): streamed rows, each validated or rejected with reasons.

Formats, told by the object's name: CSV with a header (``.csv``) or JSON Lines (``.jsonl``/``.ndjson``),
either gzipped (``.gz``). Columns (header names are case-insensitive): ``user_id``, ``item_id``, ``type``,
``timestamp`` required; ``event_id``, ``value``, ``recommendation_id`` optional; other columns are ignored.
Amazon Personalize's interactions header (``USER_ID, ITEM_ID, TIMESTAMP, EVENT_TYPE, EVENT_VALUE``) loads as
is. The rules are the ``POST /events`` rules (:mod:`embrec.edge.contract`), except that ``timestamp`` is
required and a row without ``event_id`` gets one derived from its content, so the same row imported twice
is stored once.

The stream is read in ``READ_BYTES`` blocks (never a byte per call) and can start at a byte offset (a
continuation's ranged GET): :attr:`HistoryRow.end_offset` is where the row ends in the uncompressed file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from embrec.domain.model import Interaction, check_id
from embrec.edge.contract import (
    EVENT_VALUE_DECIMALS,
    MAX_EVENT_VALUE,
    MAX_FUTURE_SKEW_SECONDS,
    parse_event_type,
    parse_item_id,
    parse_timestamp,
    parse_user_id,
)
from embrec.errors import InvalidInputError

__all__ = [
    "HISTORY_FORMATS",
    "MAX_LINE_BYTES",
    "HistoryRow",
    "history_format",
    "read_history",
]

HISTORY_FORMATS = ("csv", "jsonl")
READ_BYTES = 1 << 20
MAX_LINE_BYTES = 64 * 1024  # a longer line is rejected unparsed (rows are a few dozen bytes)
RAW_MAX_CHARS = 1000
# Header names that mean one of ours (Amazon Personalize's EVENT_TYPE / EVENT_VALUE).
_ALIASES = {"event_type": "type", "event_value": "value"}
_REQUIRED = ("user_id", "item_id", "type", "timestamp")


@dataclass(frozen=True)
class HistoryRow:
    """One row: ``interaction`` (with its ``user_id``) when valid, else ``errors`` (field, reason) pairs.

    ``line`` is the 1-based line where the row starts; ``end_offset`` the byte just after it (uncompressed).
    A CSV header comes back as a row with ``columns`` set (normalised names), no interaction and no errors: it
    is not a data row, and a continuation needs it.
    """

    line: int
    end_offset: int
    user_id: str | None
    interaction: Interaction | None
    errors: list[dict[str, str]] = field(default_factory=list)
    raw: str = ""
    columns: tuple[str, ...] = ()
    unknown_type: str | None = None  # a type the deployment has not declared (reported per type)


def history_format(name: str) -> tuple[str, bool]:
    """``(format, gzipped)`` from an object name; InvalidInputError("format") when it is neither."""
    lower = name.lower()
    gzipped = lower.endswith(".gz")
    stem = lower[: -len(".gz")] if gzipped else lower
    if stem.endswith(".csv"):
        return "csv", gzipped
    if stem.endswith((".jsonl", ".ndjson")):
        return "jsonl", gzipped
    raise InvalidInputError("format", f"{name}: name must end in .csv or .jsonl/.ndjson (optionally .gz)")


def _lines(stream: IO[bytes], offset: int) -> Iterator[tuple[bytes, int]]:
    """``(line, end offset)`` for each line, read in ``READ_BYTES`` blocks; an over-long line comes back
    truncated to ``MAX_LINE_BYTES + 1`` bytes (the caller rejects it) and the rest of it is skipped."""
    buffer = b""
    position = offset
    skipping = False
    while True:
        block = stream.read(READ_BYTES)
        if not block:
            if buffer and not skipping:
                yield buffer, position + len(buffer)
            return
        buffer += block
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if skipping:
                skipping = False
            else:
                yield buffer[start : end + 1], position + end + 1
            start = end + 1
        position += start
        buffer = buffer[start:]
        if len(buffer) > MAX_LINE_BYTES and not skipping:
            yield buffer[: MAX_LINE_BYTES + 1], position + len(buffer)
            position += len(buffer)
            buffer = b""
            skipping = True
        elif skipping:
            position += len(buffer)
            buffer = b""


def _bad(line: int, end: int, name: str, reason: str, raw: str = "") -> HistoryRow:
    return HistoryRow(line, end, None, None, [{"field": name, "reason": reason}], raw)


def _normalise(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def _event_id(user_id: str, interaction: Interaction) -> str:
    # Content-derived, so the same row imported twice lands on the same key (user, timestamp, event id).
    text = "\x1f".join(
        (user_id, interaction.item_id, interaction.type, repr(interaction.timestamp), repr(interaction.value))
    )
    return "h-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _value(raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise InvalidInputError("value", "must be a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidInputError("value", "must be a number") from None
    if not math.isfinite(value) or abs(value) > MAX_EVENT_VALUE:
        raise InvalidInputError("value", f"must be a finite number within +-{MAX_EVENT_VALUE:g}")
    return round(value, EVENT_VALUE_DECIMALS)


def _validate(
    record: Mapping[str, Any], event_types: Collection[str], now: float
) -> tuple[str | None, Interaction | None, list[dict[str, str]]]:
    errors: list[dict[str, str]] = []

    def check(name: str, parse: Any) -> Any:
        try:
            return parse(record.get(name))
        except InvalidInputError as error:
            errors.append({"field": error.field, "reason": error.reason})
            return None

    for name in _REQUIRED:
        if record.get(name) in (None, ""):
            errors.append({"field": name, "reason": "is required"})
    if errors:
        return None, None, errors
    user_id = check("user_id", parse_user_id)
    item_id = check("item_id", parse_item_id)
    kind = check("type", lambda raw: parse_event_type(raw, event_types))
    timestamp = check("timestamp", lambda raw: parse_timestamp(raw, "timestamp"))
    if timestamp is not None and timestamp > now + MAX_FUTURE_SKEW_SECONDS:
        errors.append({"field": "timestamp", "reason": "is in the future"})
    value = check("value", _value)
    event_id = check("event_id", lambda raw: None if raw in (None, "") else check_id(raw, "event_id"))
    recommendation_id = check(
        "recommendation_id", lambda raw: None if raw in (None, "") else check_id(raw, "recommendation_id")
    )
    if errors:
        return None, None, errors
    interaction = Interaction(item_id, kind, round(float(timestamp), 3), value, "", recommendation_id)
    return user_id, _with_id(interaction, event_id or _event_id(user_id, interaction)), []


def _with_id(interaction: Interaction, event_id: str) -> Interaction:
    return Interaction(
        interaction.item_id, interaction.type, interaction.timestamp, interaction.value, event_id,
        interaction.recommendation_id,
    )


def _row(
    line: int, end: int, record: Any, raw: str, event_types: Collection[str], now: float
) -> HistoryRow:
    if not isinstance(record, dict):
        return _bad(line, end, "row", "must be a JSON object", raw)
    values = {_normalise(str(k)): v for k, v in record.items()}
    user_id, interaction, errors = _validate(values, event_types, now)
    kind = values.get("type")
    unknown = kind[:40] if isinstance(kind, str) and kind and kind not in event_types else None
    return HistoryRow(line, end, user_id, interaction, errors, raw if errors else "", unknown_type=unknown)


def _too_long(line: int, end: int, text: bytes) -> HistoryRow:
    reason = f"line is longer than {MAX_LINE_BYTES} bytes, not parsed"
    return _bad(line, end, "row", reason, text[:200].decode("utf-8", "replace"))


def read_history(
    stream: BinaryIO,
    name: str,
    event_types: Collection[str],
    now: float,
    *,
    offset: int = 0,
    first_line: int = 1,
    header: list[str] | None = None,
) -> Iterator[HistoryRow]:
    """Stream the rows of a history file from byte ``offset`` (uncompressed), in file order.

    ``stream`` is positioned at ``offset`` already (a ranged GET; a gzipped file is always read from 0 and
    its first ``offset`` bytes skipped). A CSV continuation passes the ``header`` read by the first chunk.
    Blank lines are skipped; a CSV without a header row with the required columns is one rejected row (the
    header) and nothing else.
    """
    fmt, gzipped = history_format(name)
    source: IO[bytes] = stream
    if gzipped:
        source = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        skip = offset
        while skip > 0:
            skipped = source.read(min(skip, READ_BYTES))
            if not skipped:
                break
            skip -= len(skipped)
    lines = _lines(source, offset)
    if fmt == "jsonl":
        yield from _jsonl_rows(lines, first_line, event_types, now)
    else:
        yield from _csv_rows(lines, first_line, header, event_types, now)


def _jsonl_rows(
    lines: Iterator[tuple[bytes, int]], line: int, event_types: Collection[str], now: float
) -> Iterator[HistoryRow]:
    for number, (chunk, end) in enumerate(lines, start=line):
        if len(chunk) > MAX_LINE_BYTES:
            yield _too_long(number, end, chunk)
            continue
        text = chunk.decode("utf-8", "replace").strip()
        if number == 1:
            text = text.lstrip("\ufeff")
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError as error:
            yield _bad(number, end, "row", f"invalid JSON: {error}", text[:RAW_MAX_CHARS])
            continue
        yield _row(number, end, record, text[:RAW_MAX_CHARS], event_types, now)


def _header_columns(row: list[str]) -> list[str]:
    """A CSV header row's column names, normalised (lower case, Personalize's names mapped to ours)."""
    return [_normalise(name.lstrip("\ufeff")) for name in row]


def _csv_rows(
    lines: Iterator[tuple[bytes, int]],
    line: int,
    header: list[str] | None,
    event_types: Collection[str],
    now: float,
) -> Iterator[HistoryRow]:
    position = {"end": 0, "line": line - 1, "long": False}

    def texts() -> Iterator[str]:
        for chunk, end in lines:
            position["end"] = end
            position["line"] += 1
            position["long"] = len(chunk) > MAX_LINE_BYTES
            yield chunk.decode("utf-8", "replace")

    reader = csv.reader(texts(), strict=True)
    columns = header
    while True:
        start = position["line"] + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield _bad(start, position["end"], "row", f"invalid CSV: {error}")
            continue
        if position["long"]:
            yield _bad(start, position["end"], "row", f"line is longer than {MAX_LINE_BYTES} bytes")
            continue
        if not record or all(cell.strip() == "" for cell in record):
            continue
        raw = ",".join(record)[:RAW_MAX_CHARS]
        if columns is None:
            columns = _header_columns(record)
            missing = [name for name in _REQUIRED if name not in columns]
            if missing:
                reason = f"the header must name {', '.join(_REQUIRED)}; missing {', '.join(missing)}"
                yield _bad(start, position["end"], "header", reason, raw)
                return
            yield HistoryRow(start, position["end"], None, None, [], raw, tuple(columns))
            continue
        if len(record) > len(columns):
            reason = f"has {len(record)} fields, the header has {len(columns)}"
            yield _bad(start, position["end"], "row", reason, raw)
            continue
        values = {name: cell for name, cell in zip(columns, record, strict=False) if cell.strip() != ""}
        yield _row(start, position["end"], values, raw, event_types, now)
