"""Catalog ingestion: rows in, every row accounted for, changed items encoded, stored and made recommendable.

:func:`ingest_rows` is the use case with its I/O injected (the item store, an encode function); the S3 and
SQS edges live in :mod:`embrec.app.service`. Counts always add up: ``total == accepted + unchanged +
rejected``, where *accepted* rows are new, changed or deleted items, *unchanged* rows match the stored content
hash and encoder and are skipped (no encoding, no write), and *rejected* rows carry their line number and
reasons.

Every stored item records the encoder of its vector and the row that wrote it (``"<file id>:<line>"``). So a
new encoder re-encodes an unchanged row, a row that finds its own source stored was written by an earlier
attempt at this file that died before publishing its delta (it goes into this attempt's delta: every item
written under a claim reaches a delta), and a row that finds an earlier line of its own file stored is a
duplicate of that row, also when the two sit in different invocations' chunks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import unquote_plus

import numpy as np

from embrec.aws.store import ItemStore
from embrec.domain.catalog import FieldError, Item, ResumePoint, RowResult, content_hash, item_text
from embrec.domain.model import ItemState, StoredItem
from embrec.engine.index import IndexDelta
from embrec.errors import InvalidInputError

__all__ = [
    "CatalogObject",
    "IngestCounts",
    "IngestDelivery",
    "IngestOutcome",
    "index_metadata",
    "ingest_rows",
    "parse_ingest_message",
]

# Rows per encode call (and per write). The encoder sorts each call's texts by length before its own
# sub-batches, so a bigger call pads less: 2,000 MovieLens rows took +25-34% over one encoder call at 256,
# +7-22% at 512 and -1-+12% at 1,024 (same process, BENCHMARKS.md "Ingest"). 1,024 rows are ~1.5 MB of
# vectors; a Lambda invocation takes at most ROWS_PER_INVOCATION (20k) rows anyway.
ENCODE_BATCH = 1024


@dataclass
class IngestCounts:
    total: int = 0
    accepted: int = 0
    unchanged: int = 0
    rejected: int = 0
    deleted: int = 0
    encoded: int = 0

    def add(self, other: IngestCounts) -> IngestCounts:
        return IngestCounts(**{name: getattr(self, name) + getattr(other, name) for name in asdict(self)})

    def adds_up(self) -> bool:
        return self.total == self.accepted + self.unchanged + self.rejected


@dataclass
class IngestOutcome:
    counts: IngestCounts
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    delta: IndexDelta | None = None
    rows: int = 0  # rows consumed from the file in this call
    finished: bool = True  # False: rows are left; a continuation resumes after the last consumed one
    resume: ResumePoint | None = None  # just past the last consumed row, when the reader can resume there


@dataclass(frozen=True)
class CatalogObject:
    """One version of one uploaded catalog file, and where a continuation resumes.

    ``start_row`` rows were consumed by the chunks before this one; a JSON Lines file resumes at byte
    ``resume_offset`` after ``resume_line`` lines (a ranged GET), other formats skip ``start_row`` rows.
    """

    bucket: str
    key: str
    etag: str
    start_row: int = 0
    chunk: int = 0
    counts: dict[str, int] | None = None  # totals of the chunks before this one
    resume_offset: int = 0
    resume_line: int = 0

    @property
    def file_id(self) -> str:
        """A short id of this version of this file, recorded with every item one of its rows writes."""
        name = f"{self.bucket}/{self.key}#{self.etag.strip(chr(34))}"
        return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    @property
    def resume(self) -> ResumePoint:
        return ResumePoint(self.resume_offset, self.resume_line)

    def to_message(self) -> str:
        return json.dumps({"embrec_continuation": asdict(self)})


@dataclass(frozen=True)
class IngestDelivery:
    """One SQS delivery to the ingest function: the body, and what the handler knows around it.

    ``receipt_handle`` lets the use case shorten the message's visibility (a retry soon, not in 30 minutes);
    ``receive_count`` is SQS's ``ApproximateReceiveCount``; ``should_stop`` is the time budget (True once
    the invocation should wrap up and hand the rest of a file to a continuation).
    """

    body: str
    receipt_handle: str = ""
    receive_count: int = 1
    should_stop: Callable[[], bool] = field(default=lambda: False, compare=False)


def parse_ingest_message(body: str) -> list[CatalogObject]:
    """The catalog objects an SQS message names: an S3 notification, our continuation, or nothing.

    S3 URL-encodes keys in notifications (spaces as ``+``); they are decoded here. ``s3:TestEvent`` (sent
    when the notification is configured) names nothing and is acknowledged.
    """
    try:
        message = json.loads(body)
    except ValueError:
        raise InvalidInputError("message", "SQS message body is not JSON") from None
    if not isinstance(message, dict):
        raise InvalidInputError("message", "SQS message body is not a JSON object")
    if message.get("Event") == "s3:TestEvent":
        return []
    if "embrec_continuation" in message:
        try:
            return [CatalogObject(**message["embrec_continuation"])]
        except TypeError:
            raise InvalidInputError("message", "malformed continuation") from None
    records = message.get("Records")
    if not isinstance(records, list):
        raise InvalidInputError("message", "neither an S3 event notification nor a continuation")
    objects = []
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            objects.append(
                CatalogObject(
                    bucket=s3["bucket"]["name"],
                    key=unquote_plus(s3["object"]["key"]),
                    etag=str(s3["object"].get("eTag") or s3["object"].get("etag") or ""),
                )
            )
        except (KeyError, TypeError):
            raise InvalidInputError("message", "malformed S3 event record") from None
    return objects


def index_metadata(item: Item) -> dict[str, Any]:
    """The part of an item the index keeps for filtering and for responses."""
    return {
        "title": item.title,
        "category": item.category,
        "tags": list(item.tags),
        "price": item.price,
        "available": item.available,
        "created_at": item.created_at,
    }


def _rejection(row: RowResult) -> dict[str, Any]:
    return {"line": row.line, "errors": [error.to_dict() for error in row.errors], "raw": row.raw}


def _duplicate(row: RowResult, item: Item, state: ItemState) -> RowResult:
    """The row repeats an item_id an earlier row of the same file wrote (in an earlier chunk)."""
    reason = f"duplicate item_id {item.item_id!r} (first at line {state.source.rpartition(':')[2]})"
    return replace(row, item=None, errors=[FieldError("item_id", reason)])


def ingest_rows(
    rows: Iterable[RowResult],
    items: ItemStore,
    encode: Callable[[Sequence[str]], np.ndarray],
    *,
    encoder_id: str,
    source_id: str = "",
    max_rows: int | None = None,
    batch_size: int | None = None,
    clock: Callable[[], float] = time.time,
    should_stop: Callable[[], bool] = lambda: False,
) -> IngestOutcome:
    """Validate, skip unchanged, encode changed, upsert; returns the counts, rejections and the index delta.

    Rows are processed in batches of ``batch_size`` (default ``ENCODE_BATCH``): one ``states_for`` read, one
    encode call and one batch write per batch. The write of a batch runs in a background thread while the
    next batch is read and encoded (one write in flight at most; in AWS it is network wait), and every write
    has finished before this returns; a failed write raises here. It stops after ``max_rows`` rows, or when
    ``should_stop`` (the caller's time budget, asked between batches) says so: then the outcome is
    ``finished=False`` with ``rows`` and ``resume`` set so a continuation can go on from there.
    ``source_id`` (the file's id) turns on the per-row source record (see the module docstring).
    """
    batch_size = batch_size or ENCODE_BATCH
    counts = IngestCounts()
    rejected: list[dict[str, Any]] = []
    delta_ids: list[str] = []
    delta_vectors: list[np.ndarray] = []
    delta_meta: list[dict[str, Any]] = []
    delta_images: list[tuple[float, ...] | None] = []  # fused into the index's layout when applied
    deletes: list[str] = []
    consumed = 0
    resume: ResumePoint | None = None
    batch: list[RowResult] = []
    finished = True
    writes: list[Future[int]] = []

    def reject(row: RowResult) -> None:
        counts.rejected += 1
        rejected.append(_rejection(row))

    def add_to_delta(item: Item, vector: np.ndarray) -> None:
        delta_ids.append(item.item_id)
        delta_vectors.append(vector)
        delta_meta.append(index_metadata(item))
        delta_images.append(item.image_embedding)

    def flush(writer: ThreadPoolExecutor) -> None:
        good = [row for row in batch if row.item is not None]
        states = items.states_for(row.item.item_id for row in good if row.item is not None)
        changed: list[tuple[Item, str, str]] = []  # item, content hash, source
        rewritten: list[tuple[Item, str, str]] = []  # written by an earlier attempt at this row: delta owed
        for row in good:
            assert row.item is not None
            item, digest = row.item, content_hash(row.item)
            source = f"{source_id}:{row.line}" if source_id else ""
            state = states.get(item.item_id)
            if state is None:
                changed.append((item, digest, source))
            elif source and state.source.startswith(f"{source_id}:") and state.source != source:
                reject(_duplicate(row, item, state))
            elif state.content_hash != digest or (not item.deleted and state.encoder_id != encoder_id):
                changed.append((item, digest, source))
            elif source and state.source == source:
                rewritten.append((item, digest, source))
            else:
                counts.unchanged += 1
        stored = items.batch_get(item.item_id for item, _, _ in rewritten) if rewritten else {}
        republished = 0
        for entry in rewritten:
            item = entry[0]
            found = stored.get(item.item_id)
            if not item.deleted and (found is None or found.vector is None):  # gone meanwhile: write it again
                changed.append(entry)
                continue
            republished += 1
            counts.deleted += item.deleted
            if item.deleted:
                deletes.append(item.item_id)
            else:
                assert found is not None and found.vector is not None
                add_to_delta(item, found.vector)
        live = [(item, digest, source) for item, digest, source in changed if not item.deleted]
        vectors = encode([item_text(item) for item, _, _ in live]) if live else np.zeros((0, 0), np.float32)
        now = clock()
        records = []
        for item, digest, source in changed:
            if item.deleted:
                records.append(StoredItem(item.item_id, item.to_dict(), digest, None, now, source=source))
                deletes.append(item.item_id)
        for (item, digest, source), vector in zip(live, vectors, strict=True):
            records.append(StoredItem(item.item_id, item.to_dict(), digest, vector, now, encoder_id, source))
            add_to_delta(item, vector)
        if writes:
            writes.pop().result()  # one write in flight: raises that write's error, if any
        writes.append(writer.submit(items.upsert, records))
        counts.accepted += len(changed) + republished
        counts.deleted += sum(item.deleted for item, _, _ in changed)
        counts.encoded += len(live)
        batch.clear()

    iterator = iter(rows)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embrec-ingest-write") as writer:
        for row in iterator:
            if max_rows is not None and consumed >= max_rows:
                finished = False  # this row is left for the continuation (it resumes before it)
                break
            consumed += 1
            counts.total += 1
            resume = None if row.end is None else ResumePoint(row.end, row.line)
            if row.item is None:
                reject(row)
                continue
            batch.append(row)
            if len(batch) >= batch_size:
                flush(writer)
                if should_stop():
                    finished = next(iterator, None) is None
                    break
        if batch:
            flush(writer)
        if writes:
            writes.pop().result()
    delta = None
    if delta_ids or deletes:
        # The readers reject a repeated item_id within a file, so no id is both upserted and deleted here.
        dim = delta_vectors[0].shape[0] if delta_vectors else 0
        delta = IndexDelta(
            item_ids=tuple(delta_ids),
            vectors=np.stack(delta_vectors) if delta_vectors else np.zeros((0, dim), np.float32),
            metadata=tuple(delta_meta),
            deletes=tuple(deletes),
            encoder_id=encoder_id,
            images=tuple(delta_images),
        )
    return IngestOutcome(counts, rejected, delta, consumed, finished, resume)
